"""``TorchGeoDataModule``: any torchgeo ``NonGeoDataset`` (EuroSAT, BigEarthNet, ...) as TerraMind input.

::

    data:
      class_path: TorchGeoDataModule
      init_args:
        dataset: EuroSAT                  # a torchgeo.datasets name or a dotted class path
        dataset_args: {root: data/eurosat}
        modality: S2L1C                   # the TerraMind modality its images are
        task: classification              # or segmentation (samples with a "mask")

The dataset's band names (its ``bands`` / ``all_band_names``) are matched to the modality's bands in the catalogue
(``B8A`` or ``NIR_NARROW`` alike), which gives the pretraining statistics the images are standardised with
(``means`` / ``stds`` override them). When the dataset holds exactly the modality's bands, in any order, they are
put in the catalogue's order, so the backbone takes them as they are; a subset keeps the dataset's order and the
backbone needs ``backbone_bands: {<modality>: [the same names]}`` (:attr:`bands` lists them). Each stage reads
the dataset with its ``split`` argument (``splits`` maps stages to the dataset's split names). Samples become
``{"image": {modality: x}, "label" | "mask", "filename": {modality: "<dataset>/<split>/<index>"}}``, so fit, test,
predict (classification), ``terramind-ft few-shot`` and ``embed_split`` work on them; the GeoParquet form of
``embed`` needs georeferenced files and refuses. Needs ``pip install 'terramind-ft[torchgeo]'``.
"""

from __future__ import annotations

import importlib
from typing import Any, Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from terramind_ft.errors import ConfigError, did_you_mean
from terramind_ft.modalities import find_modality

KEY = "data.init_args"
DEFAULT_SPLITS = {"train": "train", "val": "val", "test": "test", "predict": "test"}


def _dataset_class(name: str) -> type:
    try:
        datasets = importlib.import_module("torchgeo.datasets")
    except ImportError:
        raise ConfigError("TorchGeoDataModule needs torchgeo: pip install 'terramind-ft[torchgeo]'",
                          key=f"{KEY}.dataset") from None
    if "." in name:
        module, _, cls = name.rpartition(".")
        try:
            return getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError) as err:
            raise ConfigError(f"cannot import {name!r}: {err}", key=f"{KEY}.dataset") from None
    if not hasattr(datasets, name):
        names = [n for n in dir(datasets) if n[:1].isupper()]
        raise ConfigError(f"torchgeo.datasets has no {name!r}.{did_you_mean(name, names)}", key=f"{KEY}.dataset")
    return getattr(datasets, name)


class _Samples(Dataset):
    """A torchgeo dataset's samples in terramind-ft's batch layout, standardised."""

    def __init__(self, dataset: Any, name: str, split: str, modality: str, order: list[int], mean: torch.Tensor,
                 std: torch.Tensor, task: str):
        self.dataset, self.name, self.split, self.modality = dataset, name, split, modality
        self.order, self.mean, self.std, self.task = order, mean, std, task

    def __len__(self) -> int:
        return len(self.dataset)

    def sample_name(self, index: int) -> str:
        """The sample's ``filename`` entry: ``<dataset>/<split>/<index>`` (torchgeo samples have no file)."""
        return f"{self.name}/{self.split}/{index:06d}"

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.dataset[index]
        x = sample["image"].float()[self.order]
        x = ((x - self.mean[:, None, None]) / self.std[:, None, None]).nan_to_num(0.0)
        out: dict[str, Any] = {"image": {self.modality: x},
                               "filename": {self.modality: self.sample_name(index)},
                               "nodata": torch.zeros(x.shape[-2:], dtype=torch.bool)}
        if self.task == "classification" and "label" in sample:
            label = torch.as_tensor(sample["label"])
            if label.ndim:  # multi-label datasets give a vector: not a single class
                raise ConfigError(f"{self.name} gives multi-label targets {list(label.shape)}; classification here "
                                  "takes one class per sample", key=f"{KEY}.task")
            out["label"] = label.long()
        elif self.task == "segmentation" and "mask" in sample:
            mask = torch.as_tensor(sample["mask"]).long()
            out["mask"] = mask[0] if mask.ndim == 3 else mask
        return out


