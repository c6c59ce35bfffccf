"""Checkpoint files on the user's path: last.ckpt is the last epoch, files are whole or absent, a run folder
belongs to one run, and checkpoints from the Python API load with ``weights_only=True``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from cli_configs import TINY_MODEL_ARGS, sen1floods11_config, write
from terramind_ft.cli import main
from terramind_ft.cli.checkpoints import AtomicCheckpointIO
from terramind_ft.cli.run_folder import LOCK_FILE
from terramind_ft.errors import CheckpointError


def _ckpt(path: Path) -> dict:
    return torch.load(path, weights_only=True, map_location="cpu")


@pytest.fixture()
def config(tmp_path):
    return sen1floods11_config(tmp_path)


def test_last_is_the_last_epoch_even_when_the_best_does_not_improve(config, tmp_path):
    """lr 0: the monitored metric never improves after epoch 0. Lightning's save_last would then keep
    last.ckpt at epoch 0; a resume would silently go back two epochs."""
    config["trainer"]["max_epochs"] = 3
    config["model"]["init_args"]["lr"] = 0.0
    assert main(["fit", "--config", write(config, tmp_path / "c.yaml")]) == 0
    ckpts = tmp_path / "run" / "checkpoints"
    assert _ckpt(ckpts / "best.ckpt")["epoch"] == 0
    last = _ckpt(ckpts / "last.ckpt")
    assert last["epoch"] == 2 and last["global_step"] == 3 * 2
    assert sorted(p.name for p in ckpts.iterdir()) == ["best.ckpt", "last.ckpt"]  # no -v1 copies


def test_own_model_checkpoint_still_gets_a_last_checkpoint(config, tmp_path, caplog):
    config["trainer"]["callbacks"] = [{"class_path": "ModelCheckpoint", "init_args": {
        "monitor": "val/loss", "filename": "lowest_loss", "save_top_k": 1}}]
    assert main(["fit", "--config", write(config, tmp_path / "c.yaml")]) == 0
    ckpts = tmp_path / "run" / "checkpoints"
    assert (ckpts / "lowest_loss.ckpt").is_file() and _ckpt(ckpts / "last.ckpt")["global_step"] == 2
    assert any("its own ModelCheckpoint" in r.getMessage() for r in caplog.records)


def test_a_run_stopped_before_its_first_validation_leaves_last(config, tmp_path):
    config["trainer"]["max_steps"] = 1  # stops inside the first epoch: no validation, no best
    assert main(["fit", "--config", write(config, tmp_path / "c.yaml")]) == 0
    ckpts = tmp_path / "run" / "checkpoints"
    assert not (ckpts / "best.ckpt").exists()
    assert _ckpt(ckpts / "last.ckpt")["global_step"] == 1


# ---------------------------------------------------------------------------------------- atomic writes


_KILL_DURING_SAVE = textwrap.dedent("""
    import os, signal, sys, torch
    from terramind_ft.cli.checkpoints import AtomicCheckpointIO
    target = sys.argv[1]
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 1}, target)  # the good previous file
    real_save = torch.save
    def save_then_die(obj, f, *args, **kwargs):
        f.write(b"PK" + b"x" * 100000)  # part of the new file ...
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)  # ... then kill -9
    torch.save = save_then_die
    io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 2}, target)
