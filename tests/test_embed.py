"""terramind-ft embed: one GeoParquet row per chip (footprint in the source CRS, a fixed-size vector), patch
embeddings as GeoTIFFs on the token grid, deterministic and resumable."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import rasterio

from cli_configs import sen1floods11_config, write
from terramind_ft.cli import main

pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("pyproj")

TINY_DIM = 192


def _polygon(wkb: bytes) -> list[tuple[float, float]]:
    order, kind, rings, points = struct.unpack_from("<BIII", wkb)
    assert (order, kind, rings, points) == (1, 3, 1, 5)
    return [struct.unpack_from("<dd", wkb, 13 + 16 * i) for i in range(points)]


@pytest.fixture
def config(tmp_path):
    return write(sen1floods11_config(tmp_path), tmp_path / "embed.yaml")


def test_one_row_per_chip_with_footprint_and_vector(tmp_path, config):
    out = tmp_path / "emb"
    assert main(["embed", "--config", config, "--split", "test", "--layers", "5,-1", "--output", str(out)]) == 0
    table = pq.read_table(out / "embeddings.parquet")
    assert table.num_rows == 2 and table.schema.field("embedding").type.list_size == 2 * TINY_DIM
    import json

    geo = json.loads(table.schema.metadata[b"geo"])
    column = geo["columns"][geo["primary_column"]]
    assert geo["primary_column"] == "geometry" and column["encoding"] == "WKB"
    with rasterio.open(table.column("file")[0].as_py()) as src:
        import pyproj

        assert pyproj.CRS.from_json_dict(column["crs"]) == pyproj.CRS.from_wkt(src.crs.to_wkt())  # PROJJSON
    for row in table.to_pylist():
        with rasterio.open(row["file"]) as src:
            left, bottom, right, top = src.bounds
            assert row["crs"] == src.crs.to_string()
        assert _polygon(row["geometry"])[:3] == [(left, bottom), (right, bottom), (right, top)]
        assert row["chip_id"] in row["file"] and np.isfinite(row["embedding"]).all()


def test_deterministic_and_resumable(tmp_path, config, monkeypatch):
    out = tmp_path / "emb"
    assert main(["embed", "--config", config, "--split", "predict", "--output", str(out)]) == 0
    first = pq.read_table(out / "embeddings.parquet").to_pylist()
    assert len(first) == 8
    # a rerun computes nothing: every chip is in the parts already
    from terramind_ft.models.terramind import encoder as encoder_module

    def no_forward(*args, **kwargs):
        raise AssertionError("a finished chip was embedded again")

    monkeypatch.setattr(encoder_module.TerraMindEncoder, "forward", no_forward)
    assert main(["embed", "--config", config, "--split", "predict", "--output", str(out)]) == 0
    assert pq.read_table(out / "embeddings.parquet").to_pylist() == first
    monkeypatch.undo()
    # an interrupted run (half the parts gone) finishes the rest with the same numbers
    parts = sorted((out / "parts").glob("part-*.parquet"))
    kept = pq.read_table(parts[0])
    pq.write_table(kept.slice(0, 3), parts[0])
    again = tmp_path / "again"
    assert main(["embed", "--config", config, "--split", "predict", "--output", str(again)]) == 0
    assert pq.read_table(again / "embeddings.parquet").to_pylist() == first  # deterministic
    assert main(["embed", "--config", config, "--split", "predict", "--output", str(out)]) == 0
    resumed = pq.read_table(out / "embeddings.parquet").to_pylist()
    assert [r["chip_id"] for r in resumed] == [r["chip_id"] for r in first]
    np.testing.assert_allclose([r["embedding"] for r in resumed], [r["embedding"] for r in first], atol=1e-6)


def test_patch_embeddings_as_geotiffs_on_the_token_grid(tmp_path, config):
    out = tmp_path / "patches"
    assert main(["embed", "--config", config, "--split", "test", "--pooling", "none", "--output", str(out)]) == 0
    tifs = sorted(out.glob("*_embedding.tif"))
    assert len(tifs) == 2
    with rasterio.open(tifs[0]) as emb:
        source = next((tmp_path / "data").rglob(tifs[0].name.replace("_embedding.tif", ".tif")))
        with rasterio.open(source) as src:
            assert emb.count == TINY_DIM and emb.shape == (4, 4)  # 64 px / 16 px patches
            assert emb.crs == src.crs and emb.bounds == pytest.approx(src.bounds)


def test_a_layer_that_does_not_exist_is_named(tmp_path, config, capsys):
    assert main(["embed", "--config", config, "--layers", "12", "--output", str(tmp_path / "x")]) == 2
    assert "--layers" in capsys.readouterr().err


def test_large_scenes_stream_as_tiles_with_their_footprints(tmp_path, monkeypatch):
    """--tile 64 on 160 px scenes: 3 x 3 tiles per scene (the last ones aligned to the edge), each row the
    embedding of that window and its footprint; the scene is read one strip of tiles at a time."""
    import torch

    from terramind_ft.commands.embed import _prepare
    from terramind_ft.data.synthetic import make_sen1floods11
    from terramind_ft.inference import tiles as tiles_module

    config = sen1floods11_config(tmp_path)
    big = make_sen1floods11(tmp_path / "big", size=160, splits={"train": 1, "val": 1, "test": 2})
    config["data"]["init_args"] = big.datamodule_kwargs()
    cfg = write(config, tmp_path / "big.yaml")
    peaks = []
    original_iter = tiles_module.SceneTiles.__iter__

    def spying_iter(self):
        yield from original_iter(self)
        peaks.append((self.peak_strip_bytes, self.height * self.width))

    monkeypatch.setattr(tiles_module.SceneTiles, "__iter__", spying_iter)
    out = tmp_path / "tiles"
    assert main(["embed", "--config", cfg, "--split", "test", "--tile", "64", "--output", str(out)]) == 0
    rows = pq.read_table(out / "embeddings.parquet").to_pylist()
    assert len(rows) == 2 * 9 and len(peaks) == 2
    assert all(peak < pixels * 15 * 4 / 2 for peak, pixels in peaks)  # never the whole 15-band scene at once
    stems = sorted({r["file"] for r in rows})
    first = [r for r in rows if r["file"] == stems[0]]
    assert sorted(r["chip_id"].rsplit("_r", 1)[1] for r in first) == sorted(
        f"{r}_c{c}" for r in (0, 64, 96) for c in (0, 64, 96))
    with rasterio.open(stems[0]) as src:
        left, top = src.bounds.left, src.bounds.top
        res = src.res[0]
    corner = next(r for r in first if r["chip_id"].endswith("_r96_c64"))
    assert _polygon(corner["geometry"])[0] == pytest.approx((left + 64 * res, top - 160 * res))  # bottom-left
    # the row of a tile is the embedding of that window of the scene as the data module reads it
    _, encoder, dataset, _ = _prepare(["--config", cfg], "test", [-1], None)
    index = next(i for i, r in enumerate(dataset.records) if str(r.files["S2L1C"]) == stems[0])
    image = dataset[index]["image"]
    with torch.no_grad():
        window = {m: v[None, :, 96:160, 64:128] for m, v in image.items()}
        expected = encoder(window)[-1].mean(dim=1)[0].numpy()
    np.testing.assert_allclose(corner["embedding"], expected, rtol=1e-4, atol=1e-4)


def test_per_modality_columns_are_each_modalitys_tokens(tmp_path, config):
    """--per-modality: embedding_S2L1C and embedding_S1GRD, each the mean of that modality's tokens; their mean
    is the merged (mean-merge) embedding."""
    out = tmp_path / "per"
    assert main(["embed", "--config", config, "--split", "test", "--per-modality", "--output", str(out)]) == 0
    table = pq.read_table(out / "embeddings.parquet")
    names = [f.name for f in table.schema if f.name.startswith("embedding")]
    assert names == ["embedding_S2L1C", "embedding_S1GRD"]
    assert main(["embed", "--config", config, "--split", "test", "--output", str(tmp_path / "merged")]) == 0
    merged = pq.read_table(tmp_path / "merged" / "embeddings.parquet").to_pylist()
    for row, plain in zip(table.to_pylist(), merged):
        assert row["chip_id"] == plain["chip_id"]
        s2, s1 = np.array(row["embedding_S2L1C"]), np.array(row["embedding_S1GRD"])
        assert s2.shape == s1.shape == (TINY_DIM,) and not np.allclose(s2, s1)
        np.testing.assert_allclose((s2 + s1) / 2, plain["embedding"], rtol=1e-4, atol=1e-5)
    assert main(["embed", "--config", config, "--per-modality", "--pooling", "none",
                 "--output", str(tmp_path / "x")]) == 2


def test_a_rerun_with_other_settings_is_refused_not_mixed_in(tmp_path, config, capsys):
    """A rerun skips finished chips; with other pooling, layers or split it would have kept the old vectors."""
    out = tmp_path / "emb"
    assert main(["embed", "--config", config, "--split", "test", "--output", str(out)]) == 0
    first = pq.read_table(out / "embeddings.parquet").to_pylist()
    capsys.readouterr()
    for change, said in ((["--pooling", "max"], "pooling: 'mean' there, 'max' now"),
                         (["--layers", "5"], "layers: [-1] there, [5] now"),
                         (["--split", "predict"], "split: 'test' there, 'predict' now"),
                         # another seed initialises other random weights: other vectors (both said "random" before)
                         (["--seed_everything", "7"], "weights: 'random (init ")):
        args = ["embed", "--config", config, "--split", "test", "--output", str(out), *change]
        assert main(args) != 0
        err = capsys.readouterr().err
        assert said in err and "give another output folder" in err and "--output" in err
    assert pq.read_table(out / "embeddings.parquet").to_pylist() == first  # untouched
    # the same settings continue; a folder of parts without a record is refused, not joined
    assert main(["embed", "--config", config, "--split", "test", "--output", str(out)]) == 0
    (out / "embedding_settings.json").unlink()
    assert main(["embed", "--config", config, "--split", "test", "--output", str(out)]) != 0
    assert "without a record of how they were made" in capsys.readouterr().err
