"""TerraTorch configs: its class paths and task arguments mapped to ours, each with a one-line notice.

Known ``terratorch.*`` class paths become ours (:data:`TERRATORCH_CLASS_MAP`); task arguments we do not have are
reported, never silently dropped; a ``terratorch.*`` class with no counterpart is a config error naming it.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from terramind_ft.cli.config import command_line_options, importable, walk
from terramind_ft.errors import ConfigError

# TerraTorch / Lightning class paths -> ours (or None: dropped with a notice). Matched on the full path and on
# the bare class name.
TERRATORCH_CLASS_MAP: dict[str, str | None] = {
    "terratorch.datamodules.GenericMultiModalDataModule": "terramind_ft.data.datamodule.GenericMultiModalDataModule",
    "terratorch.datamodules.generic_multimodal_data_module.GenericMultiModalDataModule":
        "terramind_ft.data.datamodule.GenericMultiModalDataModule",
    "terratorch.tasks.SemanticSegmentationTask": "terramind_ft.tasks.SemanticSegmentationTask",
    "terratorch.tasks.ClassificationTask": "terramind_ft.tasks.ClassificationTask",
    "terratorch.tasks.PixelwiseRegressionTask": "terramind_ft.tasks.PixelwiseRegressionTask",
    "terratorch.tasks.EmbeddingGenerationTask": "terramind_ft.tasks.EmbeddingTask",
    "terratorch.callbacks.StateDictAwareModelCheckpoint": "lightning.pytorch.callbacks.ModelCheckpoint",
    "StateDictAwareModelCheckpoint": "lightning.pytorch.callbacks.ModelCheckpoint",
}
TERRATORCH_TASKS = {k for k, v in TERRATORCH_CLASS_MAP.items() if k.startswith("terratorch.tasks.")}
TERRATORCH_TRAINING_TASKS = TERRATORCH_TASKS - {"terratorch.tasks.EmbeddingGenerationTask"}
OUR_DATA_MODULE = "terramind_ft.data.datamodule.GenericMultiModalDataModule"
# GenericMultiModalDataModule keys of TerraTorch's with no counterpart here: accepted (and dropped, with a notice) when
# they hold the value that means what ours does; any other value is refused with the reason.
DATA_KEYS_AT_OUR_MEANING: dict[str, tuple[Any, str]] = {
    "concat_bands": (False, "TerraMind takes each modality by name; joining them into one tensor is for "
                            "single-modality backbones"),
    "shared_transforms": (True, "independent random transforms per modality would misalign the modalities"),
    "data_with_sample_dim": (False, "samples that carry their own sample dimension are not supported"),
    "sample_replace": (False, "sample_num_modalities draws modalities without replacement"),
    "channel_position": (-3, "files are read bands first (C, H, W), as GeoTIFFs store them"),
    "prefix": (None, "put the prefix in the split files' entries or in image_grep"),
}
# ... and those whose every value is fine here (a check that always runs, a switch of the same meaning).
DATA_KEYS_DROPPED = {
    "check_stackability": "sizes are always checked, from the raster headers",
    "ignore_split_file_extensions": "split entries are matched as sample prefixes or file names, extension or not",
}
# GenericNonGeoSegmentationDataModule (one modality, TerraTorch's burn-scars config) -> ours, key by key.
NONGEO_SEGMENTATION = ("terratorch.datamodules.GenericNonGeoSegmentationDataModule",
                       "terratorch.datamodules.generic_pixel_wise_data_module.GenericNonGeoSegmentationDataModule",
                       "GenericNonGeoSegmentationDataModule")
# ... and its pixelwise-regression sibling, which takes the same keys (minus num_classes).
NONGEO_REGRESSION = ("terratorch.datamodules.GenericNonGeoPixelwiseRegressionDataModule",
                     "terratorch.datamodules.generic_pixel_wise_data_module.GenericNonGeoPixelwiseRegressionDataModule",
                     "GenericNonGeoPixelwiseRegressionDataModule")
# ... and GenericNonGeoClassificationDataModule: one folder per class under each data root (ImageFolder).
NONGEO_CLASSIFICATION = ("terratorch.datamodules.GenericNonGeoClassificationDataModule",
                         "terratorch.datamodules.generic_scalar_label_data_module.GenericNonGeoClassificationDataModule",
                         "GenericNonGeoClassificationDataModule")
NONGEO_TASKS = {**dict.fromkeys(NONGEO_SEGMENTATION, "segmentation"), **dict.fromkeys(NONGEO_REGRESSION, "regression"),
                **dict.fromkeys(NONGEO_CLASSIFICATION, "classification")}
NONGEO_RENAMED = {"img_grep": "image_grep", "allow_substring_split_file": "allow_substring_file_names",
                  "skip_file_checks": None}
NONGEO_PER_MODALITY = ("dataset_bands", "output_bands", "means", "stds", "constant_scale", "predict_dataset_bands",
                       "predict_output_bands")
# MultiTemporalCropClassificationDataModule (TerraMind's official multi-temporal crop config) -> ours: the layout of
# the ibm-nasa-geospatial/multi-temporal-crop-classification dataset (3 dates x 6 HLS bands per file, date after
# date; labels 1..13 with 0 = no data), and the statistics TerraTorch's module standardises with (file units).
CROP_CLASSIFICATION = ("terratorch.datamodules.MultiTemporalCropClassificationDataModule",
                       "terratorch.datamodules.multi_temporal_crop_classification."
                       "MultiTemporalCropClassificationDataModule", "MultiTemporalCropClassificationDataModule")
CROP_BANDS = ("BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2")
CROP_MEANS = {"BLUE": 494.905781, "GREEN": 815.239594, "RED": 924.335066, "NIR_NARROW": 2968.881459,
              "SWIR_1": 2634.621962, "SWIR_2": 1739.579917}
CROP_STDS = {"BLUE": 284.925432, "GREEN": 357.84876, "RED": 575.566823, "NIR_NARROW": 896.601013,
             "SWIR_1": 951.900334, "SWIR_2": 921.407808}
CROP_DATES, CROP_CLASSES = 3, 13
# Sen1Floods11NonGeoDataModule (TerraTorch's S2-only Sen1Floods11 module) -> ours: the dataset's own layout
# (v1.1/data/flood_events/HandLabeled/{S2Hand,LabelHand}, v1.1/splits/flood_handlabeled/flood_<split>_data.txt)
# and the module's reflectance statistics (file values x 0.0001).
SEN1FLOODS11 = ("terratorch.datamodules.Sen1Floods11NonGeoDataModule",
                "terratorch.datamodules.sen1floods11.Sen1Floods11NonGeoDataModule", "Sen1Floods11NonGeoDataModule")
SEN1FLOODS11_MEANS = {
    "COASTAL_AEROSOL": 0.16450718, "BLUE": 0.1412956, "GREEN": 0.13795798, "RED": 0.12353792,
    "RED_EDGE_1": 0.1481099, "RED_EDGE_2": 0.23991728, "RED_EDGE_3": 0.28587557, "NIR_BROAD": 0.26345379,
    "NIR_NARROW": 0.30902815, "WATER_VAPOR": 0.04911151, "CIRRUS": 0.00652506, "SWIR_1": 0.2044958,
    "SWIR_2": 0.11912015}
SEN1FLOODS11_STDS = {
    "COASTAL_AEROSOL": 0.06977374, "BLUE": 0.07406382, "GREEN": 0.07370365, "RED": 0.08692279,
    "RED_EDGE_1": 0.07778555, "RED_EDGE_2": 0.09105416, "RED_EDGE_3": 0.10690993, "NIR_BROAD": 0.10096586,
    "NIR_NARROW": 0.11798815, "WATER_VAPOR": 0.03380113, "CIRRUS": 0.01463465, "SWIR_1": 0.09772074,
    "SWIR_2": 0.07659938}

TRANSFORM_ENTRY = re.compile(r"data\.init_args\.\w+_transform\[\d+\]$")
# TerraTorch's auxiliary-head record: here a plain {name, decoder, decoder_args} mapping (its init_args).
AUX_HEAD_CLASSES = ("terratorch.models.model.AuxiliaryHead", "terratorch.models.AuxiliaryHead")
# TerraTorch task arguments with no counterpart here, and why they can go.
TERRATORCH_DROPPED_TASK_ARGS = {
    "path_to_record_metrics": "test always writes metrics.json next to the checkpoint",
    "output_most_probable": "use output_on_inference",
}


def translate_terratorch(config: dict[str, Any], defaults: bool = True) -> tuple[dict[str, Any], list[str]]:
    """Map TerraTorch class paths and arguments in a config dict to ours. Returns (new config, notices).
    ``defaults``: give keys the config leaves out TerraTorch's default where ours differs (a config; not the
    hyper-parameters of a checkpoint, which do not say what a config around them set)."""
    config = copy.deepcopy(config)
    notices: list[str] = []
    model_path = (config.get("model") or {}).get("class_path") if isinstance(config.get("model"), dict) else None
    data_path = str((config.get("data") or {}).get("class_path") or "") if isinstance(config.get("data"), dict) else ""
    data = config.get("data")
    if isinstance(data, dict) and data.get("class_path") in NONGEO_TASKS:
        task, module = NONGEO_TASKS[data["class_path"]], str(data["class_path"]).rsplit(".", 1)[-1]
        notices.append(f"data.class_path: {data['class_path']} -> {OUR_DATA_MODULE} (one modality, named after "
                       "the backbone's" + ("; labels from the class folders" if task == "classification" else "") + ")")
        data["class_path"] = OUR_DATA_MODULE
        data["init_args"] = _nongeo_to_multimodal(dict(data.get("init_args") or {}), config, task, module)
    elif isinstance(data, dict) and data.get("class_path") in CROP_CLASSIFICATION:
        data["class_path"] = OUR_DATA_MODULE
        data["init_args"] = _crop_classification_to_multimodal(dict(data.get("init_args") or {}), config, notices)
    elif isinstance(data, dict) and data.get("class_path") in SEN1FLOODS11:
        data["class_path"] = OUR_DATA_MODULE
        data["init_args"] = _sen1floods11_to_multimodal(dict(data.get("init_args") or {}), config, notices)
    for key, node in list(walk(config)):
        path = node.get("class_path")
        if not isinstance(path, str):
            continue
        if TRANSFORM_ENTRY.match(key):
            continue  # the data module's transform builder maps these (terramind_ft.data.transforms)
        if path in AUX_HEAD_CLASSES:
            init = dict(node.get("init_args") or {})
            node.clear()
            node.update(init)
            continue
        target = TERRATORCH_CLASS_MAP.get(path)
        if target is None and path.startswith("terratorch."):
            target = TERRATORCH_CLASS_MAP.get(path.rsplit(".", 1)[-1])
        if target is not None:
            node["class_path"] = target
            notices.append(f"{key}.class_path: {path} -> {target}")
            if target.endswith("ModelCheckpoint"):
                init = node.get("init_args") or {}
                if init.pop("save_best_only", None) is not None:
                    notices.append(f"{key}.init_args.save_best_only dropped (ModelCheckpoint keeps save_top_k best)")
        elif path.rsplit(".", 1)[-1] == "RichProgressBar" and not importable("rich"):
            node["class_path"] = "lightning.pytorch.callbacks.TQDMProgressBar"
            node.pop("init_args", None)
            notices.append(f"{key}: RichProgressBar needs the 'rich' package, using TQDMProgressBar")
        elif path.startswith("terratorch."):
            raise ConfigError(f"{path} has no terramind-ft counterpart; supported TerraTorch classes: "
                              f"{', '.join(k for k in TERRATORCH_CLASS_MAP if '.' in k)}", key=f"{key}.class_path")
    data = config.get("data")
    if isinstance(data, dict) and str(data.get("class_path", "")).endswith("GenericMultiModalDataModule"):
        notices += _map_temporal(data.setdefault("init_args", {}), config)
        notices += _map_data_keys(data["init_args"], from_terratorch=data_path.startswith("terratorch."))
    model = config.get("model")
    model_init = (model or {}).get("init_args") or {}
    for arg, why in TERRATORCH_DROPPED_TASK_ARGS.items():
        if arg in model_init:
            model_init.pop(arg)
            notices.append(f"model.init_args.{arg} dropped: {why}")
    if (defaults and isinstance(model, dict) and model_path in TERRATORCH_TRAINING_TASKS
            and model_init.get("optimizer") is None and not config.get("optimizer")):
        # TerraTorch's task trains with Adam when neither it nor a top-level optimizer block names one; ours
        # defaults to AdamW: the same config must train the same way
        model.setdefault("init_args", model_init)["optimizer"] = "Adam"
        notices.append("model.init_args.optimizer: Adam (TerraTorch's default for its tasks; terramind-ft's own "
                       "default is AdamW)")
    return config, notices


def translate_terratorch_checkpoint(class_path: str, hyper_parameters: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(our task class, its init arguments) for the saved hyper-parameters of a checkpoint TerraTorch wrote
    (``hyper_parameters._class_path`` ``terratorch.tasks.<Task>``): the same mapping as its configs get. Its
    parameter names are ours, so the weights load as they are."""
    translated, _ = translate_terratorch({"model": {"class_path": class_path, "init_args": dict(hyper_parameters)}},
                                         defaults=False)
    init_args = translated["model"].get("init_args") or {}
    if init_args.get("optimizer") is None:
        # which optimizer trained it is not in the file (a top-level optimizer block, or TerraTorch's Adam):
        # the config's own setting stands
        init_args.pop("optimizer", None)
    return translated["model"]["class_path"], init_args


