"""``GenericMultiModalDataModule``: folders of GeoTIFFs per modality -> standardised multi-modal batches.

The parameter names are the ones TerraTorch users already write (``modalities``, ``*_data_root``,
``*_label_data_root``, ``*_split``, ``image_grep``, ``label_grep``, ``no_data_replace``, ``no_label_replace``,
``means``/``stds``, ``dataset_bands``/``output_bands``, ``*_transform`` ...), so a TerraMind config's
``data.init_args`` works after changing its ``class_path``. Differences, all on purpose:

* ``no_data_replace`` is applied **after** standardisation (0 = the modality mean); TerraTorch replaces in
  raw units, where 0 dB of S1 is strong backscatter (+2.4 sigma), not "missing".
* ``means``/``stds`` default to the TerraMind pretraining statistics of :mod:`terramind_ft.modalities`.
* Problems are found in ``setup()`` / :meth:`check` from raster headers and reported in full (missing,
  ambiguous, unreadable files, band counts, sizes, CRS/transform), never by dropping samples or shrinking the
  batch size.
* Transforms use our own small schema (TerraTorch's albumentations entries are mapped); predict never crops or
  resizes, so predictions stay on the input pixel grid.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import lightning as L
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from terramind_ft.data.bands import (  # noqa: F401  (TIME_LAYOUTS: part of this module's interface)
    TIME_LAYOUTS, apply_constant_scale, apply_linear_to_db, apply_time_steps, build_predict_specs, build_specs,
    canonical_band, described_band_problem, lookup,
)
from terramind_ft.data.dataset import ModalitySpec, ModalityBatchSampler, MultiModalDataset
from terramind_ft.data.files import (
    SPLITS, DataNotice, Grep, SampleRecord, class_folder_names, discover, normalise_roots, parse_grep, parse_target,
)
from terramind_ft.data.raster import RasterHeader, cached_header, read_text_label, same_georeference
from terramind_ft.data.transforms import Compose, build_transform
from terramind_ft.data.value_scale import check_value_scale
from terramind_ft.errors import ConfigError, DataError, RasterMismatchError, check_known_keys
from terramind_ft.io import plain_hyperparameters
from terramind_ft.modalities import find_modality

log = logging.getLogger(__name__)

Task = Literal["segmentation", "classification", "regression"]
KEY = "data.init_args"
MAX_LISTED = 10
# Splits whose labels a stage needs.
TEST_SET_KEYS = ("data_root", "label_data_root", "split")
STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}


@dataclass
class CheckReport:
    """What :meth:`GenericMultiModalDataModule.check` found: samples per split and the raster size(s)."""

    samples: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # split -> distinct (H, W)
    files_checked: int = 0

    def __str__(self) -> str:
        lines = [f"{split}: {n} samples, raster size(s) {', '.join(f'{h}x{w}' for h, w in self.sizes.get(split, []))}"
                 for split, n in self.samples.items()]
        return "\n".join(lines + [f"{self.files_checked} files checked"])


@dataclass
class LabelScan:
    """What :meth:`GenericMultiModalDataModule.scan_labels` found in one split's label rasters."""

    split: str
    samples: int = 0
    valid_pixels: int = 0  # pixels that are not the ignore index
    problems: list[str] = field(default_factory=list)  # one line per label file with values out of range

    def __str__(self) -> str:
        return (f"{self.split}: {self.samples} labels, {self.valid_pixels:,} valid pixels"
                + (f", {len(self.problems)} with classes out of range" if self.problems else ""))


