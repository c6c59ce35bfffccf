"""Values on another scale than their statistics get a notice naming the modality, a file and the fix; data in
the right units (the real TerraMesh chips, every modality) get none."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio

from terramind_ft.data.datamodule import GenericMultiModalDataModule
from terramind_ft.data.files import DataNotice
from terramind_ft.data.value_scale import ValueScaleNotice, scale_mismatch
from terramind_ft.modalities import LULC_CLASSES, MODALITIES, get_modality

REPO = Path(__file__).resolve().parents[2]
PIXEL_MODALITIES = ("S2L1C", "S2L2A", "S2RGB", "S1RTC", "DEM", "NDVI")


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read().astype(np.float64)


def _mismatch(values: np.ndarray, modality: str) -> str | None:
    m = get_modality(modality)
    problem = scale_mismatch(values, np.zeros(values.shape, bool), m.mean, m.std, bands=m.bands,
                             may_be_flat=m.may_be_flat, decibels=m.in_decibels)
    return None if problem is None else str(problem)


@pytest.mark.parametrize("modality", PIXEL_MODALITIES)
def test_real_chips_in_their_units_pass(terramesh_dir, modality):
    for path in sorted((terramesh_dir / modality).glob("*.tif")):
        assert _mismatch(_read(path), modality) is None, path


def test_reflectances_stored_as_zero_to_one_are_named_with_the_factor(terramesh_dir):
    for path in sorted((terramesh_dir / "S2L2A").glob("*.tif")):
        problem = _mismatch(_read(path) / 10000, "S2L2A")
        assert problem and "1e4 times smaller" in problem and "0..1" in problem, path


def test_digital_numbers_against_reflectance_statistics_are_named(terramesh_dir):
    m = get_modality("S2L1C")
    path = sorted((terramesh_dir / "S2L1C").glob("*.tif"))[0]
    values = _read(path)
    problem = scale_mismatch(values, np.zeros(values.shape, bool), [v / 1e4 for v in m.mean],
                             [v / 1e4 for v in m.std], bands=m.bands)
    assert problem.kind == "larger" and "1e4 times larger" in str(problem)


def test_linear_backscatter_against_db_statistics_is_named(terramesh_dir):
    for path in sorted((terramesh_dir / "S1RTC").glob("*.tif")):
        problem = _mismatch(10 ** (_read(path) / 10), "S1RTC")
        assert problem and "linear backscatter, which the model takes as 10 * log10(value)" in problem, path


def test_positive_values_against_negative_statistics_are_linear_backscatter_only_for_db_modalities():
    """Temperatures in degrees C of a summer chip against statistics of a year (mean below zero) are fine."""
    summer = np.random.default_rng(0).normal(12.0, 4.0, (1, 64, 64)).clip(0.5)
    assert scale_mismatch(summer, np.zeros(summer.shape, bool), [-3.0], [9.0]) is None
    assert scale_mismatch(summer, np.zeros(summer.shape, bool), [-3.0], [9.0], decibels=True).kind == "linear"
    assert [m.name for m in MODALITIES.values() if m.in_decibels] == ["S1GRD", "S1RTC"]


def test_a_flat_dem_is_not_a_scale_problem_but_a_flat_s2_chip_in_reflectance_is():
    flat = np.full((1, 64, 64), 3.0) + np.random.default_rng(0).normal(0, 0.5, (1, 64, 64))  # coast, metres
    assert _mismatch(flat, "DEM") is None
    water = np.random.default_rng(1).normal(0.03, 0.005, (12, 64, 64))  # open water as 0..1 reflectance
    assert "smaller" in _mismatch(water, "S2L2A")


def test_constant_and_nodata_only_bands_give_no_verdict():
    m = get_modality("S2L2A")
    constant = np.zeros((12, 32, 32))
    assert _mismatch(constant, "S2L2A") is None  # nothing to judge (zero-filled)
    values = np.random.default_rng(0).normal(0.1, 0.05, (12, 32, 32))
    assert scale_mismatch(values, np.ones(values.shape, bool), m.mean, m.std) is None  # all nodata


def _module(root: Path, tmp_path: Path, **extra) -> GenericMultiModalDataModule:
    roots = {"S2L2A": str(root / "S2L2A"), "S1RTC": str(root / "S1RTC")}
    chips = sorted(p.stem for p in (root / "S2L2A").glob("*.tif"))
    split = tmp_path / "train.txt"
    split.write_text("\n".join(chips) + "\n")
    kwargs = dict(task="segmentation", modalities=["S2L2A", "S1RTC"], image_grep="*.tif", label_grep="*.tif",
                  train_data_root=roots, train_label_data_root=str(REPO / "examples/terramesh/LULC"),
                  train_split=str(split), predict_data_root=roots, num_classes=10, class_names=list(LULC_CLASSES),
                  batch_size=2)
    kwargs.update(extra)
    return GenericMultiModalDataModule(**kwargs)


def _converted_copy(root: Path, modality: str, convert) -> Path:
    """examples/terramesh with ``modality`` rewritten as float32 ``convert(values)``; the other modality as it is."""
    for name in ("S2L2A", "S1RTC"):
        (root / name).mkdir(parents=True)
        for path in sorted((REPO / "examples/terramesh" / name).glob("*.tif")):
            with rasterio.open(path) as src:
                profile, values = src.profile, src.read()
            if name == modality:
                values = convert(values).astype(np.float32)
                profile.update(dtype="float32")
            with rasterio.open(root / name / path.name, "w", **profile) as dst:
                dst.write(values)
    return root


def _rescaled_copy(tmp_path: Path, factor: float) -> Path:
    """S2L2A as reflectances x ``factor`` (0..1 for 1e-4)."""
    return _converted_copy(tmp_path / "data", "S2L2A", lambda values: values * factor)


def _scale_notices(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, ValueScaleNotice)]


def test_setup_names_the_modality_a_file_and_the_key_that_fixes_it(tmp_path):
    root = _rescaled_copy(tmp_path, 1e-4)
    with pytest.warns(DataNotice) as record:
        _module(root, tmp_path).setup("fit")
    notices = _scale_notices(record)
    assert len(notices) == 1, notices  # S2L2A only: S1RTC is in dB as its statistics
    notice = notices[0]
    assert notice.startswith("train modality 'S2L2A' (3 sample(s), e.g. ") and str(root / "S2L2A") in notice
    assert "data.init_args.constant_scale.S2L2A" in notice and "compute-statistics" in notice


def test_the_configured_constant_scale_silences_it_and_predict_files_are_checked_too(tmp_path):
    root = _rescaled_copy(tmp_path, 1e-4)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _module(root, tmp_path, constant_scale={"S2L2A": 10000}).setup("fit")
    assert _scale_notices(record) == []
    # the model was trained on the right units; new scenes in 0..1 are caught at predict
    with pytest.warns(DataNotice) as record:
        _module(REPO / "examples/terramesh", tmp_path, predict_data_root={
            "S2L2A": str(root / "S2L2A"), "S1RTC": str(root / "S1RTC")}).setup("predict")
    assert [n.split(" (")[0] for n in _scale_notices(record)] == ["predict modality 'S2L2A'"]


def test_predict_scene_notes_a_scene_in_other_units_once(tmp_path):
    import torch

    from terramind_ft.data.synthetic import make_scene
    from terramind_ft.inference.scene import predict_scene

    scene = make_scene(tmp_path / "scene", height=96, width=96, label=False)

    def model(inputs):
        return torch.zeros(inputs["S2L2A"].shape[0], 2, *inputs["S2L2A"].shape[-2:])

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        predict_scene(model, scene.paths, tmp_path / "right.tif", crop=64, stride=48, verbose=False)
    assert _scale_notices(record) == []  # the generated scene is in the catalogue's units
    reflectance = tmp_path / "S2L2A_0to1.tif"
    with rasterio.open(scene.paths["S2L2A"]) as src:
        profile, values = src.profile, src.read()
    profile.update(dtype="float32", nodata=None)
    with rasterio.open(reflectance, "w", **profile) as dst:
        dst.write((values / 1e4).astype(np.float32))
    with pytest.warns(DataNotice) as record:
        predict_scene(model, {**scene.paths, "S2L2A": reflectance}, tmp_path / "wrong.tif", crop=64, stride=48,
                      verbose=False)
    notices = _scale_notices(record)
    assert len(notices) == 1 and notices[0].startswith(f"scene {reflectance} (modality 'S2L2A'): ")
    assert "1e4 times smaller" in notices[0] and "means['S2L2A']" in notices[0]


def test_check_on_the_quickstart_with_reflectances_in_zero_to_one_says_so_before_training(tmp_path, capsys):
    """The user's path: their S2 chips hold 0..1 reflectances; ``terramind-ft check`` (and fit) names it."""
    import yaml

    from terramind_ft.cli import main

    root = _rescaled_copy(tmp_path, 1e-4)
    config = yaml.safe_load((REPO / "configs/quickstart.yaml").read_text())
    data = config["data"]["init_args"]
    for split in ("train", "val", "test", "predict"):
        data[f"{split}_data_root"] = {"S2L2A": str(root / "S2L2A"), "S1RTC": str(root / "S1RTC")}
    for key, value in list(data.items()):
        if isinstance(value, str) and value.startswith("examples/"):
            data[key] = str(REPO / value)
    path = tmp_path / "quickstart.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    said = [line for line in out.splitlines() if line.startswith("[values]")]
    # val comes from train's source; test and predict are judged on their own files
    assert [line.split(" (")[0] for line in said] == [
        "[values] warning: train modality 'S2L2A'", "[values] warning: test modality 'S2L2A'",
        "[values] warning: predict modality 'S2L2A'"], out
    assert "1e4 times smaller" in said[0] and "data.init_args.constant_scale.S2L2A" in said[0]
    assert "[check] passed, with 3 warning(s) above: read them before training" in out
    assert main(["check", "--config", str(path), "--data.init_args.constant_scale", "{S2L2A: 10000}"]) == 0
    out = capsys.readouterr().out
    assert "[values] train, test, predict: values on the scale of their statistics" in out
    assert out.rstrip().endswith("[check] passed")