""")


def test_kill_9_during_a_checkpoint_write_leaves_the_previous_file(tmp_path):
    target = tmp_path / "run" / "last.ckpt"
    other_tmp = tmp_path / "elsewhere"  # Lightning's writer stages in $TMPDIR (another filesystem in practice)
    other_tmp.mkdir()
    result = subprocess.run([sys.executable, "-c", _KILL_DURING_SAVE, str(target)], env={**os.environ,
                            "TMPDIR": str(other_tmp)}, capture_output=True, text=True, timeout=120)
    assert result.returncode == -9, result.stderr
    ckpt = _ckpt(target)
    assert ckpt["epoch"] == 1 and torch.equal(ckpt["state_dict"]["w"], torch.ones(3))
    partial = [p.name for p in target.parent.iterdir() if p != target]
    assert len(partial) == 1 and partial[0].startswith(".last.ckpt.")  # hidden, beside the target, not in TMPDIR
    assert not list(other_tmp.iterdir())


@pytest.fixture()
def tiny_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({result.stderr.strip() or result.returncode})")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_keeps_the_previous_checkpoint_and_says_how_much_is_free(tiny_disk):
    target = tiny_disk / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(8)}, "epoch": 1}, target)
    with pytest.raises(CheckpointError) as err:
        io.save_checkpoint({"state_dict": {"w": torch.zeros(200_000)}, "epoch": 2}, target)  # 800 kB > 256 kB
    message = str(err.value)
    assert "no space left" in message and str(target) in message and "MiB free" in message
    assert _ckpt(target)["epoch"] == 1
    assert [p.name for p in tiny_disk.iterdir()] == ["last.ckpt"]  # the partial file is gone


# ------------------------------------------------------------------------------------------- run folders


def test_fit_again_in_a_used_run_folder_is_refused_with_the_ways_out(config, tmp_path, capsys):
    cfg = write(config, tmp_path / "c.yaml")
    assert main(["fit", "--config", cfg]) == 0
    best = tmp_path / "run" / "checkpoints" / "best.ckpt"
    stamp = best.stat().st_mtime_ns
    capsys.readouterr()
    assert main(["fit", "--config", cfg]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "run") in err and "--ckpt_path last" in err and "--trainer.default_root_dir" in err
    assert "--overwrite true" in err and best.stat().st_mtime_ns == stamp
    assert main(["fit", "--config", cfg, "--overwrite", "true"]) == 0
    assert best.stat().st_mtime_ns != stamp
    assert sorted(p.name for p in best.parent.iterdir()) == ["best.ckpt", "last.ckpt"]


def test_a_second_fit_while_one_runs_is_refused_naming_its_pid(config, tmp_path, capsys):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = tmp_path / "run" / LOCK_FILE
        lock.parent.mkdir(parents=True)
        import socket

        lock.write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "started": "now"}))
        assert main(["fit", "--config", write(config, tmp_path / "c.yaml")]) == 2
        err = capsys.readouterr().err
        assert f"PID {holder.pid}" in err and "in use" in err
        assert not (tmp_path / "run" / "checkpoints").exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: its lock is stale and the next fit takes the folder over, then releases it
    assert main(["fit", "--config", write(config, tmp_path / "c.yaml")]) == 0
    assert not lock.exists()


# --------------------------------------------------------------------------------------------- Python API


def test_checkpoints_from_the_python_api_with_path_arguments_reload(tmp_path):
    from terramind_ft.data.datamodule import GenericMultiModalDataModule
    from terramind_ft.data.synthetic import make_sen1floods11
    from terramind_ft.tasks import SemanticSegmentationTask

    ds = make_sen1floods11(tmp_path / "data", size=64, splits={"train": 2, "val": 2, "test": 2})
    kwargs = ds.datamodule_kwargs()
    for split in ("train", "val", "test"):
        kwargs[f"{split}_data_root"] = {m: Path(p) for m, p in kwargs[f"{split}_data_root"].items()}
        if kwargs.get(f"{split}_label_data_root"):
            kwargs[f"{split}_label_data_root"] = Path(kwargs[f"{split}_label_data_root"])
    dm = GenericMultiModalDataModule(**kwargs)
    task = SemanticSegmentationTask(model_args=dict(TINY_MODEL_ARGS), loss="dice", ignore_index=-1, plot_on_val=0)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=1, limit_val_batches=1,
                         limit_test_batches=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path / f"api_{uuid.uuid4().hex[:6]}")
    trainer.fit(task, datamodule=dm)
    path = tmp_path / "api.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)  # refused "Unsupported global pathlib.PosixPath" before
    assert isinstance(next(iter(ckpt["datamodule_hyper_parameters"]["train_data_root"].values())), str)
    results = trainer.test(task, datamodule=dm, ckpt_path=path, verbose=False)
    assert "test/mIoU" in results[0]
