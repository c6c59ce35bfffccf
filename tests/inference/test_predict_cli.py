"""``terramind-ft predict`` with tiled inference streams whole scenes from disk into georeferenced COGs."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import rasterio
import yaml

from fake_backbone import register
from terramind_ft.cli import main
from terramind_ft.data import dataset as dataset_module
from terramind_ft.data.synthetic import make_scene
from terramind_ft.inference import scene as scene_module
from terramind_ft.inference.geotiff import CLASS_NODATA

register()

HEIGHT, WIDTH = 2560, 1024
MODEL_ARGS = {  # a cheap stand-in backbone: this test is about the predict path, not the model
    "backbone": "fake_vit", "backbone_modalities": ["S2L2A", "S1GRD"], "backbone_in_chans": {"S2L2A": 12, "S1GRD": 2},
    "necks": [{"name": "SelectIndices", "indices": [3]}, {"name": "ReshapeTokensToImage"}],
    "decoder": "FCNDecoder", "decoder_channels": 16, "decoder_num_convs": 1, "num_classes": 2,
}


def _predict_config(tmp_path, data: dict | None = None, model: dict | None = None) -> str:
    """A predict config of the stand-in model on S2L2A + S1GRD; ``data`` / ``model``: more init arguments."""
    config = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "precision": "32-true", "enable_progress_bar": False,
                    "enable_model_summary": False, "default_root_dir": str(tmp_path / "run")},
        "data": {"class_path": "GenericMultiModalDataModule", "init_args": {
            "modalities": ["S2L2A", "S1GRD"], "task": "segmentation", "batch_size": 1, "num_classes": 2,
            "image_grep": "*.tif", **(data or {})}},
        "model": {"class_path": "SemanticSegmentationTask", "init_args": {"model_args": MODEL_ARGS, **(model or {})}},
    }
    cfg = tmp_path / "predict.yaml"
    cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(cfg)


def test_predict_streams_a_large_two_modality_scene_to_a_cog(tmp_path, monkeypatch):
    scene = make_scene(tmp_path / "scene", height=HEIGHT, width=WIDTH, resolutions={"S1GRD": 20.0}, label=False,
                       nodata_box=(1000, 300, 200, 100), compress=None)  # S1 on a 20 m grid: warped on the fly
    cfg = _predict_config(tmp_path, {"predict_data_root": scene.data_roots}, {
        "class_names": ["land", "water"], "output_on_inference": ["prediction", "probabilities"],
        "tiled_inference_parameters": {"crop": 256, "stride": 192, "delta": 8, "batch_size": 4}})

    def whole_file_read(*args, **kwargs):
        raise AssertionError("predict read a whole scene through the dataset instead of streaming it")

    monkeypatch.setattr(dataset_module.MultiModalDataset, "__getitem__", whole_file_read)
    peaks = []
    streaming = scene_module.predict_scene

    def traced_predict_scene(*args, **kwargs):  # memory of the streaming itself (not of Lightning's imports)
        tracemalloc.start()
        try:
            return streaming(*args, **kwargs)
        finally:
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()

    monkeypatch.setattr(scene_module, "predict_scene", traced_predict_scene)
    out = tmp_path / "preds"
    assert main(["predict", "--config", str(cfg), "--predict_output_dir", str(out)]) == 0

    manifest = json.loads((out / "predictions.json").read_text())
    source = str(scene.paths["S2L2A"])
    assert manifest == {source: [str(out / "scene_pred.tif"), str(out / "scene_probabilities.tif")]}
    with rasterio.open(source) as src, rasterio.open(out / "scene_pred.tif") as dst:
        assert (dst.crs, dst.transform, dst.shape) == (src.crs, src.transform, src.shape)
        assert dst.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG" and dst.nodata == CLASS_NODATA
        assert dst.descriptions[0] == "class (0=land, 1=water)"
        classes = dst.read(1)
    # The nodata box, plus the one-pixel ring where bilinear S1 warping touches the box's NaN pixels.
    assert (classes[1000:1200, 300:400] == CLASS_NODATA).all()
    assert (classes[998:1202, 298:402] == CLASS_NODATA).sum() == (classes == CLASS_NODATA).sum() <= 202 * 102
    with rasterio.open(out / "scene_probabilities.tif") as prob:
        assert prob.descriptions == ("land", "water") and prob.dtypes[0] == "float32"
        p = prob.read(window=((0, 512), (0, 512)))
    np.testing.assert_allclose(p.sum(0), 1.0, atol=1e-5)
    # Whole-scene float32 inputs would be 2560 * 1024 * 14 * 4 B = 147 MB. The streaming holds about two chip
    # rows (one chip row of float32 inputs: 256 * 1024 * 14 * 4 B = 14.7 MB) plus the model's input batch
    # (4 * 14 * 256 * 256 * 4 B = 14.7 MB), as in test_scene's memory test.
    chip_row, batch = 256 * WIDTH * 14 * 4, 4 * 14 * 256 * 256 * 4
    assert len(peaks) == 1 and peaks[0] < 2 * chip_row + batch < HEIGHT * WIDTH * 14 * 4 / 3, f"{peaks[0] / 1e6} MB"


def test_predict_on_one_scene_given_as_one_file_per_modality(tmp_path):
    """The user's path for a new scene: its files on the command line, no folder per modality to make."""
    scene = make_scene(tmp_path / "scene", height=160, width=128, label=False, name="my scene 2024")
    cfg = _predict_config(tmp_path)
    out = tmp_path / "preds"
    files = {m: str(p) for m, p in scene.paths.items()}
    for tiling in ([], ["--model.init_args.tiled_inference_parameters", "{crop: 64, stride: 48}"]):
        assert main(["predict", "--config", str(cfg), "--predict_output_dir", str(out),
                     "--data.init_args.predict_data_root", json.dumps(files), *tiling]) == 0
        assert json.loads((out / "predictions.json").read_text()) == {
            files["S2L2A"]: [str(out / "my scene 2024_pred.tif")]}
        with rasterio.open(files["S2L2A"]) as src, rasterio.open(out / "my scene 2024_pred.tif") as dst:
            assert (dst.crs, dst.transform, dst.shape) == (src.crs, src.transform, src.shape)