def _linear_s1_copy(tmp_path: Path) -> Path:
    """S1RTC as linear backscatter (10 ** (dB / 10)), one pixel 0 (a linear product's nodata)."""

    def linear(values):
        values = 10 ** (values / 10)
        values[:, 0, 0] = 0.0
        return values

    return _converted_copy(tmp_path / "linear", "S1RTC", linear)


def test_linear_to_db_reads_linear_backscatter_as_the_db_the_statistics_are_in(tmp_path):
    import torch

    root = _linear_s1_copy(tmp_path)
    with pytest.warns(DataNotice) as record:
        _module(root, tmp_path).setup("fit")
    assert [n.split(" (")[0] for n in _scale_notices(record)] == ["train modality 'S1RTC'"]
    assert "linear backscatter" in _scale_notices(record)[0]
    assert "Read them as dB with data.init_args.linear_to_db: [S1RTC]" in _scale_notices(record)[0]

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        converted = _module(root, tmp_path, linear_to_db=["S1RTC"])
        converted.setup("fit")
    assert _scale_notices(record) == []
    original = _module(REPO / "examples/terramesh", tmp_path)
    original.setup("fit")
    for i in range(len(original.datasets["train"])):
        a, b = original.datasets["train"][i], converted.datasets["train"][i]
        assert b["nodata"][0, 0] and not a["nodata"][0, 0]  # the 0 of the linear file: no logarithm, nodata
        valid = ~b["nodata"]
        torch.testing.assert_close(b["image"]["S1RTC"][:, valid], a["image"]["S1RTC"][:, valid], atol=1e-4,
                                   rtol=0)
    # a streamed predict (tiled_inference_parameters) reads the predict files the same way
    from terramind_ft.inference.tiles import scene_sources

    record = converted.records("predict")[0]
    assert scene_sources(converted.split_specs("predict"), record, 0.0)["linear_to_db"] == ["S1RTC"]


