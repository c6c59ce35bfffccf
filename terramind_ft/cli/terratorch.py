"""TerraTorch configs: its class paths and task arguments mapped to ours, each with a one-line notice.

Known ``terratorch.*`` class paths become ours (:data:`TERRATORCH_CLASS_MAP`); task arguments we do not have are
reported, never silently dropped; a ``terratorch.*`` class with no counterpart is a config error naming it.
"""

from __future__ import annotations

import copy
from typing import Any

from terramind_ft.cli.config import importable, walk
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
    "terratorch.callbacks.StateDictAwareModelCheckpoint": "lightning.pytorch.callbacks.ModelCheckpoint",
    "StateDictAwareModelCheckpoint": "lightning.pytorch.callbacks.ModelCheckpoint",
}
# TerraTorch's auxiliary-head record: here a plain {name, decoder, decoder_args} mapping (its init_args).
AUX_HEAD_CLASSES = ("terratorch.models.model.AuxiliaryHead", "terratorch.models.AuxiliaryHead")
# TerraTorch task arguments with no counterpart here, and why they can go.
TERRATORCH_DROPPED_TASK_ARGS = {
    "path_to_record_metrics": "test always writes metrics.json next to the checkpoint",
    "output_most_probable": "use output_on_inference",
}


def translate_terratorch(config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Map TerraTorch class paths and arguments in a config dict to ours. Returns (new config, notices)."""
    config = copy.deepcopy(config)
    notices: list[str] = []
    for key, node in list(walk(config)):
        path = node.get("class_path")
        if not isinstance(path, str):
            continue
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
    model_init = (config.get("model") or {}).get("init_args") or {}
    for arg, why in TERRATORCH_DROPPED_TASK_ARGS.items():
        if arg in model_init:
            model_init.pop(arg)
            notices.append(f"model.init_args.{arg} dropped: {why}")
    return config, notices
