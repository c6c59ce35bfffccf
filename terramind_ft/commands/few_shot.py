"""``terramind-ft few-shot --config X.yaml --ways 5 --shots 1 --episodes 100``: few-shot classification from
TerraMind embeddings, as the paper evaluates it (1-shot 5-way on EuroSAT and METER-ML).

The embeddings (:func:`terramind_ft.commands.embed.embed_split`) of a labelled classification split are
L2-normalised; each seeded episode draws ``ways`` classes, ``shots`` support chips and ``queries`` query chips per
class (without overlap), averages each class's support into a prototype, and labels every query with its nearest
prototype (cosine similarity). Reported: the mean accuracy over episodes with a 95 % interval (1.96 standard
errors), the accuracy per class (over every query of that class), into ``<output>/metrics.json``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from terramind_ft.errors import ConfigError


@dataclass
class FewShotResult:
    accuracy: float
    ci95: float
    episode_accuracies: list[float]
    per_class: dict[str, float]


def run_episodes(vectors: np.ndarray, labels: Sequence[int], *, ways: int, shots: int, queries: int,
                 episodes: int, seed: int = 0, class_names: Sequence[str] | None = None) -> FewShotResult:
    """Nearest-prototype accuracy over ``episodes`` seeded random ``ways``-way ``shots``-shot episodes."""
    labels = np.asarray(labels)
    x = np.asarray(vectors, np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12)
    by_class = {int(c): np.flatnonzero(labels == c) for c in np.unique(labels)}
    eligible = sorted(c for c, idx in by_class.items() if len(idx) >= shots + 1)
    if ways < 2:
        raise ConfigError(f"an episode needs at least 2 ways, got {ways}", key="--ways")
    if shots < 1 or queries < 1 or episodes < 1:
        raise ConfigError("--shots, --queries and --episodes must be >= 1", key="--shots")
    if len(eligible) < ways:
        counts = {(class_names[c] if class_names else c): len(i) for c, i in by_class.items()}
        raise ConfigError(f"{ways}-way {shots}-shot episodes need {ways} classes with at least {shots + 1} chips "
                          f"(shots + one query); the split has {counts}. Lower --ways or --shots", key="--ways")
    rng = np.random.default_rng(seed)
    accuracies: list[float] = []
    hits: dict[int, list[int]] = {c: [0, 0] for c in eligible}
    for _ in range(episodes):
        classes = rng.choice(eligible, size=ways, replace=False)
        prototypes, query_idx, query_cls = [], [], []
        for c in classes:
            order = rng.permutation(by_class[int(c)])
            support, query = order[:shots], order[shots:shots + queries]
            prototypes.append(x[support].mean(axis=0))
            query_idx += list(query)
            query_cls += [int(c)] * len(query)
        protos = np.stack(prototypes)
        protos /= np.linalg.norm(protos, axis=1, keepdims=True).clip(min=1e-12)
        predicted = classes[np.argmax(x[query_idx] @ protos.T, axis=1)]
        correct = predicted == np.asarray(query_cls)
        accuracies.append(float(correct.mean()))
        for c, ok in zip(query_cls, correct, strict=True):
            hits[c][0] += int(ok)
            hits[c][1] += 1
    mean = float(np.mean(accuracies))
    ci = 1.96 * float(np.std(accuracies, ddof=1)) / math.sqrt(episodes) if episodes > 1 else float("nan")
    per_class = {(class_names[c] if class_names else str(c)): ok / n for c, (ok, n) in hits.items() if n}
    return FewShotResult(mean, ci, accuracies, per_class)


def main(argv: list[str] | None = None) -> int:
    from terramind_ft.commands.embed import POOLINGS, add_embedding_arguments, backbone_of, embed_split, \
        parse_layers
    from terramind_ft.inference.embeddings import backbone_weights
    from terramind_ft.io import atomic_write_json

    parser = argparse.ArgumentParser(
        prog="terramind-ft few-shot",
        description="Few-shot classification from TerraMind embeddings: seeded nearest-prototype episodes over a "
                    "labelled split; mean accuracy with a 95 %% interval and per-class accuracy in metrics.json.")
    add_embedding_arguments(parser, ("train", "val", "test"), "test", tuple(p for p in POOLINGS if p != "none"))
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--queries", type=int, default=15, help="query chips per class and episode (fewer where "
                        "a class has fewer left)")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", "-o", type=Path, default=None,
                        help="folder of metrics.json (default: <trainer.default_root_dir>/few_shot)")
    args, overrides = parser.parse_known_args(argv)
    config_args = [a for c in args.config for a in ("--config", c)] + overrides
    vectors, ids, targets, cli = embed_split(config_args, args.split, parse_layers(args.layers), args.pooling,
                                             ckpt=args.ckpt_path)
    if any(t is None for t in targets):
        raise ConfigError("few-shot needs a classification data module (one class per chip): set "
                          "data.init_args.task: classification", key="data.init_args.task")
    names: Any = getattr(cli.datamodule, "class_names", None)
    result = run_episodes(vectors, targets, ways=args.ways, shots=args.shots, queries=args.queries,
                          episodes=args.episodes, seed=args.seed, class_names=names)
    output = args.output or Path(cli.trainer.default_root_dir) / "few_shot"
    doc = {"few_shot": {"split": args.split, "chips": len(ids), "ways": args.ways, "shots": args.shots,
                        "queries": args.queries, "episodes": args.episodes, "seed": args.seed,
                        "layers": parse_layers(args.layers), "pooling": args.pooling,
                        "accuracy": result.accuracy, "ci95": result.ci95, "per_class": result.per_class,
                        "chance": 1.0 / args.ways}}
    weights = backbone_weights(backbone_of(cli.model))
    doc["few_shot"]["weights"] = weights
    path = atomic_write_json(Path(output) / "metrics.json", doc, indent=1)
    marker = "; RANDOM WEIGHTS: not TerraMind's embeddings" if weights.startswith("random") else ""
    print(f"few-shot {args.ways}-way {args.shots}-shot over {args.episodes} episodes: accuracy "
          f"{result.accuracy:.3f} ± {result.ci95:.3f} (95 %; chance {1 / args.ways:.3f}){marker} -> {path}", flush=True)
    return 0
