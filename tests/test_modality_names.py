"""Modality names resolve exactly (case-insensitive) against the catalogue: no substring matches."""

from __future__ import annotations

from pathlib import Path

import pytest

from terramind_ft.errors import UnknownNameError
from terramind_ft.modalities import get_modality, resolve_input, resolve_output


@pytest.mark.parametrize("name,expected", [
    ("S1_RTC", "S1RTC"),  # substring matching made this S1GRD (its statistics and embedding)
    ("S1RTX", "S1RTC"),
    ("S1GRX", "S1GRD"),
    ("S2L2B", "S2L2A"),
])
def test_near_misses_are_errors_with_did_you_mean(name, expected):
    with pytest.raises(UnknownNameError) as err:
        get_modality(name)
    assert f"Did you mean {expected!r}" in str(err.value)


@pytest.mark.parametrize("name,modality,key", [
    ("S2L2A", "S2L2A", "untok_sen2l2a@224"), ("s2l2a", "S2L2A", "untok_sen2l2a@224"),
    ("sen2l2a", "S2L2A", "untok_sen2l2a@224"), ("untok_sen2l2a@224", "S2L2A", "untok_sen2l2a@224"),
    ("S1", "S1GRD", "untok_sen1grd@224"), ("sen1rtc", "S1RTC", "untok_sen1rtc@224"),
    ("RGB", "RGB", "untok_sen2rgb@224"), ("S2RGB", "RGB", "untok_sen2rgb@224"),
    ("tok_sen2l2a@224", "S2L2A", "tok_sen2l2a@224"), ("tok_lulc", "LULC", "tok_lulc@224"),
    ("LULC", "LULC", "tok_lulc@224"), ("coords", "Coordinates", "coords"),
])
def test_documented_spellings_resolve(name, modality, key):
    assert resolve_input(name) == (modality, key)


def test_outputs_resolve_only_to_modalities_with_a_tokenizer():
    assert resolve_output("s1grd") == ("S1GRD", "tok_sen1grd@224")
    with pytest.raises(UnknownNameError):
        resolve_output("S2L1C")  # no tokenizer: not silently the S2L2A one


def test_the_data_module_refuses_a_misspelt_modality_with_its_key(tmp_path):
    from terramind_ft.data.datamodule import GenericMultiModalDataModule

    with pytest.raises(Exception) as err:
        GenericMultiModalDataModule(modalities=["S2L2A", "S1_RTC"], task="segmentation", batch_size=1,
                                    train_data_root={"S2L2A": str(tmp_path), "S1_RTC": str(tmp_path)})
    assert "S1_RTC" in str(err.value) and "S1RTC" in str(err.value)


def units_table() -> str:
    """The README's table of what the pretraining statistics expect, rendered from the catalogue."""
    from terramind_ft.modalities import MODALITIES

    rows = ["| Modality | Also accepted | Bands | Values the statistics are in |", "|---|---|---|---|"]
    for m in MODALITIES.values():
        aliases = ", ".join(f"`{a}`" for a in m.aliases if a != m.name) or "-"
        bands = f"{len(m.bands)}: {', '.join(m.bands)}" if m.kind == "pixel" else f"{len(m.bands)} ({m.kind})"
        rows.append(f"| `{m.name}` | {aliases} | {bands} | {m.units} |")
    return "\n".join(rows) + "\n"


def test_the_readme_units_table_is_the_catalogue():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert units_table() in readme, "README's units table differs from terramind_ft/modalities.py:\n" + units_table()
