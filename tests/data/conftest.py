"""Fixtures of the data tests: small generated Sen1Floods11 sets (both layouts) and a kwargs helper."""

from __future__ import annotations

import warnings

import pytest

from terramind_ft.data.synthetic import SyntheticDataset, make_sen1floods11


@pytest.fixture(scope="module")
def flood(tmp_path_factory) -> SyntheticDataset:
    """TerraMind-layout Sen1Floods11 look-alike, 64 px, train 4 / val 2 / test 2 (read-only for tests)."""
    return make_sen1floods11(tmp_path_factory.mktemp("flood_tm"), layout="terramind", size=64)


@pytest.fixture(scope="module")
def flood_original(tmp_path_factory) -> SyntheticDataset:
    return make_sen1floods11(tmp_path_factory.mktemp("flood_orig"), layout="original", size=64)


@pytest.fixture
def fresh_flood(tmp_path) -> SyntheticDataset:
    """A private copy that a test may damage."""
    return make_sen1floods11(tmp_path / "flood", layout="terramind", size=32, splits={"train": 3, "val": 2},
                             compress=None)


@pytest.fixture(autouse=True)
def _quiet_notices():
    from terramind_ft.data.files import DataNotice
    from terramind_ft.data.transforms import TransformNotice

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataNotice)
        warnings.simplefilter("ignore", TransformNotice)
        yield
