"""Full fine-tuning vs LoRA of the same config: seconds per step and peak memory, one process per run.

    python scripts/bench_lora.py                      # the base Sen1Floods11 config, 224 px, batch 4
    python scripts/bench_lora.py --config configs/terratorch/terramind_v1_tiny_sen1floods11.yaml --size 512

Both runs are ``terramind-ft fit`` on the same generated data (see ``bench_train.py``, whose runner this uses):
``full`` trains every weight (``freeze_backbone: false``); ``lora`` adds ``model_args.peft_config`` (LoRA r=16 on
``qkv.q_linear``, ``qkv.v_linear``, ``mlp.fc1``, ``mlp.fc2`` after ``replace_qkv: qkv``, TerraTorch's recipe). The
table prints the trainable parameters, s/step (forward, backward, optimiser), samples/s, peak RSS and the ratios
LoRA / full. Needs ``pip install 'terramind-ft[peft]'``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_train import run_tool  # noqa: E402  (the shared runner of one timed fit)

DEFAULT_CONFIG = HERE.parent / "configs" / "terratorch" / "terramind_v1_base_sen1floods11.yaml"
LORA = {"method": "LORA", "replace_qkv": "qkv",
        "peft_config_kwargs": {"target_modules": ["qkv.q_linear", "qkv.v_linear", "mlp.fc1", "mlp.fc2"],
                               "r": 16, "lora_alpha": 16}}


def _trainable(config: dict) -> tuple[int, int]:
    from terramind_ft.cli.keys import _resolve_class
    from terramind_ft.cli.terratorch import translate_terratorch

    translated, _ = translate_terratorch(config)
    model = translated["model"]
    task = _resolve_class(model["class_path"])(**model["init_args"])
    total = sum(p.numel() for p in task.parameters())
    return sum(p.numel() for p in task.parameters() if p.requires_grad), total


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    p.add_argument("--precision", default="16-mixed")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--steps", type=int, default=3, help="timed steps")
    p.add_argument("--warmup", type=int, default=1)
    args = p.parse_args()

    from terramind_ft.data.synthetic import make_sen1floods11

    work = Path(tempfile.mkdtemp(prefix="bench_lora_"))
    raw = yaml.safe_load(args.config.read_text())
    init = raw["model"]["init_args"]
    init["model_args"]["backbone_pretrained"] = False  # nothing can be downloaded; speed does not depend on it
    init["freeze_backbone"] = False
    variants = {"full": raw, "lora": yaml.safe_load(yaml.safe_dump(raw))}
    variants["lora"]["model"]["init_args"]["model_args"]["peft_config"] = LORA
    n = (args.warmup + args.steps) * args.batch_size
    data = make_sen1floods11(work / "data", size=args.size, splits={"train": n, "val": args.batch_size, "test": 1},
                             compress=None)
    rows = {}
    for name, config in variants.items():
        path = work / f"{name}_{args.config.name}"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        result = run_tool([sys.executable, "-m", "terramind_ft.cli"], path, data, args, args.precision, work, [])
        rows[name] = (result, _trainable(config))
    print(f"\n{args.config.name}: {args.size} px, batch {args.batch_size}, {args.precision}, {args.steps} timed steps "
          f"after {args.warmup}, random weights, {os.cpu_count()} CPUs")
    print("| run | trainable parameters | s/step | samples/s | peak RSS |")
    print("|---|---|---|---|---|")
    for name, (r, (trainable, total)) in rows.items():
        print(f"| {name} | {trainable / 1e6:.1f} M of {total / 1e6:.1f} M | {r['s_per_step']:.2f} | "
              f"{r['samples_per_s']:.2f} | {r['peak_rss_gib']:.2f} GiB |")
    full, lora = rows["full"][0], rows["lora"][0]
    print(f"LoRA / full: {lora['s_per_step'] / full['s_per_step']:.2f}x the time per step, "
          f"{lora['peak_rss_gib'] / full['peak_rss_gib']:.2f}x the peak RSS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
