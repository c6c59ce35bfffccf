"""terramind-ft geolocate: a location map (EPSG:4326, 0.25 degree) and the top-k per scene, scored against the
scenes' own georeference. A stand-in model that always answers one chip's true centre gives the known answer;
the tiny model with random weights runs the whole command."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import rasterio
import torch

from coords_vocab import write_coords_vocab
from terramind_ft.cli import main
from terramind_ft.commands import geolocate
from terramind_ft.inference.geotiff import WEIGHTS_TAG
from terramind_ft.models.terramind.geolocation import COLS, ROWS, LocationDistribution, col_of_lon, row_of_lat

EXAMPLES = "examples/terramesh"
ANSWER_CHIP = "637U_59R_1_3"


class AlwaysThere(torch.nn.Module):
    """All probability on the cell of one fixed (lon, lat)."""

    def __init__(self, lon: float, lat: float):
        super().__init__()
        self.cell = (row_of_lat(round(lat * 4) / 4), col_of_lon(round(lon * 4) / 4))
        self.calls = 0

    def location_distribution(self, chip):
        self.calls += 1
        probabilities = torch.zeros(1, ROWS, COLS)
        probabilities[0, self.cell[0], self.cell[1]] = 0.7
        probabilities[0, self.cell[0], (self.cell[1] + 40) % COLS] = 0.3  # 10 degrees east: the second guess
        return LocationDistribution(probabilities=probabilities, location_mass=torch.ones(1))


def _use_stand_in(monkeypatch, model) -> None:
    """geolocate builds ``model`` (with pretrained weights, as far as its outputs say)."""
    def fake_build(args, modalities):
        args.weights_provenance = "pretrained"
        return model

    monkeypatch.setattr(geolocate, "build_model", fake_build)


def test_known_answer_scores_and_files(tmp_path, monkeypatch):
    truth = geolocate.true_centre(next((tmp_path.cwd() / EXAMPLES / "S2L2A").glob(f"{ANSWER_CHIP}.tif")))
    with rasterio.open(f"{EXAMPLES}/S2L2A/{ANSWER_CHIP}.tif") as src:  # the centre, computed independently
        from rasterio.warp import transform_bounds

        west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    assert truth == pytest.approx(((west + east) / 2, (south + north) / 2), abs=1e-3)
    _use_stand_in(monkeypatch, AlwaysThere(*truth))
    out = tmp_path / "where"
    assert main(["geolocate", "--inputs", f"S2L2A={EXAMPLES}/S2L2A", "--top-k", "2", "--output-dir", str(out)]) == 0
    rows = list(csv.DictReader((out / "locations.csv").open()))
    assert len(rows) == 10 and {r["rank"] for r in rows} == {"1", "2"}
    mine = [r for r in rows if r["scene"] == ANSWER_CHIP]
    assert float(mine[0]["distance_km"]) < 25 and float(mine[0]["probability"]) == pytest.approx(0.7)
    assert float(mine[1]["lon"]) == pytest.approx(float(mine[0]["lon"]) + 10)
    metrics = json.loads((out / "metrics.json").read_text())
    top1 = sorted(float(r["distance_km"]) for r in rows if r["rank"] == "1")
    assert metrics["scenes_with_truth"] == 5 and metrics["top1_median_km"] == pytest.approx(top1[2], abs=0.1)
    assert metrics["within_25_km"] == pytest.approx(sum(d <= 25 for d in top1) / 5)
    assert metrics["within_25_km"] >= 0.2
    with rasterio.open(out / f"{ANSWER_CHIP}_location.tif") as src:
        assert src.crs.to_epsg() == 4326 and src.res == (0.25, 0.25)
        assert src.tags()[WEIGHTS_TAG] == "pretrained"
        data = src.read(1)
        assert data.sum() == pytest.approx(1.0) and src.index(*truth) == np.unravel_index(data.argmax(), data.shape)
    assert (out / f"{ANSWER_CHIP}_location.png").stat().st_size > 10_000


def test_large_scene_is_the_mean_of_its_chips(tmp_path):
    from terramind_ft.inference.tiles import tile_windows

    assert tile_windows(100, 100, 224) == [(0, 0, 100, 100)]
    assert tile_windows(64, 160, 64) == [(0, 0, 64, 64), (0, 64, 64, 64), (0, 96, 64, 64)]

    class ByMean(torch.nn.Module):  # a distinct map per chip: its mean value picks the cell
        def location_distribution(self, chip):
            p = torch.zeros(1, ROWS, COLS)
            p[0, 0, int(chip["S2L2A"].mean() * 1000) % COLS] = 1.0
            return LocationDistribution(probabilities=p, location_mass=torch.ones(1))

    path = tmp_path / "scene.tif"
    data = np.concatenate([np.full((12, 64, 64), v, np.float32) for v in (1000.0, 2000.0, 3000.0)], axis=2)[:, :, :160]
    with rasterio.open(path, "w", driver="GTiff", width=160, height=64, count=12, dtype="float32",
                       crs="EPSG:4326", transform=rasterio.Affine(0.001, 0, 10, 0, -0.001, 50)) as dst:
        dst.write(data)
    dist = geolocate.geolocate_scene(ByMean(), {"S2L2A": path}, 64, "cpu")
    assert dist.probabilities.sum() == pytest.approx(1.0)
    assert int((dist.probabilities[0] > 0).sum()) == 3  # three chips, three cells, a third each
    assert torch.allclose(dist.probabilities[dist.probabilities > 0], torch.full((3,), 1 / 3))


def test_random_weights_end_to_end_and_errors(tmp_path, capsys):
    pytest.importorskip("tokenizers")
    vocab = write_coords_vocab(tmp_path / "config.json")
    out = tmp_path / "where"
    argv = ["geolocate", "--model", "terramind_v1_tiny_generate", "--no-pretrained", "--inputs",
            f"S2L2A={EXAMPLES}/S2L2A/{ANSWER_CHIP}.tif", "--output-dir", str(out), "--no-preview"]
    assert main(argv) == 2  # the vocabulary has no random form
    assert "--coords-tokenizer" in capsys.readouterr().err
    assert main([*argv, "--coords-tokenizer", str(vocab)]) == 2  # ... and random weights need consent
    assert "--allow-random-weights" in capsys.readouterr().err
    assert main([*argv, "--allow-random-weights", "--coords-tokenizer", str(vocab)]) == 0
    closing = capsys.readouterr().out.strip().splitlines()[-1]
    assert closing.startswith("geolocated 1 scene(s): top-1 error median") and "RANDOM WEIGHTS" in closing
    with rasterio.open(out / f"{ANSWER_CHIP}_location.tif") as src:
        assert src.tags()[WEIGHTS_TAG].startswith("random") and src.read(1).sum() == pytest.approx(1.0, abs=1e-4)
    assert not list(out.glob("*.png")) and not list(out.glob(".*"))


def test_images_from_locations_are_placed_around_them(tmp_path, capsys):
    """generate --coords: one scene per location, --size px at --resolution m in the location's UTM zone and
    centred on it; western longitudes parse; swapped or missing arguments are refused with the key."""
    pytest.importorskip("tokenizers")
    from rasterio.warp import transform

    vocab = write_coords_vocab(tmp_path / "config.json")
    out = tmp_path / "gen"
    base = ["generate", "--model", "terramind_v1_tiny_generate", "--no-pretrained", "--allow-random-weights",
            "--outputs", "S2L2A", "LULC", "--size", "32", "--timesteps", "1", "--output-dir", str(out)]
    assert main([*base, "--coords", "-3.70,40.42", "151.21,-33.87", "--coords-tokenizer", str(vocab),
                 "--no-preview"]) == 0
    for stem, (lon, lat), epsg in (("lat+40.4200_lon-3.7000", (-3.70, 40.42), 32630),
                                   ("lat-33.8700_lon+151.2100", (151.21, -33.87), 32756)):
        with rasterio.open(out / f"{stem}_S2L2A.tif") as src:
            assert src.crs.to_epsg() == epsg and src.res == (10.0, 10.0) and src.shape == (32, 32)
            x, y = src.xy(15.5, 15.5)  # the centre of the grid
            (clon,), (clat,) = transform(src.crs, "EPSG:4326", [x], [y])
            assert (clon, clat) == pytest.approx((lon, lat), abs=1e-6)
            assert src.count == 12 and src.tags()[WEIGHTS_TAG].startswith("random")
        with rasterio.open(out / f"{stem}_LULC.tif") as src:
            assert src.dtypes[0] == "uint8" and src.crs.to_epsg() == epsg
    assert main([*base, "--coords", "45.0,100.0", "--coords-tokenizer", str(vocab)]) == 2  # lat 100
    assert "looks like LAT,LON" in capsys.readouterr().err
    assert main([*base, "--coords", "-3.70,40.42"]) == 2  # no vocabulary without the hub
    assert "--coords-tokenizer" in capsys.readouterr().err
    assert main([*base, "--coords", "-3.70,40.42", "--inputs", f"S2L2A={EXAMPLES}/S2L2A"]) == 2
    assert "either --inputs" in capsys.readouterr().err


def test_a_scene_without_georeference_is_geolocated_without_a_truth(tmp_path, monkeypatch, capsys):
    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    path = tmp_path / "plain.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=12, dtype="uint16") as dst:
            dst.write(np.full((12, 64, 64), 1500, np.uint16))
    _use_stand_in(monkeypatch, AlwaysThere(10.0, 50.0))
    out = tmp_path / "where"
    assert main(["geolocate", "--inputs", f"S2L2A={path}", "--top-k", "1", "--output-dir", str(out)]) == 0
    row = next(csv.DictReader((out / "locations.csv").open()))
    assert (float(row["lon"]), float(row["lat"])) == (10.0, 50.0) and row["distance_km"] == ""
    assert json.loads((out / "metrics.json").read_text())["scenes_with_truth"] == 0
    printed = capsys.readouterr().out
    assert "has no georeference: no true location" in printed
    assert printed.strip().splitlines()[-1].startswith("geolocated 1 scene(s) ->")