class GenericMultiModalDataModule(L.LightningDataModule):
    """Multi-modal segmentation / classification / regression data from folders of GeoTIFFs.

    Args:
        modalities: modality names in order (catalogue names or aliases: S2L1C, S2L2A, S1GRD, S1RTC, RGB, DEM,
            ...). They are the keys of ``batch["image"]``. The first one drives discovery without split files.
        task: ``segmentation`` (label rasters -> ``mask`` int64), ``classification`` (a ``prefix,class`` csv
            or one text file per sample -> ``label`` int64) or ``regression`` (label rasters -> float ``mask``;
            a csv -> float ``label``).
        batch_size: samples per batch, for every split. Never changed behind your back.
        num_workers: DataLoader worker processes.
        train_data_root / val_data_root / test_data_root / predict_data_root: ``{modality: folder}`` or one
            folder shared by all modalities.
        data_root: the data root of every split that gives none of its own (TerraTorch's fallback); use split
            files then, or train, val and test read the same samples.
        train_label_data_root / val_label_data_root / test_label_data_root: folder of label rasters (or text
            files), or a csv ``prefix,class`` for classification/regression.
        label_data_root: the label root of every split that gives none of its own.
        train_split / val_split / test_split / predict_split: txt (one prefix per line) or csv (prefix or
            file name in the first column; Sen1Floods11 csv rows ``X_S1Hand.tif,X_LabelHand.tif`` work).
        time_steps: per modality, the dates one file holds as bands (bands-as-time), e.g. ``{S2L2A: 3}`` for
            3 dates x 6 bands = 18 bands: the modality is then read as ``[C, T, H, W]`` (TerraTorch's
            ``[B, C, T, H, W]`` in a batch). dataset_bands / output_bands / means / stds name the bands of one date;
            nodata and transforms apply to every date alike (one random draw).
        time_layout: how those bands are ordered in the file, required with time_steps (no default: TerraTorch
            once mixed the two up): ``time_major`` = all bands of date 1, then all bands of date 2, ... (T C);
            ``band_major`` = band 1 at every date, then band 2 at every date, ... (C T).
        test_sets: several named test sets, ``{name: {data_root, label_data_root, split}}``; a key left out takes
            the ``test_*`` value (``{holdout: {}, bolivia: {split: bolivia.txt}}``). ``test`` then runs one loader per
            set, in this order, and logs ``test/<name>/<metric>`` (the task's ``test_dataloaders_names`` may name
            them instead, TerraTorch's way, but must then list the same names).
        image_grep: file-name glob per modality (or one for all), e.g. ``{S2L1C: "*_S2Hand.tif"}``.
        label_grep: file-name glob of the label files.
        allow_substring_file_names: also accept ``<prefix>*<suffix>`` names when ``<prefix><suffix>`` is absent.
        dataset_bands: per modality, the band names the files hold, in file order (default: the catalogue's).
            An integer stands for a band without a name (TerraTorch's placeholder): it is read only if output_bands
            names it, and then needs means/stds.
        output_bands: per modality, the bands to feed the model (a subset of dataset_bands, any order).
        predict_dataset_bands: per modality, the bands the predict files hold when they differ from the training
            files' (e.g. every S2 band in new scenes, six of them in the chips): the model's bands (output_bands)
            are taken from them, by name.
        predict_output_bands: TerraTorch's companion key: the bands taken from the predict files; they must be the
            model's (output_bands), in the same order.
        constant_scale: per modality, a factor the file values are multiplied by before standardisation (e.g.
            10000 for reflectances stored as 0..1, to reach the digital numbers of the pretraining statistics); means
            and stds are in the scaled units.
        linear_to_db: modalities whose files hold linear backscatter (power, e.g. Planetary Computer's
            Sentinel-1 RTC): read as ``10 * log10(value)``, the dB of TerraMind's S1 statistics; values <= 0 are
            nodata.
        means / stds: per modality, per output band (or per dataset band); default: TerraMind pretraining
            statistics. Keys of modalities not in ``modalities`` are ignored.
        no_data_replace: value that NaN and declared-nodata pixels get **after** standardisation (0 = mean).
            ``null`` keeps NaN (only for models that handle it).
        no_label_replace: value of label nodata / NaN pixels; also the ignore index of loss and metrics.
        reduce_zero_label: labels are 1-based with 0 = nodata: subtract 1, 0 -> ignore index.
        nodata_to_ignore: also set the label to the ignore index where any input modality is nodata.
        train_transform / val_transform / test_transform: joint augmentations (see
            :mod:`terramind_ft.data.transforms`); predict never applies any.
        num_classes / class_names: for the task, metrics and plots.
        rgb_modality / rgb_indices: what :meth:`plot` shows as RGB (default: the first modality, its RED,
            GREEN, BLUE bands when known).
        allow_missing_modalities: samples may lack modalities; batches then group samples with the same set.
        sample_num_modalities: draw this many of the available modalities per batch (modality dropout).
        drop_last: drop the last incomplete train batch.
        pin_memory / persistent_workers: DataLoader options.
        check_files: in ``setup()``, read every raster header (and its last block) to check band counts, sizes
            and georeference before training. Turn off only for huge, already-checked datasets.
        class_folders: classification labels from the folders: each data root holds one folder per class
            (``<root>/<class name>/<sample files>``, torchvision's ImageFolder layout); the class indices follow the
            sorted folder names (class_names, if given, must list them so). No label root is needed.
    """

    def __init__(
        self,
        modalities: list[str],
        task: Task = "segmentation",
        batch_size: int = 8,
        num_workers: int = 0,
        train_data_root: str | dict[str, str] | None = None,
        val_data_root: str | dict[str, str] | None = None,
        test_data_root: str | dict[str, str] | None = None,
        predict_data_root: str | dict[str, str] | None = None,
        data_root: str | dict[str, str] | None = None,
        train_label_data_root: str | None = None,
        val_label_data_root: str | None = None,
        test_label_data_root: str | None = None,
        label_data_root: str | None = None,
        train_split: str | None = None,
        val_split: str | None = None,
        test_split: str | None = None,
        predict_split: str | None = None,
        test_sets: dict[str, dict[str, Any]] | None = None,
        time_steps: dict[str, int] | None = None,
        time_layout: Literal["time_major", "band_major"] | None = None,
        image_grep: str | dict[str, str] = "*",
        label_grep: str = "*",
        allow_substring_file_names: bool = True,
        dataset_bands: dict[str, list[str | int]] | None = None,
        output_bands: dict[str, list[str | int]] | None = None,
        predict_dataset_bands: dict[str, list[str | int]] | None = None,
        predict_output_bands: dict[str, list[str | int]] | None = None,
        means: dict[str, list[float]] | None = None,
        stds: dict[str, list[float]] | None = None,
        constant_scale: dict[str, float] | None = None,
        linear_to_db: list[str] | None = None,
        no_data_replace: float | None = 0.0,
        no_label_replace: int | None = -1,
        reduce_zero_label: bool = False,
        nodata_to_ignore: bool = False,
        train_transform: list[str | dict[str, Any]] | None = None,
        val_transform: list[str | dict[str, Any]] | None = None,
        test_transform: list[str | dict[str, Any]] | None = None,
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        rgb_modality: str | None = None,
        rgb_indices: list[int] | None = None,
        allow_missing_modalities: bool = False,
        sample_num_modalities: int | None = None,
        drop_last: bool = True,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        check_files: bool = True,
        class_folders: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters(logger=False)
        plain_hyperparameters(self)  # paths as strings: checkpoints load with weights_only=True
        if task not in ("segmentation", "classification", "regression"):
            raise ConfigError(f"task must be segmentation, classification or regression, got {task!r}",
                              key=f"{KEY}.task")
        if not modalities or isinstance(modalities, str):
            raise ConfigError("give a list of modality names, e.g. [S2L1C, S1GRD]", key=f"{KEY}.modalities")
        if "mask" in modalities or "label" in modalities:
            raise ConfigError("'mask' and 'label' are batch keys, not modality names; give the label folder as "
                              "*_label_data_root", key=f"{KEY}.modalities")
        if len(set(modalities)) != len(modalities):
            raise ConfigError(f"duplicate modality names in {modalities}", key=f"{KEY}.modalities")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}", key=f"{KEY}.batch_size")
        if sample_num_modalities is not None and not 1 <= sample_num_modalities <= len(modalities):
            raise ConfigError(f"sample_num_modalities must be in [1, {len(modalities)}], got {sample_num_modalities}",
                              key=f"{KEY}.sample_num_modalities")

        self.task = task
        self.modalities = list(modalities)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.no_data_replace = no_data_replace
        self.no_label_replace = no_label_replace
        self.reduce_zero_label = reduce_zero_label
        self.nodata_to_ignore = nodata_to_ignore
        self.allow_substring_file_names = allow_substring_file_names
        self.allow_missing_modalities = allow_missing_modalities
        self.sample_num_modalities = sample_num_modalities
        self.drop_last = drop_last
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.check_files = check_files
        if class_folders and task != "classification":
            raise ConfigError(f"class_folders: true gives one label per sample, for classification; the {task} "
                              "task reads label rasters (*_label_data_root)", key=f"{KEY}.class_folders")
        self.class_folders = class_folders
        self._given_class_names = list(class_names) if class_names else None
        if no_data_replace is None:
            warnings.warn(f"{KEY}.no_data_replace: null leaves NaN in the batches; most models turn NaN into a NaN "
                          "loss", DataNotice, stacklevel=2)

        # Classes.
        if class_names is not None and num_classes is not None and len(class_names) != num_classes:
            raise ConfigError(f"{len(class_names)} class_names for num_classes={num_classes}", key=f"{KEY}.class_names")
        self.num_classes = num_classes if num_classes is not None else (len(class_names) if class_names else None)
        self.class_names = list(class_names) if class_names else (
            [str(i) for i in range(self.num_classes)] if self.num_classes else None)

        # Files.
        train_data_root, val_data_root, test_data_root, predict_data_root = (
            root if root is not None else data_root
            for root in (train_data_root, val_data_root, test_data_root, predict_data_root))
        train_label_data_root, val_label_data_root, test_label_data_root = (
            root if root is not None else label_data_root
            for root in (train_label_data_root, val_label_data_root, test_label_data_root))
        data_roots = {"train": train_data_root, "val": val_data_root, "test": test_data_root,
                      "predict": predict_data_root}
        self.roots = {split: normalise_roots(root, self.modalities, key=f"{KEY}.{split}_data_root",
                                             allow_missing=allow_missing_modalities)
                      for split, root in data_roots.items()}
        self.label_roots = {"train": train_label_data_root, "val": val_label_data_root, "test": test_label_data_root}
        self.split_files = {"train": train_split, "val": val_split, "test": test_split, "predict": predict_split}
        self.test_sets = self._add_test_sets(test_sets, test_data_root, test_label_data_root, test_split)
        self.image_greps = self._parse_image_greps(image_grep)
        self.label_grep = parse_grep(label_grep, key=f"{KEY}.label_grep", what="the label")

        # Bands and standardisation.
        self.specs = build_specs(self.modalities, dataset_bands or {}, output_bands or {}, means, stds)
        apply_constant_scale(self.specs, self.modalities, constant_scale or {})
        apply_linear_to_db(self.specs, self.modalities, linear_to_db or [])
        apply_time_steps(self.specs, self.modalities, time_steps or {}, time_layout)
        self.predict_specs = build_predict_specs(self.specs, self.modalities, predict_dataset_bands or {},
                                                 predict_output_bands or {}, time_layout)
        self.bands = {m: list(s.bands) if s.bands else None for m, s in self.specs.items()}
        self.means = {m: list(s.mean) for m, s in self.specs.items()}
        self.stds = {m: list(s.std) for m, s in self.specs.items()}

        # Transforms: built now so that config errors surface at construction.
        self.transforms = {
            "train": build_transform(train_transform, key=f"{KEY}.train_transform"),
            "val": build_transform(val_transform, key=f"{KEY}.val_transform"),
            "test": build_transform(test_transform, key=f"{KEY}.test_transform"),
            "predict": Compose([]),  # never change the pixel grid of predictions
        }
        for split in self.test_sets.values():
            self.transforms[split] = self.transforms["test"]

        # Plotting.
        self.rgb_modality = rgb_modality or self.modalities[0]
        if self.rgb_modality not in self.modalities:
            raise ConfigError(f"rgb_modality {self.rgb_modality!r} is not one of {self.modalities}",
                              key=f"{KEY}.rgb_modality")
        self.rgb_indices = list(rgb_indices) if rgb_indices is not None else self._default_rgb_indices()
        n_rgb_bands = self.specs[self.rgb_modality].num_bands
        if any(not 0 <= i < n_rgb_bands for i in self.rgb_indices):
            raise ConfigError(f"rgb_indices {self.rgb_indices} out of range for {self.rgb_modality} with "
                              f"{n_rgb_bands} bands", key=f"{KEY}.rgb_indices")

        self._records: dict[str, list[SampleRecord]] = {}
        self._checked: dict[str, CheckReport] = {}
        self._label_scans: dict[str, LabelScan] = {}  # labels are read once per split (check and the data check)
        # Predict yields file references and the task streams each scene from disk (terramind_ft.inference.scene),
        # so that no predict raster is read whole. On when set, or when the attached task asks for it (tiled
        # inference); see streaming_predict.
        self.stream_predict = False
        self.datasets: dict[str, MultiModalDataset] = {}
        # split -> the modalities on another scale than their statistics (terramind_ft.data.value_scale)
        self.value_scale_problems: dict[str, list[str]] = {}

    # ------------------------------------------------------------------------------------------ config

    def _add_test_sets(self, test_sets: dict[str, dict[str, Any]] | None, data_root: Any, label_root: str | None,
                       split_file: str | None) -> dict[str, str]:
        """Register each named test set as a split ``test:<name>``; returns {name: split}."""
        if not test_sets:
            return {}
        if not isinstance(test_sets, dict):
            raise ConfigError("test_sets maps a name to {data_root, label_data_root, split}", key=f"{KEY}.test_sets")
        out = {}
        for name, spec in test_sets.items():
            key = f"{KEY}.test_sets.{name}"
            if not isinstance(name, str) or not name or "/" in name:
                raise ConfigError(f"a test set name is a word without '/', got {name!r}", key=key)
            spec = dict(spec or {})
            check_known_keys(spec, TEST_SET_KEYS, key, "A test set")
            split = f"test:{name}"
            self.roots[split] = normalise_roots(spec.get("data_root", data_root), self.modalities,
                                                key=f"{key}.data_root", allow_missing=self.allow_missing_modalities)
            if self.roots[split] is None:
                raise ConfigError("no data_root, and no test_data_root to take it from", key=f"{key}.data_root")
            self.label_roots[split] = spec.get("label_data_root", label_root)
            self.split_files[split] = spec.get("split", split_file)
            out[name] = split
        return out

    @property
    def test_loader_names(self) -> list[str] | None:
        """The names of the test loaders when there are several (``test_sets``), else None."""
        return list(self.test_sets) or None

    def _test_splits(self) -> list[str]:
        return list(self.test_sets.values()) or ["test"]

    @property
    def streaming_predict(self) -> bool:
        task = self.trainer.lightning_module if self.trainer is not None else None
        return self.stream_predict or bool(getattr(task, "streams_predict", False))

    @property
    def ignore_index(self) -> int | None:
        """The label value that loss and metrics ignore (= ``no_label_replace``)."""
        return self.no_label_replace

    def _parse_image_greps(self, image_grep: str | dict[str, str]) -> dict[str, Grep]:
        if isinstance(image_grep, str):
            return {m: parse_grep(image_grep, key=f"{KEY}.image_grep", what=f"modality {m!r}") for m in self.modalities}
        missing = [m for m in self.modalities if m not in image_grep]
        if missing:
            raise ConfigError(f"no grep for modalities {missing}; give one per modality or a single string",
                              key=f"{KEY}.image_grep")
        return {m: parse_grep(image_grep[m], key=f"{KEY}.image_grep.{m}", what=f"modality {m!r}")
                for m in self.modalities}

    def split_specs(self, split: str) -> dict[str, ModalitySpec]:
        """How the files of ``split`` are read: the predict files may hold other bands (predict_dataset_bands)."""
        return self.predict_specs if split == "predict" else self.specs

    def _default_rgb_indices(self) -> list[int]:
        bands = [canonical_band(b) for b in (self.specs[self.rgb_modality].bands or ())]
        if all(c in bands for c in ("RED", "GREEN", "BLUE")):
            return [bands.index("RED"), bands.index("GREEN"), bands.index("BLUE")]
        n = self.specs[self.rgb_modality].num_bands
        return [0, 1, 2] if n >= 3 else [0]

    # --------------------------------------------------------------------------------------- discovery

    def records(self, split: str) -> list[SampleRecord]:
        """The samples of ``split`` (discovered once). Raises when files are missing or ambiguous."""
        if split not in self._records:
            roots = self.roots[split]
            if roots is None:
                raise ConfigError(f"no {split} data configured", key=f"{KEY}.{split}_data_root")
            label_root = self.label_roots.get(split)
            if split != "predict" and label_root is None and not self.class_folders:
                raise ConfigError(f"the {self.task} task needs labels for the {split} split: set "
                                  f"{split}_label_data_root", key=f"{KEY}.{split}_label_data_root")
            if (split in ("val", "test") and self.split_files.get(split) is None
                    and self.split_files.get("train") is None and self.roots.get("train") == roots):
                warnings.warn(f"{split} reads the same folders as train and neither has a split file: the model "
                              f"is evaluated on its training data. Set {KEY}.train_split and {KEY}.{split}_split.",
                              DataNotice, stacklevel=2)
            self._records[split] = discover(
                split, modalities=self.modalities, roots=roots, image_greps=self.image_greps,
                label_root=label_root, label_grep=self.label_grep,  # the label grep also reads split entries
                split_file=self.split_files.get(split), task=self.task if label_root else None,
                class_names=self._given_class_names if self.class_folders else self.class_names,
                allow_substring_file_names=self.allow_substring_file_names,
                allow_missing_modalities=self.allow_missing_modalities, key_prefix=KEY,
                class_folders=self.class_folders and split != "predict",
            )
            if self.class_folders and split != "predict":
                self._class_folder_names(split)
        return self._records[split]

    def _class_folder_names(self, split: str) -> None:
        """The class folders of ``split`` (those of its first modality's root) name the classes when class_names
        does not, and must not outnumber num_classes."""
        root = self.roots[split][self.modalities[0]]
        names = class_folder_names(root)
        if self.num_classes is not None and len(names) > self.num_classes:
            raise ConfigError(f"{split}: {root} holds {len(names)} class folders ({', '.join(names)}), more than "
                              f"num_classes={self.num_classes}", key=f"{KEY}.num_classes")
        if self._given_class_names is None and (self.num_classes is None or self.num_classes == len(names)):
            self.class_names = names

    def configured_splits(self) -> list[str]:
        splits = []
        for s in SPLITS:
            splits += self._test_splits() if s == "test" else [s]
        return [s for s in splits if self.roots.get(s) is not None]

    def check(self, splits: Sequence[str] | None = None) -> CheckReport:
        """Check every configured split (or ``splits``) from raster headers; raise on the first bad split.

        Each entry must resolve to one file per modality and a label; band counts must match the modality (or
        ``dataset_bands``); modalities and label share height, width, CRS and transform; every file opens and
        its last block decodes; crops fit the rasters; class labels are known. Errors list every offender.
        """
        report = CheckReport()
        for split in splits or self.configured_splits():
            result = self._check_split(split)
            report.samples[split] = result.samples[split]
            report.sizes[split] = result.sizes[split]
            report.files_checked += result.files_checked
        return report

    def scan_labels(self, split: str) -> LabelScan:
        """Read every label raster of ``split`` as the dataset does (nodata, ``reduce_zero_label``): count the valid
        pixels and list the files whose classes lie outside ``num_classes`` (found at their first batch otherwise).
        Classification labels are checked from the headers by :meth:`check`; they are not scanned here."""
        if split not in self._label_scans:
            self._label_scans[split] = self._scan_labels(split)
        return self._label_scans[split]

    def _scan_labels(self, split: str) -> LabelScan:
        scan = LabelScan(split)
        if self.task == "classification" or split == "predict":
            return scan
        dataset = self.make_dataset(split, raw=True)
        ignore = -1 if self.no_label_replace is None else self.no_label_replace
        for record in dataset.records:
            if not record.label_file:
                continue
            scan.samples += 1
            try:
                label, _ = dataset._read_label(record, None)
            except DataError as exc:
                scan.problems.append(str(exc))
                continue
            if self.task == "regression":
                scan.valid_pixels += int(torch.isfinite(label).sum())
            else:
                scan.valid_pixels += int((label != ignore).sum())
        return scan

    def _warn_empty_labels(self, split: str) -> None:
        """A validation or test split without one valid label pixel gives NaN metrics: say so before training."""
        scan = self.scan_labels(split)
        if scan.problems:
            raise DataError(f"{split} split: {len(scan.problems)} label files hold classes outside "
                            f"[0, {(self.num_classes or 0) - 1}]:\n  " + _listing(scan.problems))
        if scan.samples and scan.valid_pixels == 0:
            warnings.warn(f"the {split} split has no valid label pixel ({scan.samples} labels, all ignore_index "
                          f"{self.no_label_replace}): its metrics are NaN and it cannot choose the best checkpoint; "
                          f"check {KEY}.{split}_label_data_root and no_label_replace", DataNotice, stacklevel=2)

    def _check_split(self, split: str) -> CheckReport:
        if split in self._checked:
            return self._checked[split]
        records = self.records(split)
        unreadable: list[str] = []
        mismatched: list[str] = []
        bad_labels: list[str] = []
        sizes: set[tuple[int, int]] = set()
        files = 0
        for record in tqdm(records, desc=f"checking {split} rasters", unit="sample", disable=len(records) < 200,
                           leave=False):
            headers: dict[str, RasterHeader] = {}
            for m, path in record.files.items():
                files += 1
                try:
                    headers[m] = cached_header(path, m, verify_last_block=True)
                except DataError as exc:
                    unreadable.append(str(exc))
                    continue
                spec = self.split_specs(split)[m]
                count = headers[m].count
                # the key that says which bands these files hold
                option = ("predict_dataset_bands" if split == "predict"
                          and lookup(self.hparams.predict_dataset_bands, m) else "dataset_bands")
                if spec.expected_bands is not None and count != spec.expected_bands:
                    source = f"{option}.{m}" if lookup(self.hparams[option], m) else (
                        f"the {m} catalogue entry" if find_modality(m) else f"means.{m}")
                    mismatched.append(f"{path} (modality {m!r}) has {count} bands, expected {spec.expected_bands} "
                                      f"from {source}; set {KEY}.{option}.{m} to the bands the files hold")
                elif spec.band_indices is not None and max(spec.band_indices) >= count:
                    mismatched.append(f"{path} (modality {m!r}) has {count} bands; output_bands.{m} needs band "
                                      f"{max(spec.band_indices) + 1}")
                else:
                    problem = described_band_problem(path, m, headers[m].descriptions, spec,
                                                     lookup(self.hparams[option], m), option)
                    if problem:
                        mismatched.append(problem)
            label_header = None
            target = record.target
            if record.label_file and record.target is None:
                files += 1
                if record.label_file.lower().endswith(".txt"):
                    try:
                        target = parse_target(read_text_label(record.label_file), task=self.task,
                                              class_names=self.class_names, where=record.label_file,
                                              key=f"{KEY}.{split}_label_data_root")
                    except DataError as exc:
                        bad_labels.append(str(exc))
                else:
                    try:
                        label_header = cached_header(record.label_file, "label", verify_last_block=True)
                    except DataError as exc:
                        unreadable.append(str(exc))
                    if label_header is not None and label_header.count != 1 and self.task != "classification":
                        mismatched.append(f"label {record.label_file} has {label_header.count} bands, expected 1")
            if target is not None and self.task == "classification" and self.num_classes is not None:
                if not 0 <= int(target) < self.num_classes:
                    bad_labels.append(f"sample {record.prefix!r}: class {target} outside "
                                      f"[0, {self.num_classes - 1}] in {record.label_file}")
            if not (split == "predict" and self.streaming_predict):  # streaming warps other grids onto the first
                mismatched.extend(self._compare_grids(record, headers, label_header))
            if headers:
                first = next(iter(headers.values()))
                sizes.add((first.height, first.width))
        if unreadable:
            raise DataError(f"{split} split: {len(unreadable)} files cannot be read:\n  " + _listing(unreadable))
        if bad_labels:
            raise DataError(f"{split} split: {len(bad_labels)} bad class labels (num_classes={self.num_classes}, "
                            f"class_names={self.class_names}):\n  " + _listing(bad_labels))
        if mismatched:
            raise RasterMismatchError(f"{split} split: {len(mismatched)} problems in the rasters:\n  "
                                      + _listing(mismatched))
        transform = self.transforms[split]
        for h, w in sorted(sizes):
            transform.check_input(h, w, key=f"{KEY}.{split}_transform")
        if split == "train" and self.drop_last and len(records) < self.batch_size:
            raise ConfigError(f"the train split has {len(records)} samples, fewer than batch_size={self.batch_size}, "
                              "and drop_last: true would leave no batch; lower batch_size or set drop_last: false",
                              key=f"{KEY}.batch_size")
        out_sizes = {transform.output_size(h, w) for h, w in sizes}
        if len(out_sizes) > 1 and self.batch_size > 1:
            listed = ", ".join(f"{h}x{w}" for h, w in sorted(out_sizes))
            fix = ("predict never crops: use batch_size: 1, or tiled inference for scenes" if split == "predict"
                   else f"add a crop or resize to {KEY}.{split}_transform, or use batch_size: 1")
            raise RasterMismatchError(f"{split} split: samples have different sizes ({listed}) and cannot be "
                                      f"stacked into batches of {self.batch_size}; {fix}")
        report = CheckReport({split: len(records)}, {split: sorted(sizes)}, files)
        self._checked[split] = report
        if split in ("val", "test"):
            self._warn_empty_labels(split)
        return report

    @staticmethod
    def _compare_grids(record: SampleRecord, headers: dict[str, RasterHeader],
                       label: RasterHeader | None) -> list[str]:
        items = list(headers.items()) + ([("label", label)] if label is not None else [])
        if len(items) < 2:
            return []
        (ref_name, ref), problems = items[0], []
        for name, h in items[1:]:
            what = f"modality {name!r}" if name != "label" else "the label"
            if (h.height, h.width) != (ref.height, ref.width):
                problems.append(f"sample {record.prefix!r}: {h.path} ({what}) is {h.height}x{h.width} but "
                                f"{ref.path} (modality {ref_name!r}) is {ref.height}x{ref.width}")
            elif h.georeferenced != ref.georeferenced:  # one without a CRS: the grid check cannot run
                plain, geo = (h, ref) if not h.georeferenced else (ref, h)
                problems.append(f"sample {record.prefix!r}: {plain.path} has no CRS / geotransform while {geo.path} "
                                f"is in {geo.crs}: their pixel grids cannot be compared. Give the file its "
                                "georeference (e.g. gdal_edit.py -a_srs / -a_ullr) or remove it from all of them")
            elif h.georeferenced and ref.georeferenced and not same_georeference(h, ref):
                detail = (f"CRS {h.crs} vs {ref.crs}" if h.crs != ref.crs
                          else f"transform {h.transform} vs {ref.transform}")
                problems.append(f"sample {record.prefix!r}: {h.path} ({what}) and {ref.path} (modality "
                                f"{ref_name!r}) are not on the same pixel grid: {detail}")
        return problems

    # ------------------------------------------------------------------------------------------ datasets

    def make_dataset(self, split: str, *, raw: bool = False, transform: Compose | None = None) -> MultiModalDataset:
        """A dataset for ``split``; ``raw=True`` returns raw file units with NaN at nodata and no transform."""
        records = self.records(split)
        if self.check_files:
            self._check_split(split)
        return MultiModalDataset(
            records, self.split_specs(split), task=self.task if split != "predict" else None, split=split,
            transform=Compose([]) if raw else (transform if transform is not None else self.transforms[split]),
            no_data_replace=self.no_data_replace, no_label_replace=self.no_label_replace,
            reduce_zero_label=self.reduce_zero_label, num_classes=self.num_classes,
            nodata_to_ignore=self.nodata_to_ignore, class_names=self.class_names, raw=raw,
        )

    def setup(self, stage: str | None = None) -> None:
        splits = STAGE_SPLITS.get(stage or "", None) or tuple(self.configured_splits())
        splits = [t for s in splits for t in (self._test_splits() if s == "test" else [s])]
        for split in splits:
            if split in self.datasets:
                continue
            if self.roots.get(split) is None:
                if split == "val":
                    warnings.warn(f"no validation data ({KEY}.val_data_root is not set): no val metrics",
                                  DataNotice, stacklevel=2)
                    continue
                raise ConfigError(f"stage {stage!r} needs {split} data", key=f"{KEY}.{split}_data_root")
            self.datasets[split] = self.make_dataset(split)
            log.info("%s: %d samples", split, len(self.datasets[split]))
            if split != "val" or "train" not in splits:  # val comes from the train data's source
                self.value_scale_problems[split] = check_value_scale(self.datasets[split], split)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self.datasets:
            self.setup({"train": "fit", "val": "validate", "test": "test", "predict": "predict"}[split.split(":")[0]])
        dataset = self.datasets[split]
        drop_last = self.drop_last and split == "train"
        common = dict(num_workers=self.num_workers, pin_memory=self.pin_memory,
                      persistent_workers=self.persistent_workers)
        if self.allow_missing_modalities or self.sample_num_modalities is not None:
            from torch.utils.data import RandomSampler, SequentialSampler

            sampler = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
            batch_sampler = ModalityBatchSampler(sampler, self.batch_size, drop_last, dataset.modality_sets(),
                                                 self.sample_num_modalities if split == "train" else None)
            return DataLoader(dataset, batch_sampler=batch_sampler, **common)
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, drop_last=drop_last, **common)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        if self.roots.get("val") is None:
            return []
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        if self.test_sets:
            return [self._loader(split, shuffle=False) for split in self.test_sets.values()]
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        if self.streaming_predict:
            from terramind_ft.inference.scene import scene_dataloader

            series = [m for m, spec in self.predict_specs.items() if spec.time_steps > 1]
            if series:
                raise ConfigError(f"tiled (streamed) predict of time series ({', '.join(series)}) is not supported "
                                  "yet; predict chip-sized files without tiled_inference_parameters",
                                  key="model.init_args.tiled_inference_parameters")

            if "predict" not in self.datasets:
                self.setup("predict")  # discovery and file checks, as for the in-memory path
            return scene_dataloader(self)
        return self._loader("predict", shuffle=False)

    # ------------------------------------------------------------------------------------------ plots

    def plot(self, sample: dict, prediction: Any = None, *, index: int = 0, title: str | None = None):
        """A matplotlib Figure of one sample (or item ``index`` of a batch): RGB, other modalities, mask,
        prediction."""
        from terramind_ft.data.plot import plot_sample

        return plot_sample(sample, prediction, modalities=self.modalities, means=self.means, stds=self.stds,
                           rgb_modality=self.rgb_modality, rgb_indices=self.rgb_indices,
                           class_names=self.class_names, ignore_index=self.ignore_index, index=index, title=title)

    def save_plot(self, sample: dict, path: str, prediction: Any = None, *, index: int = 0,
                  title: str | None = None) -> str:
        """Write :meth:`plot` to a PNG at ``path`` (atomically) and return the path."""
        from terramind_ft.data.plot import save_figure

        return save_figure(self.plot(sample, prediction, index=index, title=title), path)


def _listing(lines: list[str]) -> str:
    shown = lines[:MAX_LISTED]
    more = f"\n  ... and {len(lines) - MAX_LISTED} more" if len(lines) > MAX_LISTED else ""
    return "\n  ".join(shown) + more


__all__ = ["CheckReport", "GenericMultiModalDataModule"]
