"""``terramind-ft generate`` (issue 7 item 4) on real TerraMesh chips, with random weights (no downloads)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import rasterio

from terramind_ft.cli import main

pytestmark = pytest.mark.filterwarnings("ignore:.*random weights:UserWarning")

CHIP = "637U_59R_1_3"
RANDOM = ["--model", "terramind_v1_tiny_generate", "--no-pretrained", "--allow-random-weights"]


@pytest.mark.slow  # DEM DiVAE + LULC VQVAE at 224 px
def test_writes_georeferenced_geotiffs_and_preview_from_a_real_chip(terramesh_dir, tmp_path, capsys):
    source = terramesh_dir / "S2L2A" / f"{CHIP}.tif"
    out = tmp_path / "out"
    code = main(["generate", *RANDOM, "--inputs", f"S2L2A={source}", "--outputs", "LULC", "DEM",
                 "--timesteps", "1", "--seed", "3", "--lulc-probabilities", "--output-dir", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "random weights" in captured.err and "meaningless" in captured.err
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{CHIP}_LULC.tif", f"{CHIP}_LULC_probabilities.tif", f"{CHIP}_DEM.tif", f"{CHIP}_preview.png"])
    with rasterio.open(source) as src:
        crs, transform, shape = src.crs, src.transform, (src.height, src.width)
    for name in (f"{CHIP}_LULC.tif", f"{CHIP}_LULC_probabilities.tif", f"{CHIP}_DEM.tif"):
        with rasterio.open(out / name) as dst:
            assert dst.crs == crs and dst.transform == transform and (dst.height, dst.width) == shape, name
    with rasterio.open(out / f"{CHIP}_DEM.tif") as dst:
        dem = dst.read(1)
        assert dst.dtypes[0] == "float32" and dst.descriptions == ("DEM",)
        assert dst.tags()["TERRAMIND_FT_WEIGHTS"].startswith("random"), "random-weight outputs must say so"
    # The diffusion decoder's output lies in [-1, 1] standardised units -> metres within mean +- std.
    assert np.isfinite(dem).all() and dem.min() >= 670.665 - 951.3 and dem.max() <= 670.665 + 951.3
    with rasterio.open(out / f"{CHIP}_LULC.tif") as dst:
        classes = dst.read(1)
        assert dst.dtypes[0] == "uint8" and dst.nodata == 255 and dst.colormap(1)[1][:3] != (0, 0, 0)
    with rasterio.open(out / f"{CHIP}_LULC_probabilities.tif") as dst:
        probs = dst.read()
        assert dst.count == 10 and dst.descriptions[1] == "water"
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-4)
    assert (classes == probs.argmax(0)).all() and classes.max() <= 9
    import matplotlib.image

    preview = matplotlib.image.imread(out / f"{CHIP}_preview.png")
    assert preview.ndim == 3 and preview.shape[1] > 3 * preview.shape[0] / 2  # input + 2 panels side by side
    assert "wrote" in captured.out


def _copy_with_nodata(src_path, dst_path):
    """A copy of a chip that declares nodata 0 and has a 32x32 nodata block in the top-left corner."""
    with rasterio.open(src_path) as src:
        data, profile = src.read(), src.profile
    data[:, :32, :32] = 0
    profile.update(nodata=0)
    with rasterio.open(dst_path, "w", **profile) as dst:
        dst.write(data)


def test_folder_input_streamed_and_tiled_with_nodata(terramesh_dir, tmp_path, capsys):
    root = tmp_path / "scenes"
    for folder in ("S2L2A", "S1RTC"):
        (root / folder).mkdir(parents=True)
    _copy_with_nodata(terramesh_dir / "S2L2A" / f"{CHIP}.tif", root / "S2L2A" / f"{CHIP}.tif")
    shutil.copy(terramesh_dir / "S1RTC" / f"{CHIP}.tif", root / "S1RTC" / f"{CHIP}.tif")
    out = tmp_path / "out"
    code = main(["generate", *RANDOM, "--inputs", str(root), "--modalities", "S2L2A", "S1RTC", "--outputs", "LULC",
                 "--stream", "--crop", "128", "--stride", "96", "--no-preview", "--output-dir", str(out)])
    assert code == 0, capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == [f"{CHIP}_LULC.tif"], "no temporary files are left behind"
    with rasterio.open(out / f"{CHIP}_LULC.tif") as dst:
        classes = dst.read(1)
        with rasterio.open(root / "S1RTC" / f"{CHIP}.tif") as ref:
            assert dst.crs == ref.crs and dst.transform == ref.transform
    assert (classes[:32, :32] == 255).all(), "pixels where an input is nodata are nodata in the output"
    assert (classes[32:, 32:] <= 9).all()


def test_refuses_random_weights_without_the_flag(terramesh_dir, tmp_path, capsys):
    code = main(["generate", "--model", "terramind_v1_tiny_generate", "--no-pretrained", "--inputs",
                 f"S2L2A={terramesh_dir / 'S2L2A' / f'{CHIP}.tif'}", "--outputs", "LULC",
                 "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "--allow-random-weights" in err and "LULC tokenizer" in err
    assert not any((tmp_path / "out").iterdir())


def test_names_the_scene_and_modality_that_is_missing(terramesh_dir, tmp_path, capsys):
    s1 = tmp_path / "s1"
    s1.mkdir()
    shutil.copy(terramesh_dir / "S1RTC" / f"{CHIP}.tif", s1 / "other_name.tif")
    code = main(["generate", *RANDOM, "--inputs", f"S2L2A={terramesh_dir / 'S2L2A'}", f"S1RTC={s1}",
                 "--outputs", "LULC", "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 3 and "has no raster for modality" in err and "S1RTC" in err


@pytest.mark.slow  # three generations at 224 px
def test_linear_backscatter_is_named_and_read_as_db_with_the_flag(terramesh_dir, tmp_path, capsys):
    """S1 RTC from Planetary Computer is linear power; TerraMind's statistics are dB."""
    from terramind_ft.data.value_scale import ValueScaleNotice

    linear = tmp_path / "S1RTC_linear.tif"
    with rasterio.open(terramesh_dir / "S1RTC" / f"{CHIP}.tif") as src:
        profile, db = src.profile, src.read()
    profile.update(dtype="float32")
    with rasterio.open(linear, "w", **profile) as dst:
        dst.write((10 ** (db / 10)).astype(np.float32))
    s2 = f"S2L2A={terramesh_dir / 'S2L2A' / f'{CHIP}.tif'}"
    common = [*RANDOM, "--outputs", "LULC", "--temperature", "0", "--no-preview"]

    def classes(out):
        with rasterio.open(out / f"{CHIP}_LULC.tif") as dst:
            return dst.read(1)

    assert main(["generate", *common, "--inputs", s2, f"S1RTC={terramesh_dir / 'S1RTC' / f'{CHIP}.tif'}",
                 "--output-dir", str(tmp_path / "db")]) == 0
    (tmp_path / "in").mkdir()
    shutil.copy(linear, tmp_path / "in" / f"{CHIP}.tif")
    with pytest.warns(ValueScaleNotice, match=r"linear backscatter.*; pass --linear-to-db S1RTC"):
        assert main(["generate", *common, "--inputs", s2, f"S1RTC={tmp_path / 'in' / f'{CHIP}.tif'}",
                     "--output-dir", str(tmp_path / "unflagged")]) == 0
    assert main(["generate", *common, "--inputs", s2, f"S1RTC={tmp_path / 'in' / f'{CHIP}.tif'}",
                 "--linear-to-db", "S1RTC", "--output-dir", str(tmp_path / "flagged")]) == 0
    assert (classes(tmp_path / "flagged") == classes(tmp_path / "db")).mean() > 0.999
    assert main(["generate", *common, "--inputs", s2, "--linear-to-db", "S2L2A",
                 "--output-dir", str(tmp_path / "x")]) == 2
    assert "--linear-to-db: S2L2A is not in dB" in capsys.readouterr().err


def test_the_same_command_gives_the_same_outputs_with_random_weights(terramesh_dir, tmp_path):
    """--seed "makes a run reproducible": the random weights were drawn unseeded, so two runs of one command in a
    process (a notebook, this suite) generated different maps."""
    maps = []
    for run in ("first", "second"):
        out = tmp_path / run
        assert main(["generate", *RANDOM, "--inputs", f"S2L2A={terramesh_dir / 'S2L2A' / f'{CHIP}.tif'}",
                     "--outputs", "LULC", "--no-preview", "--output-dir", str(out)]) == 0
        with rasterio.open(out / f"{CHIP}_LULC.tif") as dst:
            maps.append(dst.read(1))
    assert np.array_equal(maps[0], maps[1])
