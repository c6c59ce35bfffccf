"""``terramind-ft check --config X.yaml [overrides]``: build everything, check the data, run one batch.

Stops at the first real problem and reports it with its config key (``model.init_args.model_args.
decoder_channel: ... Did you mean 'decoder_channels'?``) instead of a page of jsonargparse union errors.
Steps: read + translate the config (TerraTorch class paths), check every key, instantiate model / data /
trainer, compare the bands the data gives each modality with those the backbone takes, check that every
``monitor`` key (checkpoint, early stopping, LR scheduler) is a metric the task logs, run the datamodule's checks
(file discovery, raster headers, band descriptions), compare each split's values with its statistics (0..1
reflectances against the pretraining statistics, ...: warnings), read every label (classes out of range, splits
without a valid label pixel), then one training batch (forward, loss, backward) and one validation batch
(metrics). Exit code 0 when all pass, 1 on a problem, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from typing import Any

import torch

from terramind_ft.errors import ConfigError, DataError, TerraMindFTError

STEPS = ("config", "bands", "monitors", "data", "values", "labels", "train batch", "val batch")


def _say(step: str, message: str) -> None:
    print(f"[{step}] {message}", flush=True)


def _batch_to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: _batch_to(v, device) for k, v in batch.items()}
    return batch


def run_batches(cli: Any) -> None:
    model, dm = cli.model, cli.datamodule
    target_key = getattr(model, "target_key", "mask")
    batch = next(iter(dm.train_dataloader()))
    shapes = ", ".join(f"{m} {list(x.shape)}" for m, x in batch["image"].items())
    model.train()
    t0 = time.perf_counter()
    output = model(batch["image"])
    target = model.target(batch)
    loss, parts = model.loss_fn(output, target)
    if not torch.isfinite(loss):
        raise TerraMindFTError(f"the first training batch gives loss {loss.item()} (inputs {shapes}); see the "
                               "data's no_data_replace and the model's lr / precision")
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    _say("train batch", f"inputs {shapes}, {target_key} {list(target.shape)} -> output {list(output.shape)}, "
         f"loss {loss.item():.4f} ({', '.join(parts)}), forward+backward {time.perf_counter() - t0:.1f}s")
    if no_grad:
        _say("train batch", f"note: {len(no_grad)} trainable parameters got no gradient (e.g. {no_grad[0]})")
    model.zero_grad(set_to_none=True)
    loaders = dm.val_dataloader() if hasattr(dm, "val_dataloader") else []
    if not loaders:
        _say("val batch", "no validation data configured: skipped (the best checkpoint needs it)")
        return
    model.eval()
    with torch.no_grad():
        batch = next(iter(loaders))
        output = model(batch["image"])
        metrics = model.make_metrics()
        metrics.update(model.predictions(output), model.target(batch))
        values = metrics.compute()
    names = [f"val/{k}" for k in values] + ["val/loss"] + [f"val/loss_{n}" for n in model.loss_fn.names
                                                            if len(model.loss_fn.names) > 1]
    missing = sorted(set(model.metric_names("val")) - set(names))
    if missing:
        raise TerraMindFTError(f"validation did not produce {missing}")
    shown = ", ".join(f"{k}={float(v):.3f}" for k, v in list(values.items())[:3])
    _say("val batch", f"{len(names)} metrics ({shown}, ...)")


def _check_values(dm: Any) -> int:
    """The ``[values]`` step: each split's values against its statistics; returns the number of warnings said."""
    from terramind_ft.data.value_scale import check_value_scale

    splits = [s for s in ("train", "test", "predict") if s in dm.configured_splits()]
    if not splits and "val" in dm.configured_splits():
        splits = ["val"]
    said = 0
    for split in splits:
        if split not in dm.value_scale_problems:
            dataset = dm.datasets[split] if split in dm.datasets else dm.make_dataset(split)  # an empty one is falsy
            dm.value_scale_problems[split] = check_value_scale(dataset, split)
        for problem in dm.value_scale_problems[split]:
            _say("values", f"warning: {problem}")
            said += 1
    if not said:
        _say("values", f"{', '.join(splits)}: values on the scale of their statistics")
    return said


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="terramind-ft check", usage="terramind-ft check --config X.yaml [--skip-data] [--KEY=VALUE ...]",
        description="Build everything a config describes, check its data and run one training and one validation "
                    "batch; stop at the first problem with its config key.",
        epilog="Overrides (--trainer.max_epochs=3, --model.init_args.lr=1e-4, ...) are the same as fit's. Exit codes: "
               "0 all checks passed, 1 a problem (printed with its step and config key), 2 bad usage.")
    parser.add_argument("-c", "--config", action="append", required=True, help="config file (repeatable)")
    parser.add_argument("--skip-data", action="store_true", help="only build the configuration")
    args, overrides = parser.parse_known_args(argv)
    cli_args = [a for c in args.config for a in ("--config", c)] + overrides

    from terramind_ft.data.value_scale import ValueScaleNotice

    with warnings.catch_warnings():
        # said once, in the [values] step, with the other splits' (instead of as a notice during setup)
        warnings.filterwarnings("ignore", category=ValueScaleNotice)
        return _check(args, cli_args)


