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