class TorchGeoDataModule(L.LightningDataModule):
    """A torchgeo ``NonGeoDataset`` as TerraMind input (see the module doc).

    Args:
        dataset: a ``torchgeo.datasets`` class name (``EuroSAT``) or a dotted class path.
        modality: the TerraMind modality of the dataset's images (``S2L1C``, ``S2L2A``, ``RGB``, ...).
        dataset_args: arguments of the dataset class (``root``, ``bands``, ``download``, ...), for every split.
        task: classification (samples with a ``label``) or segmentation (with a ``mask``).
        splits: {stage: the dataset's split name} (default train/val/test, predict = test).
        split_arg: the name of the dataset's split argument (default ``split``).
        batch_size: samples per batch.
        num_workers: DataLoader workers.
        means / stds: per band, in the dataset's band order (default: the catalogue's pretraining statistics).
        class_names: default: the dataset's ``classes``.
    """

    def __init__(self, dataset: str, modality: str, dataset_args: dict[str, Any] | None = None,
                 task: Literal["classification", "segmentation"] = "classification",
                 splits: dict[str, str] | None = None, split_arg: str = "split", batch_size: int = 8,
                 num_workers: int = 0, means: list[float] | None = None, stds: list[float] | None = None,
                 class_names: list[str] | None = None):
        super().__init__()
        self.dataset_class = _dataset_class(dataset)
        self.name = self.dataset_class.__name__
        entry = find_modality(modality)
        if entry is None:
            raise ConfigError(f"{modality!r} is not a TerraMind modality name", key=f"{KEY}.modality")
        self.modality = entry.name
        self.modalities = [self.modality]
        self.dataset_args = dict(dataset_args or {})
        self.task = task
        self.splits = {**DEFAULT_SPLITS, **(splits or {})}
        self.split_arg = split_arg
        self.batch_size = batch_size
        self.num_workers = num_workers
        self._means, self._stds = means, stds
        self._class_names = class_names
        self.datasets: dict[str, _Samples] = {}
        self.bands: list[str] | None = None

    def _band_plan(self, ds: Any) -> tuple[list[int], torch.Tensor, torch.Tensor]:
        entry = find_modality(self.modality)
        names = list(getattr(ds, "bands", None) or getattr(ds, "all_band_names", None) or [])
        if not names:
            raise ConfigError(f"{self.name} does not name its bands (no bands / all_band_names attribute), so they "
                              "cannot be matched to the modality", key=f"{KEY}.dataset")
        index = [entry.band_index(str(b)) for b in names]
        unknown = [b for b, i in zip(names, index, strict=True) if i is None]
        if unknown and self._means is None:
            raise ConfigError(f"bands {unknown} of {self.name} are not {entry.name} bands ({', '.join(entry.bands)}); "
                              "choose another modality, select bands with dataset_args.bands, or give means/stds",
                              key=f"{KEY}.modality")
        if not unknown and sorted(index) == list(range(len(entry.bands))):  # all of them: the catalogue's order
            order = sorted(range(len(names)), key=lambda k: index[k])
        else:
            order = list(range(len(names)))
        self.bands = [entry.bands[index[k]] if index[k] is not None else str(names[k]) for k in order]
        if self._means is not None:
            if self._stds is None or len(self._means) != len(names) or len(self._stds) != len(names):
                raise ConfigError(f"give means and stds with one value per band of {self.name} ({len(names)})",
                                  key=f"{KEY}.means")
            mean = torch.tensor([self._means[k] for k in order], dtype=torch.float32)
            std = torch.tensor([self._stds[k] for k in order], dtype=torch.float32)
        else:
            mean = torch.tensor([entry.mean[index[k]] for k in order], dtype=torch.float32)
            std = torch.tensor([entry.std[index[k]] for k in order], dtype=torch.float32)
        return order, mean, std

    def make_dataset(self, split: str, transform: Any = None) -> _Samples:
        if split not in self.datasets:
            args = {**self.dataset_args, self.split_arg: self.splits[split]}
            try:
                ds = self.dataset_class(**args)
            except TypeError as err:
                raise ConfigError(f"{self.name} refuses these arguments {sorted(args)}: {err}",
                                  key=f"{KEY}.dataset_args") from None
            except Exception as err:  # torchgeo's DatasetNotFoundError and friends: say which dataset and where
                raise ConfigError(f"{self.name}({args}) could not be opened: {type(err).__name__}: {err}",
                                  key=f"{KEY}.dataset_args") from None
            order, mean, std = self._band_plan(ds)
            self.datasets[split] = _Samples(ds, self.name, self.splits[split], self.modality, order, mean, std,
                                            self.task)
        return self.datasets[split]

    @property
    def class_names(self) -> list[str] | None:
        if self._class_names is not None:
            return list(self._class_names)
        ds = next(iter(self.datasets.values()), None)
        classes = getattr(getattr(ds, "dataset", None), "classes", None)
        return [str(c) for c in classes] if classes else None

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(self.make_dataset(split), batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, drop_last=shuffle)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", False)
