"""terramind-ft few-shot: seeded nearest-prototype episodes; statistics checked on constructed embeddings with a
known answer, and the command on generated classification chips."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from cli_configs import FAST_TRAINER, TINY_MODEL_ARGS
from terramind_ft.cli import main
from terramind_ft.commands.few_shot import run_episodes
from terramind_ft.data.synthetic import make_classification
from terramind_ft.errors import ConfigError


def _clusters(n_classes=6, per_class=20, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, 32))
    x = np.concatenate([c + spread * rng.normal(size=(per_class, 32)) for c in centres])
    return x, np.repeat(np.arange(n_classes), per_class)


def test_separated_classes_are_always_right():
    x, y = _clusters()
    result = run_episodes(x, y, ways=5, shots=1, queries=5, episodes=50)
    assert result.accuracy == 1.0 and result.ci95 == 0.0
    assert set(result.per_class.values()) == {1.0}


def test_noise_embeddings_score_chance_within_the_interval():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(300, 64)), np.repeat(np.arange(10), 30)
    result = run_episodes(x, y, ways=5, shots=1, queries=10, episodes=400, seed=3)
    assert abs(result.accuracy - 0.2) < 3 * result.ci95 + 0.01  # chance, 1/ways
    assert 0 < result.ci95 < 0.02


def test_episodes_are_seeded_and_use_disjoint_support_and_queries():
    x, y = _clusters(spread=2.0)  # overlapping classes: accuracy between chance and 1
    a = run_episodes(x, y, ways=3, shots=2, queries=4, episodes=30, seed=7)
    b = run_episodes(x, y, ways=3, shots=2, queries=4, episodes=30, seed=7)
    c = run_episodes(x, y, ways=3, shots=2, queries=4, episodes=30, seed=8)
    assert a.episode_accuracies == b.episode_accuracies != c.episode_accuracies
    # a 1-shot episode whose only query would be its support chip would score 1: with 2 chips per class the
    # query is always the other chip, so near-duplicates score 1 and far ones less
    x2 = np.array([[1.0, 0], [1.0, 0.01], [0, 1.0], [0.01, 1.0]])
    assert run_episodes(x2, [0, 0, 1, 1], ways=2, shots=1, queries=1, episodes=10).accuracy == 1.0


def test_too_few_classes_name_the_option():
    x, y = _clusters(n_classes=3)
    with pytest.raises(ConfigError, match=r"--ways.*5-way 1-shot episodes need 5 classes"):
        run_episodes(x, y, ways=5, shots=1, queries=5, episodes=5)


def test_few_shot_command_writes_metrics(tmp_path):
    ds = make_classification(tmp_path / "data", splits={"train": 4, "val": 2, "test": 12}, num_classes=3,
                             class_names=["cropland", "forest", "water"])
    model_args = {**TINY_MODEL_ARGS, "backbone_modalities": list(ds.modalities),
                  "necks": [{"name": "AggregateTokens", "pooling": "mean"}], "decoder": "IdentityDecoder",
                  "num_classes": 3}
    model_args.pop("decoder_channels")
    config = {"seed_everything": 0, "trainer": {**FAST_TRAINER, "default_root_dir": str(tmp_path / "run")},
              "data": {"class_path": "GenericMultiModalDataModule", "init_args": ds.datamodule_kwargs()},
              "model": {"class_path": "ClassificationTask", "init_args": {"model_args": model_args}}}
    cfg = tmp_path / "cls.yaml"
    cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    args = ["few-shot", "--config", str(cfg), "--ways", "3", "--shots", "1", "--queries", "2", "--episodes", "20"]
    assert main(args) == 0
    doc = json.loads((tmp_path / "run" / "few_shot" / "metrics.json").read_text())["few_shot"]
    assert doc["ways"] == 3 and doc["episodes"] == 20 and doc["chips"] == 12
    assert 0.0 <= doc["accuracy"] <= 1.0 and doc["ci95"] >= 0 and doc["chance"] == pytest.approx(1 / 3)
    assert set(doc["per_class"]) <= {"cropland", "forest", "water"}
    assert main(args) == 0  # deterministic: the same episodes on the same embeddings
    again = json.loads((tmp_path / "run" / "few_shot" / "metrics.json").read_text())["few_shot"]
    assert again["accuracy"] == doc["accuracy"]
    # after fit, --ckpt_path best scores the fine-tuned backbone, and metrics.json says so
    assert main(["fit", "--config", str(cfg)]) == 0
    assert main([*args, "--ckpt_path", "best"]) == 0
    fitted = json.loads((tmp_path / "run" / "few_shot" / "metrics.json").read_text())["few_shot"]
    assert doc["weights"].startswith("random (init ")
    assert "fine-tuned ClassificationTask" in fitted["weights"] and "best.ckpt" in fitted["weights"]
