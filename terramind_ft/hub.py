"""Where weights come from, and how they get into a model.

* :func:`resolve_checkpoint` turns ``pretrained=True`` (Hugging Face repo + file, fetched with
  ``huggingface_hub.hf_hub_download`` into its cache; ``HF_HUB_OFFLINE=1`` is honoured) or ``ckpt_path=``
  (a local ``.pt``/``.pth``/``.ckpt``/``.bin`` or ``.safetensors`` file) into a local path.
* :func:`read_state_dict` reads such a file into a flat ``{key: tensor}`` dict (``torch.load`` with
  ``weights_only=True`` on the CPU; ``state_dict``/``model`` wrappers of training checkpoints are unwrapped).
* :func:`load_checkpoint` copies checkpoint tensors into a model by key. Extra checkpoint keys and model keys
  the checkpoint lacks are tolerated; shape mismatches keep the model's value. Everything is written into one
  :class:`LoadReport`, and anything that leaves a learnable tensor at its initialisation without being
  declared expected is raised as ONE :class:`CheckpointWarning`, so weights are never random silently.
  Keys under ``strict_prefixes`` must load, or a :class:`~terramind_ft.errors.CheckpointError` is raised.

The backbone, TiM/generation and the tokenizers all load through these functions (``key_map`` maps a model key
to the checkpoint key it reads, e.g. ``sampler.model.k -> k``).
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from huggingface_hub import hf_hub_download
from torch import Tensor, nn

from terramind_ft.errors import CheckpointError, Notice

log = logging.getLogger(__name__)

TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
SAFETENSORS_SUFFIXES = (".safetensors",)
# Keys under which training checkpoints nest the weights (Lightning: 'state_dict'; many repos: 'model').
WRAPPER_KEYS = ("state_dict", "model", "module")


class CheckpointWarning(Notice):
    """Weights were left at their initialisation or skipped while loading a checkpoint."""


# --------------------------------------------------------------------------------------------------------------
# Finding the file


HUB_TIMEOUT_ENV = "TERRAMIND_FT_HUB_TIMEOUT"  # seconds for the reachability check (default 3)


def hub_unreachable() -> str:
    """Why the Hugging Face endpoint cannot be reached (one TCP connect, a few seconds at most), or ''."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    timeout = float(os.environ.get(HUB_TIMEOUT_ENV, "3"))
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        return (f"the Hugging Face hub {host}:{port} is unreachable ({type(exc).__name__}: {exc}; checked for "
                f"{timeout:g} s, {HUB_TIMEOUT_ENV} changes that); only the local cache was tried")
    return ""


def download(repo_id: str, filename: str, *, what: str = "model", key: str | None = "pretrained") -> Path:
    """Path of ``repo_id``/``filename`` in the Hugging Face cache, downloading it if needed and allowed."""
    # huggingface_hub reads HF_HUB_OFFLINE once at import; read it at call time so a later setting counts
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    reason = "HF_HUB_OFFLINE is set" if offline else ""
    if not offline:
        unreachable = hub_unreachable()
        if unreachable:  # one short attempt instead of the client's retries (~40 s): use the cache or say why
            offline, reason = True, unreachable
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, local_files_only=offline))
    except Exception as exc:  # huggingface_hub raises many types (offline, HTTP, connection, disk)
        reason = reason or f"{type(exc).__name__}: {exc}"
        raise CheckpointError(
            f"could not get the weights of {what} ({filename} from Hugging Face repo {repo_id}; {reason}). "
            f"Fix one of: (1) download the file on a machine with internet "
            f"(`hf download {repo_id} {filename}` or https://huggingface.co/{repo_id}) and pass "
            f"`ckpt_path: /path/to/{filename}`; (2) copy a Hugging Face cache that holds it to this machine "
            f"(HF_HOME / HF_HUB_CACHE) and keep HF_HUB_OFFLINE=1; (3) set `pretrained: false` to start from "
            f"random weights."
            + (f" [config key: {key}]" if key else "")
        ) from exc


def resolve_checkpoint(*, pretrained: bool, ckpt_path: str | os.PathLike | None, repo_id: str | None,
                       filename: str | None, what: str = "model") -> Path | None:
    """The local checkpoint file to load: ``ckpt_path`` if given, else the HF file if ``pretrained``, else None."""
    if ckpt_path:
        path = Path(ckpt_path).expanduser()
        if not path.is_file():
            raise CheckpointError(f"ckpt_path: checkpoint file {str(path)!r} for {what} does not exist "
                                  f"(expected a .pt/.pth/.ckpt or .safetensors file)")
        return path
    if pretrained:
        if not repo_id or not filename:
            raise CheckpointError(f"pretrained: {what} has no published weights; pass ckpt_path instead")
        return download(repo_id, filename, what=what)
    return None


# --------------------------------------------------------------------------------------------------------------
# Reading the file


