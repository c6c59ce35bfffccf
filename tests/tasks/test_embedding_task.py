"""EmbeddingTask: `terramind-ft predict` writes embeddings from YAML (configs/embeddings.yaml), the same numbers as
`terramind-ft embed`, skipping finished chips on a rerun; TerraTorch's EmbeddingGenerationTask configs map onto it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml

from terramind_ft.cli import main

pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("pyproj")





def test_predict_writes_what_embed_writes_and_resumes(workdir, monkeypatch):
    fp32 = ["--trainer.precision", "32-true"]
    assert main(["predict", "--config", "configs/embeddings.yaml", *fp32]) == 0
    table = pq.read_table("runs/embeddings/embeddings/embeddings.parquet")
    assert table.num_rows == 5 and table.schema.field("embedding").type.list_size == 2 * 192
    manifest = json.loads(Path("runs/embeddings/predictions/predictions.json").read_text())
    assert sorted(Path(k).stem for k in manifest) == sorted(table.column("chip_id").to_pylist())
    assert all(v[0].endswith(f"embeddings.parquet#{Path(k).stem}") for k, v in manifest.items())
    # the same config through the command gives the same vectors
    assert main(["embed", "--config", "configs/embeddings.yaml", "--layers", "5,-1", "--output", "cmd"]) == 0
    by_command = {r["chip_id"]: r["embedding"] for r in pq.read_table("cmd/embeddings.parquet").to_pylist()}
    for row in table.to_pylist():
        np.testing.assert_allclose(row["embedding"], by_command[row["chip_id"]], rtol=1e-5, atol=1e-5)
    # a rerun embeds nothing again
    from terramind_ft.models.terramind import encoder as encoder_module

    def no_forward(*args, **kwargs):
        raise AssertionError("a finished chip was embedded again")

    monkeypatch.setattr(encoder_module.TerraMindEncoder, "forward", no_forward)
    assert main(["predict", "--config", "configs/embeddings.yaml", *fp32]) == 0
    assert pq.read_table("runs/embeddings/embeddings/embeddings.parquet").to_pylist() == table.to_pylist()


def test_terratorch_embedding_generation_config(workdir):
    config = yaml.safe_load(Path("configs/embeddings.yaml").read_text())
    config["model"] = {"class_path": "terratorch.tasks.EmbeddingGenerationTask", "init_args": {
        "model": "terramind_v1_tiny", "model_args": {"pretrained": False, "modalities": ["S2L2A", "S1RTC"],
                                                     "merge_method": "dict"},
        "output_format": "parquet", "embed_file_key": "filename", "output_dir": "tt_out", "layers": [-1],
        "embedding_pooling": "vit_max", "has_cls": False}}
    Path("tt.yaml").write_text(yaml.safe_dump(config))
    assert main(["predict", "--config", "tt.yaml"]) == 0
    table = pq.read_table("tt_out/embeddings.parquet")
    assert [f.name for f in table.schema if f.name.startswith("embedding")] == ["embedding_S2L2A", "embedding_S1RTC"]
    config["model"]["init_args"].update(embedding_pooling=None, output_format="tiff", output_dir="tt_tif",
                                        model_args={"pretrained": False, "modalities": ["S2L2A", "S1RTC"]})
    Path("tt.yaml").write_text(yaml.safe_dump(config))
    assert main(["predict", "--config", "tt.yaml"]) == 0
    tifs = sorted(Path("tt_tif").glob("*_embedding.tif"))
    assert len(tifs) == 5
    with rasterio.open(tifs[0]) as emb, rasterio.open(f"examples/terramesh/S2L2A/{tifs[0].name[:-14]}.tif") as src:
        assert emb.count == 192 and emb.shape == (14, 14) and emb.bounds == pytest.approx(src.bounds)


@pytest.mark.parametrize(("args", "key"), [
    ({"embedding_pooling": "vit_mean", "output_format": "tiff"}, "output_format"),
    ({"has_cls": True}, "has_cls"),
    ({"pooling": "median"}, "pooling"),
    ({"layers": [12]}, "layers"),
])
def test_config_errors_name_the_key(workdir, capsys, args, key):
    config = yaml.safe_load(Path("configs/embeddings.yaml").read_text())
    config["model"]["init_args"].update(args)
    Path("bad.yaml").write_text(yaml.safe_dump(config))
    assert main(["predict", "--config", "bad.yaml"]) == 2
    assert f"model.init_args.{key}" in capsys.readouterr().err


def test_fit_is_refused(workdir, capsys):
    assert main(["fit", "--config", "configs/embeddings.yaml"]) != 0
    assert "only predicts" in capsys.readouterr().err


def test_check_runs_a_predict_batch(workdir, capsys):
    assert main(["check", "--config", "configs/embeddings.yaml"]) == 0
    out = capsys.readouterr().out
    assert "[predict batch] inputs S2L2A [2, 12, 224, 224], S1RTC [2, 2, 224, 224] -> 12 layers" in out


def test_predict_into_a_folder_of_other_embeddings_is_refused(workdir, capsys):
    assert main(["predict", "--config", "configs/embeddings.yaml"]) == 0
    capsys.readouterr()
    assert main(["predict", "--config", "configs/embeddings.yaml", "--model.init_args.pooling", "max"]) != 0
    err = capsys.readouterr().err
    assert "model.init_args.output_dir" in err and "pooling: 'mean' there, 'max' now" in err