def _map_temporal(init: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """TerraTorch's ``expand_temporal_dimension: true`` (files of dates x bands) as ``time_steps``: the number of
    dates comes from ``backbone_temporal_n_timestamps``; the band order must be said (``time_layout``), since
    TerraTorch's own reshape once read it the other way round."""
    from terramind_ft.data.bands import TIME_LAYOUTS

    key = "data.init_args.expand_temporal_dimension"
    if "expand_temporal_dimension" not in init:
        return []
    if not init["expand_temporal_dimension"]:  # one date per sample: what we read anyway
        init.pop("expand_temporal_dimension")
        return [f"{key}: false is what terramind-ft does; dropped"]
    model_args = _model_args(config)
    dates = model_args.get("backbone_temporal_n_timestamps")
    if not isinstance(dates, int) or dates < 1:
        raise ConfigError("expand_temporal_dimension: true needs the number of dates: set model_args."
                          "backbone_temporal_n_timestamps (or give data.init_args.time_steps: {<modality>: <dates>})",
                          key=key)
    if init.get("time_layout") not in TIME_LAYOUTS:
        raise ConfigError("expand_temporal_dimension: true does not say how the bands of the dates are ordered in "
                          "the files; add data.init_args.time_layout: time_major (all bands of date 1, then of date "
                          "2, ...) or band_major (each band at every date, what TerraTorch's reshape assumes), "
                          "whichever your files hold", key=key)
    init.pop("expand_temporal_dimension")
    with_bands = list((init.get("dataset_bands") or {}).keys()) or list(init.get("modalities") or [])
    init["time_steps"] = {m: dates for m in with_bands}
    return [f"{key}: true -> time_steps {init['time_steps']}, time_layout {init['time_layout']}"]


def _map_data_keys(init: dict[str, Any], from_terratorch: bool) -> list[str]:
    """TerraTorch's GenericMultiModalDataModule keys onto ours: same meaning dropped with a notice, other values
    refused by name with the reason. ``from_terratorch``: the config named TerraTorch's data module."""
    notices = []
    for key, (ours, why) in DATA_KEYS_AT_OUR_MEANING.items():
        if key not in init:
            continue
        if init[key] != ours:
            raise ConfigError(f"{init[key]!r} is not supported: {why} (terramind-ft reads the data as "
                              f"{key}={ours!r})", key=f"data.init_args.{key}")
        init.pop(key)
        notices.append(f"data.init_args.{key}: {ours!r} is what terramind-ft does; dropped")
    for key, why in DATA_KEYS_DROPPED.items():
        if key in init:
            init.pop(key)
            notices.append(f"data.init_args.{key} dropped: {why}")
    if from_terratorch and init.get("no_data_replace") is not None:  # kept, but its meaning differs: say so
        notices.append(f"data.init_args.no_data_replace: {init['no_data_replace']!r} replaces nodata/NaN pixels "
                       "after standardisation here (0 = the modality mean); TerraTorch replaces in file units "
                       "before it (0 dB of S1 is +2.4 sigma), so pixels near nodata see other inputs than in "
                       "TerraTorch")
    if "skip_file_checks" in init:
        init["check_files"] = not bool(init.pop("skip_file_checks"))
        notices.append(f"data.init_args.skip_file_checks -> check_files: {init['check_files']}")
    if "image_modalities" in init:
        image_modalities = init.pop("image_modalities")
        if image_modalities is not None and list(image_modalities) != list(init.get("modalities") or []):
            raise ConfigError("non-image modalities are not supported: every modality is a raster here; list the "
                              "same names as modalities or remove the key", key="data.init_args.image_modalities")
    rgb = init.get("rgb_indices")
    if isinstance(rgb, dict):  # TerraTorch 1.1+: {modality: [indices]}
        if len(rgb) != 1:
            raise ConfigError("previews show one modality as RGB: give one {modality: [r, g, b]}",
                              key="data.init_args.rgb_indices")
        (modality, indices), = rgb.items()
        init["rgb_modality"], init["rgb_indices"] = modality, list(indices)
        notices.append(f"data.init_args.rgb_indices: {{{modality}: {list(indices)}}} -> rgb_modality {modality}, "
                       f"rgb_indices {list(indices)}")
    return notices


def _nongeo_to_multimodal(init: dict[str, Any], config: dict[str, Any], task: str = "segmentation",
                          module: str = "GenericNonGeoSegmentationDataModule") -> dict[str, Any]:
    """A single-modality GenericNonGeo{Segmentation,PixelwiseRegression,Classification}DataModule's arguments as
    ours: one modality, named after the backbone's only input (backbone_modalities); label files beside the images
    unless a label root is given, or (classification) the class folders."""
    modality = _single_backbone_modality(config, module)
    out: dict[str, Any] = {"modalities": [modality], "task": task}
    for key, value in init.items():
        if key in NONGEO_RENAMED:
            if key == "skip_file_checks":
                out["skip_file_checks"] = value  # mapped with the multimodal keys
            else:
                out[NONGEO_RENAMED[key]] = value
        elif key in NONGEO_PER_MODALITY and value is not None:
            out[key] = {modality: value}
        else:
            out[key] = value
    if task == "regression":  # TerraTorch keeps NaN targets (the loss skips them); our default would be -1
        out.setdefault("no_label_replace", None)
    if task == "classification":  # ImageFolder: the class is the sample's folder, there are no label files
        out["class_folders"] = True
        return out
    for split in ("train", "val", "test"):  # TerraTorch: no label root = the labels lie beside the images
        if out.get(f"{split}_data_root") is not None and out.get(f"{split}_label_data_root") is None:
            out[f"{split}_label_data_root"] = out[f"{split}_data_root"]
    return out


def _model_args(config: dict[str, Any]) -> dict[str, Any]:
    """The config's ``model.init_args.model_args`` (empty when it has none): what the data mapping reads."""
    return ((config.get("model") or {}).get("init_args") or {}).get("model_args") or {}


def _single_backbone_modality(config: dict[str, Any], data_module: str) -> str:
    """The backbone's only input (model_args.backbone_modalities): the modality of a one-modality data module."""
    model_args = _model_args(config)
    backbone_modalities = model_args.get("backbone_modalities") or (model_args.get("backbone_kwargs") or {}).get(
        "modalities")
    if not backbone_modalities or len(backbone_modalities) != 1:
        raise ConfigError(f"{data_module} holds one modality, and its name comes from the backbone's only input: "
                          f"model_args.backbone_modalities is {backbone_modalities!r}; give one name (e.g. [S2L2A]) "
                          "or use GenericMultiModalDataModule", key="data.class_path")
    return str(backbone_modalities[0])


def _dataset_module_basics(init: dict[str, Any], config: dict[str, Any], module: str, file_bands: list[str],
                           root_hint: str) -> tuple[str, str, list[str]]:
    """What the dataset-specific modules (crop classification, Sen1Floods11) share: their ``data_root`` (popped),
    the modality (the backbone's only input) and the ``bands`` taken from the files (popped); and the keys they
    take that we refuse (``use_metadata: true``, a ``predict_transform``)."""
    key = "data.init_args"
    root = init.pop("data_root", None)
    if not isinstance(root, str) or not root:
        raise ConfigError(f"{module} needs data_root: {root_hint}", key=f"{key}.data_root")
    modality = _single_backbone_modality(config, module)
    bands = list(init.pop("bands", None) or file_bands)
    unknown = [b for b in bands if b not in file_bands]
    if unknown:
        raise ConfigError(f"bands {unknown} are not in the dataset's files, which hold {file_bands}",
                          key=f"{key}.bands")
    if init.pop("use_metadata", False):
        raise ConfigError("use_metadata: true (dates and locations as extra inputs) is not supported; set "
                          "use_metadata: false", key=f"{key}.use_metadata")
    if init.pop("predict_transform", None) is not None:
        raise ConfigError("predict never augments here; remove predict_transform", key=f"{key}.predict_transform")
    return root, modality, bands


def _crop_classification_to_multimodal(init: dict[str, Any], config: dict[str, Any],
                                       notices: list[str]) -> dict[str, Any]:
    """MultiTemporalCropClassificationDataModule's arguments as ours, on the dataset's own layout:
    ``<data_root>/{training,validation}_chips/<id>_merged.tif`` (dates x bands, date after date) with
    ``<id>.mask.tif`` beside them, split files ``<data_root>/{training,validation}_data.txt``. As in TerraTorch,
    test and predict read the validation chips (the dataset has no test split); a ``--data.init_args.
    predict_data_root`` given on top predicts other files."""
    key = "data.init_args"
    root, modality, bands = _dataset_module_basics(
        init, config, "MultiTemporalCropClassificationDataModule", list(CROP_BANDS),
        "the folder holding training_chips/, validation_chips/ and training_data.txt / validation_data.txt")
    init.pop("metadata_file_name", None)  # read only with use_metadata
    if not init.pop("expand_temporal_dimension", True):
        raise ConfigError("expand_temporal_dimension: false reads the 18 bands of 3 dates as one image, of which "
                          "TerraTorch then keeps the first date's; set it true with model_args.backbone_use_temporal",
                          key=f"{key}.expand_temporal_dimension")
    model_args = _model_args(config)
    dates = model_args.get("backbone_temporal_n_timestamps") or CROP_DATES
    chips = {split: f"{root.rstrip('/')}/{folder}_chips" for split, folder in (("train", "training"),
                                                                                 ("val", "validation"))}
    splits = {split: f"{root.rstrip('/')}/{folder}_data.txt" for split, folder in (("train", "training"),
                                                                                   ("val", "validation"))}
    out: dict[str, Any] = {
        "modalities": [modality], "task": "segmentation", "num_classes": CROP_CLASSES,
        "image_grep": "*_merged.tif", "label_grep": "*.mask.tif",
        "time_steps": {modality: dates}, "time_layout": "time_major",
        "dataset_bands": {modality: list(CROP_BANDS)}, "output_bands": {modality: bands},
        "means": {modality: [CROP_MEANS[b] for b in bands]}, "stds": {modality: [CROP_STDS[b] for b in bands]},
        "no_data_replace": 0, "no_label_replace": -1, "reduce_zero_label": True,
    }
    for split, chip_split in (("train", "train"), ("val", "val"), ("test", "val")):
        out[f"{split}_data_root"] = out[f"{split}_label_data_root"] = chips[chip_split]
        out[f"{split}_split"] = splits[chip_split]
    # no split file: files given with --data.init_args.predict_data_root are predicted whatever their names
    out["predict_data_root"] = chips["val"]
    out.update(init)  # batch_size, num_workers, transforms, drop_last, no_data_replace, no_label_replace, ...
    notices.append(f"data.class_path: MultiTemporalCropClassificationDataModule -> {OUR_DATA_MODULE} ({modality}, "
                   f"{dates} dates x {len(bands)} HLS "
                   f"bands, date after date; {chips['train']} and {chips['val']}, the validation chips also for "
                   "test and predict, as in TerraTorch)")
    return out


def _sen1floods11_to_multimodal(init: dict[str, Any], config: dict[str, Any], notices: list[str]) -> dict[str, Any]:
    """Sen1Floods11NonGeoDataModule's arguments as ours, on the dataset's layout under ``data_root``: the S2 chips
    of ``v1.1/data/flood_events/HandLabeled/S2Hand`` with their ``LabelHand`` masks, split files
    ``v1.1/splits/flood_handlabeled/flood_{train,valid,test}_data.txt`` (or the dataset's own ``.csv``). As in
    TerraTorch, predict reads the test split; values x ``constant_scale`` (0.0001) are standardised with its
    reflectance statistics."""
    import os

    module = "Sen1Floods11NonGeoDataModule"
    root, modality, bands = _dataset_module_basics(
        init, config, module, list(SEN1FLOODS11_MEANS),
        "the folder holding v1.1/data/flood_events/HandLabeled and v1.1/splits/flood_handlabeled")
    hand = f"{root.rstrip('/')}/v1.1/data/flood_events/HandLabeled"
    split_dir = f"{root.rstrip('/')}/v1.1/splits/flood_handlabeled"

    def split_file(word: str) -> str:
        txt = f"{split_dir}/flood_{word}_data.txt"
        csv = txt[:-4] + ".csv"  # the dataset as published holds csv rows "<id>_S1Hand.tif,<id>_LabelHand.tif"
        return csv if not os.path.exists(txt) and os.path.exists(csv) else txt

    out: dict[str, Any] = {
        "modalities": [modality], "task": "segmentation", "num_classes": 2,
        "image_grep": "*_S2Hand.tif", "label_grep": "*_LabelHand.tif",
        "dataset_bands": {modality: list(SEN1FLOODS11_MEANS)}, "output_bands": {modality: bands},
        "constant_scale": {modality: init.pop("constant_scale", 0.0001)},
        "means": {modality: [SEN1FLOODS11_MEANS[b] for b in bands]},
        "stds": {modality: [SEN1FLOODS11_STDS[b] for b in bands]},
        "no_data_replace": 0, "no_label_replace": -1,
    }
    for split, word in (("train", "train"), ("val", "valid"), ("test", "test")):
        out[f"{split}_data_root"], out[f"{split}_label_data_root"] = f"{hand}/S2Hand", f"{hand}/LabelHand"
        out[f"{split}_split"] = split_file(word)
    out["predict_data_root"], out["predict_split"] = f"{hand}/S2Hand", split_file("test")
    out.update(init)  # batch_size, num_workers, transforms, drop_last, no_data_replace, no_label_replace
    notices.append(f"data.class_path: {module} -> {OUR_DATA_MODULE} ({modality}: {len(bands)} S2 bands x "
                   f"{out['constant_scale'][modality]}, TerraTorch's statistics; {hand}, the test split also for "
                   "predict, as in TerraTorch)")
    return out


# The data modules whose arguments translation rewrites into others (one data_root -> per-split folders, a band
# list -> per-modality dicts): a dotted override of theirs must be applied before translation, or it would set
# the old key after the new ones were derived from the file's value (and be silently ignored).
RESTRUCTURED_DATA_MODULES = tuple(NONGEO_TASKS) + CROP_CLASSIFICATION + SEN1FLOODS11
# model_args that translation reads to rewrite the data section (the modality name, the number of dates).
TRANSLATION_READS = ("model.init_args.model_args.",)


def with_command_line_overrides(raws: list[dict[str, Any]], args: list[str]) -> list[str]:
    """Apply to the raw TerraTorch configs ``raws`` (in place, the last one holding each section) the dotted
    overrides on ``args`` that their translation depends on; return ``args`` without the ones translation has
    now consumed (a restructured data module's ``--data.init_args.*``). Values are read as YAML, as on a
    command line."""
    import yaml

    def last_with(section: str) -> dict[str, Any] | None:
        for raw in reversed(raws):
            if isinstance(raw.get(section), dict):
                return raw
        return None

    data_owner = last_with("data")
    restructured = data_owner is not None and data_owner["data"].get("class_path") in RESTRUCTURED_DATA_MODULES
    from_terratorch = restructured or any(
        isinstance(path := node.get("class_path"), str) and path.startswith("terratorch.")
        for raw in raws for _, node in walk(raw))
    if not from_terratorch:
        return args
    consumed: set[int] = set()
    for option in command_line_options(args):
        if option.value is None:
            continue  # a switch, not an override
        if restructured and option.key.startswith("data.init_args."):
            _set_dotted(data_owner, option.key, yaml.safe_load(option.value))
            consumed.update(range(option.index, option.index + option.width))
        elif option.key.startswith(TRANSLATION_READS) and (model_owner := last_with("model")) is not None:
            _set_dotted(model_owner, option.key, yaml.safe_load(option.value))  # also stays on the command line
    return [arg for i, arg in enumerate(args) if i not in consumed]


def _set_dotted(config: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = config
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[last] = value
