"""terramind_ft.io: temp file beside the target, renamed on success, deleted on any error, umask honoured."""

from __future__ import annotations

import json
import os
import stat

import pytest

from terramind_ft.io import atomic_path, atomic_write_json, atomic_write_text


@pytest.fixture
def umask():
    """``os.umask`` for one test (starting at 0o022); the previous umask is restored afterwards."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_success_renames_onto_target_with_the_mode_open_would_give(tmp_path, umask, mask, expected):
    umask(mask)
    target = tmp_path / "new" / "folder" / "out.png"  # parent folders are created
    with atomic_path(target, suffix=".png") as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".out.png.") and tmp.suffix == ".png"
        assert tmp.exists() and not target.exists(), "the target appears only after the block"
        tmp.write_bytes(b"complete")
    assert target.read_bytes() == b"complete"
    assert _mode(target) == expected
    with open(tmp_path / "plain", "w"):
        pass
    assert _mode(target) == _mode(tmp_path / "plain"), "same mode as a file made by a plain open()"
    assert [p.name for p in target.parent.iterdir()] == ["out.png"], "no temp file left behind"


@pytest.mark.parametrize("error", [RuntimeError("writer failed"), KeyboardInterrupt()])
def test_an_error_leaves_neither_target_nor_temp_file(tmp_path, error):
    target = tmp_path / "metrics.json"
    with pytest.raises(type(error)):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise error
    assert list(tmp_path.iterdir()) == []


def test_an_existing_target_is_replaced_only_on_success(tmp_path):
    target = tmp_path / "config.yaml"
    target.write_text("old\n")
    with pytest.raises(ValueError):
        with atomic_path(target) as tmp:
            tmp.write_text("new but half")
            assert target.read_text() == "old\n", "the old file stays readable while the new one is written"
            raise ValueError
    assert target.read_text() == "old\n"
    assert atomic_write_text(target, "new\n") == target
    assert target.read_text() == "new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_writer_that_replaces_the_temp_file_still_lands_on_target(tmp_path):
    # GDAL and matplotlib may delete and recreate the file they are given; the rename must still happen.
    target = tmp_path / "pred.tif"
    with atomic_path(target, suffix=".tif") as tmp:
        tmp.unlink()
        tmp.write_bytes(b"recreated")
    assert target.read_bytes() == b"recreated"


def test_atomic_write_json_serialises_before_touching_the_disk(tmp_path):
    target = tmp_path / "predictions.json"
    atomic_write_json(target, {"a.tif": ["a_pred.tif"]})
    assert json.loads(target.read_text()) == {"a.tif": ["a_pred.tif"]}
    assert target.read_text() == json.dumps({"a.tif": ["a_pred.tif"]}, indent=1)
    with pytest.raises(TypeError):
        atomic_write_json(target, {"bad": object()})
    assert json.loads(target.read_text()) == {"a.tif": ["a_pred.tif"]}, "a failed write keeps the old file"
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.json"]


def test_temp_names_are_unique_for_concurrent_writers_of_one_target(tmp_path):
    target = tmp_path / "cache.pt"
    with atomic_path(target) as first, atomic_path(target) as second:
        assert first != second
        first.write_text("1")
        second.write_text("2")
    assert target.read_text() == "1", "the last block to finish wins"