def _unwrap(obj: object, path: Path) -> dict[str, Tensor]:
    for _ in range(3):  # {"state_dict": {...}} (Lightning), {"model": {...}}, or nested once more
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None) \
            if isinstance(obj, Mapping) else None
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a state dict (mapping of names to tensors), got {type(obj).__name__}")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    if not tensors:
        raise CheckpointError(f"{path}: holds no tensors (top-level keys: {', '.join(map(str, list(obj)[:10]))})")
    return tensors


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a checkpoint file into a flat ``{key: tensor}`` dict on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    try:
        try:  # memory-map so that a 1.5 GB checkpoint is not held twice while it is copied into the model
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) archives cannot be memory-mapped
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path}: cannot be read with torch.load(weights_only=True) ({type(exc).__name__}: {exc}). "
            f"Expected a torch.save'd state dict{' or a .safetensors file' if suffix not in TORCH_SUFFIXES else ''}."
        ) from exc
    return _unwrap(obj, path)


# --------------------------------------------------------------------------------------------------------------
# Copying tensors into a model


@dataclass
class LoadReport:
    """What :func:`load_checkpoint` did: which model keys were filled, skipped or left alone, and why."""

    source: str
    what: str = "model"
    loaded: list[str] = field(default_factory=list)  # model keys filled from the checkpoint
    missing: list[str] = field(default_factory=list)  # model keys without a checkpoint entry (problem)
    expected_missing: list[str] = field(default_factory=list)  # ... declared expected (new modality, ...)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)  # key, ckpt, model
    recomputed: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)  # fixed buffers
    unused: list[str] = field(default_factory=list)  # checkpoint keys no model key read (decoder, other modalities)
    stripped_prefix: str = ""
    notes: list[str] = field(default_factory=list)  # problems added by the caller (e.g. unknown bands)
    info: list[str] = field(default_factory=list)  # harmless facts added by the caller

    @property
    def ok(self) -> bool:
        """True when every learnable model tensor came from the checkpoint or was declared expected."""
        return not (self.missing or self.mismatched or self.notes)

    def summary(self) -> str:
        total = sum(map(len, (self.loaded, self.missing, self.expected_missing, self.mismatched, self.recomputed)))
        lines = [f"{self.what}: loaded {len(self.loaded)} of {total} tensors from {self.source}"
                 + (f" (stripped key prefix {self.stripped_prefix!r})" if self.stripped_prefix else "")]
        if self.missing:
            lines.append("  NOT in the checkpoint, left at their random initialisation:")
            lines += [f"    {line}" for line in group_keys(self.missing)]
        if self.mismatched:
            lines.append("  shape mismatch, checkpoint value skipped, random initialisation kept:")
            lines += [f"    {k}: checkpoint {list(c)} vs model {list(m)}" for k, c, m in self.mismatched]
        lines += [f"  {note}" for note in self.notes]
        if self.recomputed:
            lines.append("  fixed tables of another size, recomputed for this model (expected):")
            lines += [f"    {k}: checkpoint {list(c)} vs model {list(m)}" for k, c, m in self.recomputed]
        if self.expected_missing:
            lines.append("  not in the checkpoint, as expected (initialised by the model):")
            lines += [f"    {line}" for line in group_keys(self.expected_missing)]
        lines += [f"  {line}" for line in self.info]
        if self.unused:
            lines.append(f"  {len(self.unused)} checkpoint tensors not used by this model "
                         f"({', '.join(group_prefixes(self.unused))})")
        return "\n".join(lines)

    def emit(self) -> None:
        """One warning when something is left at its initialisation; otherwise a log line."""
        if self.ok:
            log.info(self.summary())
        else:
            warnings.warn(self.summary(), CheckpointWarning, stacklevel=3)


def group_keys(keys: Iterable[str]) -> list[str]:
    """``m.a``, ``m.b``, ``m.proj.weight`` -> ``m.{a, b, proj.weight}`` to keep reports short."""
    keys = list(keys)
    heads = {key.rpartition(".")[0] for key in keys} - {""}
    groups: dict[str, list[str]] = {}
    for key in keys:
        owners = [h for h in heads if key.startswith(h + ".")]
        head = min(owners, key=len) if owners else ""
        groups.setdefault(head, []).append(key[len(head) + 1:] if head else key)
    lines = []
    for head, tails in groups.items():
        joined = tails[0] if len(tails) == 1 else "{" + ", ".join(tails) + "}"
        lines.append(f"{head}.{joined}" if head else joined)
    return lines


def group_prefixes(keys: Iterable[str], depth: int = 1) -> list[str]:
    """Counts of keys per leading name component(s): ``['decoder.* (60)', ...]``."""
    counts: dict[str, int] = {}
    key_of: dict[str, str] = {}  # a prefix that is a whole key (``mask_token``) is shown without ``.*``
    for key in keys:
        prefix = ".".join(key.split(".")[:depth])
        counts[prefix] = counts.get(prefix, 0) + 1
        key_of.setdefault(prefix, key)
    return [f"{p}{'.*' if p != key_of[p] else ''} ({n})" for p, n in counts.items()]


def _matches(key: str, patterns: Iterable[str]) -> bool:
    return any(re.fullmatch(p, key) for p in patterns)


