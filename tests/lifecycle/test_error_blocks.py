"""Errors reach the user as one block with a documented exit code; the traceback only with --debug."""

from __future__ import annotations

import errno
import subprocess
import sys

from cli_configs import sen1floods11_config, write
from terramind_ft.cli import main
from terramind_ft.cli.report import format_error
from terramind_ft.errors import DataError


def test_a_data_error_is_one_block_and_debug_shows_the_traceback(tmp_path, capsys):
    config = sen1floods11_config(tmp_path)
    config["data"]["init_args"]["train_data_root"]["S1GRD"] = str(tmp_path / "no_such_folder")
    cfg = write(config, tmp_path / "c.yaml")
    assert main(["fit", "--config", cfg]) == 3
    err = capsys.readouterr().err
    block = err[err.index("terramind-ft: data error:"):]
    assert "no_such_folder" in block and len(block.strip().splitlines()) == 2  # the error, then the --debug hint
    assert "Traceback" not in err and "--debug" in err
    assert main(["fit", "--config", cfg, "--debug"]) == 3
    assert "Traceback (most recent call last)" in capsys.readouterr().err
    # --debug is for its own call: main() called again from Python (a notebook, a test) is back to one block
    assert main(["fit", "--config", cfg]) == 3
    assert "Traceback" not in capsys.readouterr().err


def test_os_errors_name_the_path_and_the_free_space(tmp_path):
    block, code = format_error(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.tif")))
    assert code == 6 and block.startswith("terramind-ft: disk error: no space left")
    assert str(tmp_path / "x.tif") in block and "MiB free on" in block
    block, _ = format_error(OSError(errno.EROFS, "Read-only file system", "/mnt/ro/out.tif"))
    assert "/mnt/ro/out.tif" in block and "read-only" in block


def test_an_error_from_a_dataloader_worker_loses_the_worker_traceback():
    wrapped = DataError("Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                        "last):\n  File \"x.py\", line 1, in f\nterramind_ft.errors.DataError: a.tif is truncated")
    block, code = format_error(wrapped)
    assert code == 3 and block == "terramind-ft: data error: a.tif is truncated"


def test_exit_codes_are_documented_in_the_help():
    out = subprocess.run([sys.executable, "-m", "terramind_ft.cli", "--help"], capture_output=True, text=True).stdout
    assert "--debug" in out and "TERRAMIND_FT_DEBUG" in out and "3 data error" in out and "143" in out
