"""Checks that ``fit``/``validate``/``test``/``predict`` run before anything is written or trained, the same
that ``terramind-ft check`` runs: every ``monitor`` is a metric the task logs (else ``fit`` would find out after
an epoch and save no checkpoint), and the ``--ckpt_path`` weights fit the model the config builds."""

from __future__ import annotations

from typing import Any

from terramind_ft.errors import ConfigError, did_you_mean


def monitor_keys(cli: Any) -> list[tuple[str, str]]:
    """(config key, monitored metric) of every checkpoint, early-stopping and LR-scheduler monitor."""
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    out = []
    for i, cb in enumerate(cli.trainer.callbacks):
        if isinstance(cb, (ModelCheckpoint, EarlyStopping)) and getattr(cb, "monitor", None):
            out.append((f"trainer.callbacks[{i}] ({getattr(cb, 'display_name', type(cb).__name__)}).monitor", cb.monitor))
    config = cli.config[cli.config.subcommand] if cli.config.get("subcommand") else cli.config
    sched = config.get("lr_scheduler")
    if sched is not None and sched.get("init_args") is not None and sched.init_args.get("monitor"):
        out.append(("lr_scheduler.init_args.monitor", sched.init_args.monitor))
    hp = getattr(cli.model, "hparams", {})
    if hp.get("scheduler"):
        monitor = (hp.get("scheduler_hparams") or {}).get("monitor", "val/loss")
        out.append(("model.init_args.scheduler_hparams.monitor", monitor))
    return out


def check_monitors(cli: Any) -> list[str]:
    """Raise :class:`ConfigError` (with its config key and "did you mean") for a monitor no metric produces;
    returns one line per checked monitor."""
    model = cli.model
    if not hasattr(model, "metric_names"):
        return []
    logged = set()
    for stage in ("train", "val", "test"):
        for name in model.metric_names(stage):
            logged.add(name)
            if stage == "train":
                logged |= {f"{name}_step", f"{name}_epoch"}
    checked = []
    for key, monitor in monitor_keys(cli):
        if monitor not in logged:
            raise ConfigError(f"monitors {monitor!r}, which no metric produces.{did_you_mean(monitor, logged)} "
                              f"Logged validation metrics: {', '.join(model.metric_names('val'))}", key=key)
        checked.append(f"{key} = {monitor}")
    return checked


def check_band_agreement(cli: Any) -> list[str]:
    """Raise :class:`ConfigError` when the data module gives a pixel modality other bands, or the same bands in
    another order, than the backbone's input takes (``output_bands`` vs ``backbone_bands``): each channel would
    be read as another band, silently. Returns one line per modality checked."""
    from terramind_ft.errors import ModalityError
    from terramind_ft.models.terramind.encoder import TerraMindEncoder
    from terramind_ft.modalities import find_modality

    data_bands = getattr(cli.datamodule, "bands", None) or {}
    model = cli.model
    backbone = model.backbone if hasattr(model, "backbone") else getattr(getattr(model, "model", None), "encoder",
                                                                           None)
    encoder = next((m for m in backbone.modules() if isinstance(m, TerraMindEncoder)), None) if backbone else None
    if encoder is None:
        return []
    checked = []
    for modality, bands in data_bands.items():
        entry = find_modality(modality)
        if not bands or entry is None or any(entry.band_index(str(b)) is None for b in bands):
            continue  # no names to compare (a modality of one's own, TerraTorch's integer placeholders)
        try:
            expected = encoder.input_bands(modality)
            name = encoder.spec_for(modality).name
        except ModalityError:
            continue  # not an input of this backbone
        if expected is None:
            continue
        given = [entry.bands[entry.band_index(str(b))] for b in bands]
        wanted = [entry.bands[entry.band_index(str(b))] for b in expected]
        if given != wanted:
            what = "the same bands in another order" if sorted(given) == sorted(wanted) else "other bands"
            raise ConfigError(
                f"the data gives {modality} the bands {list(bands)} (data.init_args.output_bands.{modality}; default "
                f"the catalogue order) but the backbone's {name} input takes {list(expected)} (default: the "
                f"pretrained order), {what}: each channel would be read as another band. Give backbone_bands.{name} "
                "and output_bands the same list", key=f"model.init_args.model_args.backbone_bands.{name}")
        checked.append(f"{modality}: {len(bands)} bands, the backbone's order")
    return checked
