"""``terramind-ft fit|validate|test|predict --help``: every key a config takes, ours first, in about a second.

LightningCLI's own help builds the whole parser (importing torch, Lightning and every class it can name): 540
lines, 8-13 s, the Trainer first and the model's keys nowhere. This help reads the signatures and docstrings
straight from the source files (``ast``, nothing imported), so it cannot drift from the code: the run options,
then the task's arguments (with the ``model_args`` keys), the data module's, and the Trainer's, each with its
default and the first sentence of its documentation. ``--help-lightning`` shows LightningCLI's help;
``--model.help CLASS`` / ``--data.help CLASS`` every argument of one class with its type.
"""

from __future__ import annotations

import ast
import importlib.util
import textwrap
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
WIDTH = 118

CKPT_PATH_HELP = ("a .ckpt file, or 'best' / 'last': this run folder's checkpoints/best.ckpt (best by the task's "
                  "monitor) and checkpoints/last.ckpt (the last epoch; fit --ckpt_path last resumes). The checkpoint "
                  "gives the model's structure; tiling, outputs and previews come from the config and the command "
                  "line. Checked before anything is written.")

RUN_OPTIONS = (
    ("--config, -c FILE", "a YAML config (repeatable: later files win); TerraTorch configs are mapped"),
    ("--ckpt_path best|last|FILE", CKPT_PATH_HELP),
    ("--overwrite true", "fit: replace an earlier run's checkpoints in the run folder (default: refuse)"),
    ("--predict_output_dir DIR", "where predict writes its GeoTIFFs (default: <default_root_dir>/predictions)"),
    ("--out_dtype T", "predict: class maps as T instead of uint8 (int16: TerraTorch's default, nodata -1)"),
    ("--float32_matmul_precision P", "highest (default) | high | medium: torch's float32 matmul precision"),
    ("--custom_modules_path DIR", "a folder of your modules, imported before the config is parsed"),
    ("--seed_everything N", "the random seed (default: a fresh one, saved in config.yaml)"),
    ("--optimizer / --lr_scheduler", "a torch.optim class (class_path + init_args); lr_overrides still apply"),
    ("--print_config", "print the resolved config and exit"),
    ("--debug", "show the traceback of an error"),
)
TASKS = (("SemanticSegmentationTask", "segmentation.py"), ("ClassificationTask", "classification.py"),
         ("PixelwiseRegressionTask", "regression.py"))


def _doc_args(doc: str | None) -> dict[str, str]:
    """{argument: its text} from a Google-style ``Args:`` block (``a / b: text`` documents both)."""
    out: dict[str, str] = {}
    if not doc:
        return out
    lines = textwrap.dedent(doc).splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Args:")
    except StopIteration:
        return out
    indent, names, text = None, [], []

    def flush() -> None:
        for name in names:
            out[name] = " ".join(text).strip()

    for line in lines[start + 1:]:
        if not line.strip():
            continue
        width = len(line) - len(line.lstrip())
        if indent is None:
            indent = width
        if width < indent:
            break
        if width == indent and ":" in line:
            flush()
            head, _, rest = line.strip().partition(":")
            names, text = [n.strip().strip("`") for n in head.split("/")], [rest.strip()]
        else:
            text.append(line.strip())
    flush()
    return out