def _infer_prefix(model_keys: list[str], ckpt_keys: Iterable[str]) -> str:
    """A prefix (``model.backbone.``) whose removal makes more checkpoint keys match model keys, or ''."""
    model_set = set(model_keys)
    ckpt_keys = list(ckpt_keys)
    direct = sum(k in model_set for k in ckpt_keys)
    candidates: dict[str, int] = {}
    probes = model_keys[:: max(1, len(model_keys) // 16)]
    for ck in ckpt_keys:
        for mk in probes:
            if ck.endswith("." + mk):
                candidates.setdefault(ck[: len(ck) - len(mk)], 0)
    best, best_count = "", direct
    for prefix in candidates:
        count = sum(k[len(prefix):] in model_set for k in ckpt_keys if k.startswith(prefix))
        if count > best_count:
            best, best_count = prefix, count
    return best


def load_checkpoint(
    model: nn.Module,
    source: str | os.PathLike | Mapping[str, Tensor],
    *,
    key_map: Callable[[str], str | None] | Mapping[str, str] | None = None,
    strict_prefixes: Iterable[str] = (),
    expected_missing: Iterable[str] = (),
    recomputed_buffers: Iterable[str] = (r".*pos_emb",),
    auto_strip_prefix: bool = True,
    what: str | None = None,
    warn: bool = True,
) -> LoadReport:
    """Copy checkpoint tensors into ``model`` by key and report what happened.

    Args:
        model: the module to fill (its ``state_dict()`` keys are the targets).
        source: a checkpoint path (read with :func:`read_state_dict`) or an in-memory state dict.
        key_map: maps a model key to the checkpoint key it reads (callable returning None = no source, or a
            dict; keys not in the dict read themselves). Default: identical names.
        strict_prefixes: model keys starting with one of these must be loaded with the right shape, else
            :class:`CheckpointError` (e.g. ``("encoder.", "encoder_norm.")`` for a backbone).
        expected_missing: regexes (full match) of model keys that no checkpoint is expected to hold (new
            modalities, ``missing_mod_token``); they are listed but do not warn.
        recomputed_buffers: regexes of fixed buffers (sin-cos tables) whose size depends on the model's
            configuration; a mismatch keeps the model's freshly computed value and does not warn.
        auto_strip_prefix: if a common prefix (``model.``, ``model.encoder.``) makes more keys match, strip it.
        what: name of the model for messages.
        warn: emit the report (one :class:`CheckpointWarning` when something stays random); pass False to add
            notes first and call :meth:`LoadReport.emit` yourself.
    """
    what = what or type(model).__name__
    if isinstance(source, Mapping):
        state, source_name = dict(source), "state dict"
    else:
        state, source_name = read_state_dict(source), str(source)
    target = model.state_dict()
    model_keys = list(target)

    prefix = ""
    if auto_strip_prefix and key_map is None:
        prefix = _infer_prefix(model_keys, state)
        if prefix:
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}

    if key_map is None:
        def source_key(k: str) -> str | None:
            return k
    elif isinstance(key_map, Mapping):
        mapping = dict(key_map)

        def source_key(k: str) -> str | None:
            return mapping.get(k, k)
    else:
        source_key = key_map

    report = LoadReport(source=source_name, what=what, stripped_prefix=prefix)
    expected_missing, recomputed_buffers = list(expected_missing), list(recomputed_buffers)
    strict_prefixes = tuple(strict_prefixes)
    to_load: dict[str, Tensor] = {}
    used: set[str] = set()
    for key in model_keys:
        ckey = source_key(key)
        if ckey is None or ckey not in state:
            # fixed tables (sin-cos pos_emb) are computed by the model: absent from a file is harmless
            harmless = _matches(key, expected_missing) or _matches(key, recomputed_buffers)
            (report.expected_missing if harmless else report.missing).append(key)
            continue
        used.add(ckey)
        value, current = state[ckey], target[key]
        if tuple(value.shape) != tuple(current.shape):
            entry = (key, tuple(value.shape), tuple(current.shape))
            (report.recomputed if _matches(key, recomputed_buffers) else report.mismatched).append(entry)
            continue
        to_load[key] = value
        report.loaded.append(key)
    report.unused = [k for k in state if k not in used]

    failed = [k for k in report.missing + [m[0] for m in report.mismatched] if k.startswith(strict_prefixes)]
    if failed:
        raise CheckpointError(
            f"{source_name} does not fit {what}: {len(failed)} required tensors are missing or have another shape "
            f"(first: {', '.join(failed[:5])}). Is it a checkpoint of another model or size?\n{report.summary()}"
        )
    result = model.load_state_dict(to_load, strict=False)
    # load_state_dict must agree with our bookkeeping; anything else is a bug worth surfacing
    leftover = set(result.missing_keys) - set(report.missing) - set(report.expected_missing) \
        - {m[0] for m in report.mismatched} - {r[0] for r in report.recomputed}
    if leftover or result.unexpected_keys:
        raise CheckpointError(f"internal loading error for {what}: {sorted(leftover)} / {result.unexpected_keys}")
    if warn:
        report.emit()
    return report