def _check(args: argparse.Namespace, cli_args: list[str]) -> int:
    from terramind_ft.cli.app import build_cli
    from terramind_ft.cli.preflight import check_band_agreement, check_monitors

    step = "config"
    try:
        cli = build_cli(cli_args, run=False)
        _say("config", f"model {type(cli.model).__name__} ({sum(p.numel() for p in cli.model.parameters()):,} "
             f"parameters), data {type(cli.datamodule).__name__}, precision {cli.trainer.precision}, run folder "
             f"{cli.trainer.default_root_dir}")
        step = "bands"
        for line in check_band_agreement(cli):
            _say(step, line)
        step = "monitors"
        for line in check_monitors(cli):
            _say(step, line)
        if args.skip_data:
            _say("check", "passed (data skipped)")
            return 0
        step = "data"
        dm = cli.datamodule
        if getattr(cli.model, "predict_only", False):  # EmbeddingTask: the predict split and one predict batch
            dm.setup("predict")
            step = "predict batch"
            batch = next(iter(dm.predict_dataloader()))
            cli.model.eval()
            with torch.no_grad():
                features = cli.model(batch["image"])
            shapes = ", ".join(f"{m} {list(x.shape)}" for m, x in batch["image"].items())
            _say(step, f"inputs {shapes} -> {len(features)} layers")
            _say("check", "passed")
            return 0
        dm.setup("fit")
        if callable(getattr(dm, "check", None)):
            report = dm.check()
            for line in str(report).splitlines():
                _say(step, line)
        warnings_said = 0
        if hasattr(dm, "value_scale_problems"):
            step = "values"
            warnings_said += _check_values(dm)
        if callable(getattr(dm, "scan_labels", None)):
            step = "labels"
            for split in [s for s in ("train", "val", "test") if s in dm.configured_splits()]:
                scan = dm.scan_labels(split)
                if scan.problems:
                    raise DataError(f"{split} split: {len(scan.problems)} label files hold classes out of range:\n  "
                                    + "\n  ".join(scan.problems[:10]))
                _say(step, str(scan))
                if scan.samples and scan.valid_pixels == 0:
                    _say(step, f"warning: the {split} split has no valid label pixel: its metrics will be NaN")
        step = "train batch"
        run_batches(cli)
        if warnings_said:
            _say("check", f"passed, with {warnings_said} warning(s) above: read them before training")
            return 0
    except ConfigError as err:
        print(f"[{step}] FAILED: config error at {err}", flush=True)
        return 1
    except TerraMindFTError as err:
        print(f"[{step}] FAILED: {type(err).__name__}: {err}", flush=True)
        return 1
    _say("check", "passed")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