def _init_of(path: Path, class_name: str) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """[(argument, default source)] of ``class_name.__init__`` and its documented arguments (class + init)."""
    tree = ast.parse(path.read_text())
    cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == class_name)
    init = next((n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
    docs = _doc_args(ast.get_docstring(cls))
    if init is None:
        return [], docs
    docs.update(_doc_args(ast.get_docstring(init)))
    args = init.args
    out = []
    positional = args.posonlyargs + args.args
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    for a, d in list(zip(positional, defaults, strict=True)) + list(zip(args.kwonlyargs, args.kw_defaults,
                                                                         strict=True)):
        if a.arg != "self":
            out.append((a.arg, ast.unparse(d) if d is not None else "required"))
    return out, docs


def _plain(text: str) -> str:
    return " ".join(text.replace("``", "").split())


def _section(title: str, rows: list[tuple[str, str]], key_width: int = 34) -> list[str]:
    lines = ["", title]
    for key, text in rows:
        body = textwrap.wrap(text, WIDTH - key_width - 4) or [""]
        if len(key) > key_width:
            lines.append(f"  {key}")
            lines += [" " * (key_width + 4) + b for b in body]
        else:
            lines.append(f"  {key:<{key_width}}  {body[0]}")
            lines += [" " * (key_width + 4) + b for b in body[1:]]
    return lines


def _arguments(prefix: str, path: Path, class_name: str, extra: list[tuple[Path, str]] = (),
               skip: tuple[str, ...] = ("args", "kwargs")) -> list[tuple[str, str]]:
    params, docs = _init_of(path, class_name)
    for other_path, other in extra:  # the base class's arguments first, then the subclass's own
        more, more_docs = _init_of(other_path, other)
        params = more + [p for p in params if p[0] not in {q for q, _ in more}]
        docs = {**more_docs, **docs}
    rows = []
    for name, default in params:
        if name in skip:
            continue
        doc = _plain(docs.get(name, ""))
        rows.append((f"{prefix}{name}", f"[{default}] {doc}".strip()))
    return rows


def _trainer_rows() -> list[tuple[str, str]]:
    spec = importlib.util.find_spec("lightning")  # found, not imported
    if spec is None or spec.origin is None:
        return [("--trainer.<key>", "Lightning's Trainer arguments (lightning is not installed)")]
    path = Path(spec.origin).parent / "pytorch" / "trainer" / "trainer.py"
    rows = _arguments("--trainer.", path, "Trainer")
    defaults = {"num_sanity_val_steps": "1 (one sample of one batch; Lightning: 2 batches)",
                "precision": "bf16-mixed where native, else 32-true"}
    return [(k, f"[{defaults[k.split('.')[-1]]}] {t.split('] ', 1)[-1]}") if k.split(".")[-1] in defaults else (k, t)
            for k, t in rows]


def subcommand_help(subcommand: str) -> str:
    tasks = PACKAGE / "tasks"
    lines = [f"usage: terramind-ft {subcommand} --config X.yaml [--<section>.<key> VALUE ...] [--debug]", "",
             "Every key below can be given in the YAML config or on the command line (dotted). Defaults in [].",
             "More: --model.help SemanticSegmentationTask / --data.help GenericMultiModalDataModule (every argument "
             "with its type), --help-lightning (LightningCLI's own help, ~540 lines), README.md."]
    lines += _section("Run options (terramind-ft):", list(RUN_OPTIONS))
    task_rows = _arguments("--model.init_args.", tasks / "segmentation.py", "SemanticSegmentationTask",
                           extra=[(tasks / "base.py", "BaseTask")])
    lines += _section("Task: --model.class_path " + " | ".join(n for n, _ in TASKS) + "; --model.init_args.<key> "
                      "(SemanticSegmentationTask's, the others differ in loss defaults and outputs):", task_rows)
    factory = ast.get_docstring(ast.parse((PACKAGE / "models" / "factory.py").read_text())) or ""
    block = factory.split("::", 1)[1].lstrip("\n").split("\n\n", 1)[0] if "::" in factory else ""
    model_args = [(f"  {line.strip().split(':', 1)[0]}", line.split("#", 1)[1].strip() if "#" in line else "")
                  for line in block.splitlines() if line.strip() and not line.startswith("      ")]
    lines += _section("  model_args keys (TerraTorch's EncoderDecoderFactory; backbone_<x> / decoder_<x> / head_<x> "
                      "go to that part as <x>):", [(k, v) for k, v in model_args if k.strip()])
    if subcommand == "predict":
        lines += _section("Embeddings instead of maps: --model.class_path EmbeddingTask; --model.init_args.<key> "
                          "(configs/embeddings.yaml):",
                          _arguments("--model.init_args.", tasks / "embedding.py", "EmbeddingTask"))
    lines += _section("Data: --data.class_path GenericMultiModalDataModule; --data.init_args.<key>:",
                      _arguments("--data.init_args.", PACKAGE / "data" / "datamodule.py",
                                 "GenericMultiModalDataModule"))
    lines += _section("Trainer (Lightning): --trainer.<key>:", _trainer_rows())
    return "\n".join(lines) + "\n"