def test_linear_to_db_streams_a_scene_like_its_db_twin(tmp_path):
    import torch

    from terramind_ft.data.synthetic import make_scene
    from terramind_ft.inference.scene import predict_scene

    scene = make_scene(tmp_path / "scene", height=80, width=96, label=False)
    linear = tmp_path / "S1GRD_linear.tif"
    with rasterio.open(scene.paths["S1GRD"]) as src:
        profile, values = src.profile, src.read()
    with rasterio.open(linear, "w", **profile) as dst:
        dst.write(np.where(np.isfinite(values), 10 ** (values / 10), values).astype(profile["dtype"]))
    torch.manual_seed(0)
    net = torch.nn.Conv2d(14, 2, 3, padding=1)

    def model(inputs):
        return net(torch.cat([inputs["S2L2A"], inputs["S1GRD"]], 1))

    outputs = {}
    for name, sources, extra in (("db", scene.paths, {}),
                                 ("linear", {**scene.paths, "S1GRD": linear}, {"linear_to_db": ["S1GRD"]})):
        out = tmp_path / f"{name}.tif"
        with torch.no_grad():
            predict_scene(model, sources, out, crop=64, stride=48, verbose=False, write_logits=True, **extra)
        with rasterio.open(tmp_path / f"{name}_logits.tif") as src:
            outputs[name] = src.read()
    np.testing.assert_allclose(outputs["linear"], outputs["db"], atol=1e-4)


def test_linear_to_db_names_configured_modalities_only(tmp_path):
    from terramind_ft.errors import ConfigError

    with pytest.raises(ConfigError, match=r"data.init_args.linear_to_db.S1GRD: linear_to_db names 'S1GRD'"):
        _module(REPO / "examples/terramesh", tmp_path, linear_to_db=["S1GRD"])
    with pytest.raises(ConfigError, match=r"data.init_args.linear_to_db: is a list of modalities, e.g. \[S1RTC\]"):
        _module(REPO / "examples/terramesh", tmp_path, linear_to_db="S1RTC")
