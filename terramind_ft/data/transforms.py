"""Joint augmentations: one random draw applied identically to every modality, the mask and the nodata mask.

Our YAML schema is small and stable (it never depends on a third-party constructor signature)::

    train_transform:
      - d4                          # random element of the dihedral group (flips + 90 degree rotations)
      - hflip                       # or {hflip: {p: 0.5}}; also vflip, rot90, transpose
      - random_crop: 224            # or {random_crop: [224, 224]} / {random_crop: {size: 224}}
    val_transform:
      - center_crop: 224            # also resize: 224 (bilinear for images, nearest for masks)

TerraTorch-style entries are accepted too and mapped to ours with a one-line :class:`TransformNotice`
(albumentations is never imported)::

      - class_path: albumentations.D4
      - class_path: albumentations.RandomCrop
        init_args: {height: 224, width: 224}
      - class_path: ToTensorV2      # a no-op: our samples are tensors already

Every transform works on a dict of ``[C, H, W]`` tensors; keys listed in ``discrete`` (label and nodata masks)
are resized with nearest neighbour, everything else bilinearly. Standardisation is not a transform: the
dataset does it, before augmentation, so nodata replacement is always in standardised units.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from terramind_ft.errors import ConfigError, Notice, did_you_mean


class TransformNotice(Notice):
    """A TerraTorch/albumentations transform entry was mapped to a terramind-ft transform."""


Tensors = dict[str, torch.Tensor]


def _size2(value: Any, *, key: str, name: str) -> tuple[int, int]:
    if isinstance(value, Mapping):
        if "size" in value:
            value = value["size"]
        elif "height" in value and "width" in value:
            value = (value["height"], value["width"])
        else:
            raise ConfigError(f"{name} needs a size: '{name}: 224', '{name}: [224, 224]' or "
                              f"'{name}: {{height: 224, width: 224}}', got {dict(value)}", key=key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise ConfigError(f"{name} size must be a positive int or [height, width], got {value!r}", key=key)
    return int(value[0]), int(value[1])


def _probability(args: Mapping[str, Any], default: float, *, key: str, name: str) -> float:
    p = args.get("p", default)
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
        raise ConfigError(f"{name}: p must be a number in [0, 1], got {p!r}", key=key)
    return float(p)


def _check_args(args: Mapping[str, Any], allowed: Sequence[str], *, key: str, name: str) -> None:
    unknown = [a for a in args if a not in allowed]
    if unknown:
        raise ConfigError(f"{name} does not take {unknown}; it takes {list(allowed) or 'no arguments'}", key=key)


def _random() -> float:
    return float(torch.rand(()))


def _square(tensors: Tensors) -> bool:
    h, w = next(iter(tensors.values())).shape[-2:]
    return h == w


# ------------------------------------------------------------------------------------------------ transforms


class JointTransform:
    """Base class: ``__call__(tensors, discrete)`` returns the transformed dict; random draws are shared."""

    changes_grid = False  # True for crops and resizes (never applied at predict time)

    def __call__(self, tensors: Tensors, discrete: frozenset[str] = frozenset()) -> Tensors:
        raise NotImplementedError

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return height, width

    def check_input(self, height: int, width: int, *, key: str) -> None:
        """Raise ConfigError when an input of this size cannot be transformed."""


class Flip(JointTransform):
    def __init__(self, dim: int, p: float = 0.5):
        self.dim, self.p = dim, p

    def __call__(self, tensors, discrete=frozenset()):
        if _random() >= self.p:
            return tensors
        return {k: v.flip(self.dim) for k, v in tensors.items()}

    def __repr__(self) -> str:
        return f"{'hflip' if self.dim == -1 else 'vflip'}(p={self.p})"


class Rot90(JointTransform):
    """Rotate by a random multiple of 90 degrees (with probability p); non-square inputs only by 180 degrees,
    so that every sample of a batch keeps its shape."""

    def __init__(self, p: float = 1.0):
        self.p = p

    def __call__(self, tensors, discrete=frozenset()):
        if _random() >= self.p:
            return tensors
        k = 2 if not _square(tensors) else int(torch.randint(1, 4, ()))
        return {key: torch.rot90(v, k, dims=(-2, -1)) for key, v in tensors.items()}

    def __repr__(self) -> str:
        return f"rot90(p={self.p})"


class Transpose(JointTransform):
    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, tensors, discrete=frozenset()):
        if _random() >= self.p or not _square(tensors):  # a transpose would change a non-square shape
            return tensors
        return {k: v.transpose(-2, -1) for k, v in tensors.items()}

    def __repr__(self) -> str:
        return f"transpose(p={self.p})"


class D4(JointTransform):
    """A uniformly random element of the dihedral group D4 (8 flips/rotations), with probability p. Non-square
    inputs draw from the 4 elements that keep their shape."""

    def __init__(self, p: float = 1.0):
        self.p = p

    def __call__(self, tensors, discrete=frozenset()):
        if _random() >= self.p:
            return tensors
        if _square(tensors):
            element = int(torch.randint(0, 8, ()))
            k, flip = element % 4, element >= 4
        else:  # the four elements that keep a non-square shape: identity, rot180 and the two flips
            element = int(torch.randint(0, 4, ()))
            k, flip = 2 * (element % 2), element >= 2
        out = {}
        for key, v in tensors.items():
            v = torch.rot90(v, k, dims=(-2, -1)) if k else v
            out[key] = v.flip(-1) if flip else v
        return out

    def __repr__(self) -> str:
        return f"d4(p={self.p})"


class RandomCrop(JointTransform):
    changes_grid = True

    def __init__(self, size: tuple[int, int]):
        self.size = size

    def check_input(self, height, width, *, key):
        if height < self.size[0] or width < self.size[1]:
            raise ConfigError(f"random_crop to {self.size[0]}x{self.size[1]} but the rasters are {height}x{width}; "
                              "choose a crop no larger than the rasters", key=key)

    def output_size(self, height, width):
        return self.size

    def __call__(self, tensors, discrete=frozenset()):
        h, w = next(iter(tensors.values())).shape[-2:]
        self.check_input(h, w, key="random_crop")
        top = int(torch.randint(0, h - self.size[0] + 1, ()))
        left = int(torch.randint(0, w - self.size[1] + 1, ()))
        return {k: v[..., top : top + self.size[0], left : left + self.size[1]] for k, v in tensors.items()}

    def __repr__(self) -> str:
        return f"random_crop(size={list(self.size)})"


class CenterCrop(RandomCrop):
    def __call__(self, tensors, discrete=frozenset()):
        h, w = next(iter(tensors.values())).shape[-2:]
        self.check_input(h, w, key="center_crop")
        top, left = (h - self.size[0]) // 2, (w - self.size[1]) // 2
        return {k: v[..., top : top + self.size[0], left : left + self.size[1]] for k, v in tensors.items()}

    def check_input(self, height, width, *, key):
        if height < self.size[0] or width < self.size[1]:
            raise ConfigError(f"center_crop to {self.size[0]}x{self.size[1]} but the rasters are {height}x{width}",
                              key=key)

    def __repr__(self) -> str:
        return f"center_crop(size={list(self.size)})"


class Resize(JointTransform):
    changes_grid = True

    def __init__(self, size: tuple[int, int]):
        self.size = size

    def output_size(self, height, width):
        return self.size

    def __call__(self, tensors, discrete=frozenset()):
        out = {}
        for k, v in tensors.items():
            if v.shape[-2:] == self.size:
                out[k] = v
                continue
            batched = v[None].float() if v.ndim == 3 else v[None, None].float()
            if k in discrete:
                resized = F.interpolate(batched, size=self.size, mode="nearest-exact")
            else:
                resized = F.interpolate(batched, size=self.size, mode="bilinear", align_corners=False, antialias=True)
            resized = resized[0] if v.ndim == 3 else resized[0, 0]
            out[k] = resized.to(v.dtype)
        return out

    def __repr__(self) -> str:
        return f"resize(size={list(self.size)})"


class Compose(JointTransform):
    def __init__(self, transforms: Sequence[JointTransform]):
        self.transforms = list(transforms)

    @property
    def changes_grid(self) -> bool:  # type: ignore[override]
        return any(t.changes_grid for t in self.transforms)

    def __call__(self, tensors, discrete=frozenset()):
        for t in self.transforms:
            tensors = t(tensors, discrete)
        return tensors

    def output_size(self, height, width):
        for t in self.transforms:
            height, width = t.output_size(height, width)
        return height, width

    def check_input(self, height, width, *, key):
        for t in self.transforms:
            t.check_input(height, width, key=key)
            height, width = t.output_size(height, width)

    def __len__(self) -> int:
        return len(self.transforms)

    def __repr__(self) -> str:
        return "[" + ", ".join(map(repr, self.transforms)) + "]"


# --------------------------------------------------------------------------------------------------- builder


def _build_flip(dim: int, name: str) -> Callable[[dict, str], JointTransform]:
    def build(args: dict, key: str) -> JointTransform:
        _check_args(args, ["p"], key=key, name=name)
        return Flip(dim, _probability(args, 0.5, key=key, name=name))
    return build


def _build_p(cls: type, default: float, name: str) -> Callable[[dict, str], JointTransform]:
    def build(args: dict, key: str) -> JointTransform:
        _check_args(args, ["p"], key=key, name=name)
        return cls(_probability(args, default, key=key, name=name))
    return build


def _build_sized(cls: type, name: str) -> Callable[[Any, str], JointTransform]:
    def build(args: Any, key: str) -> JointTransform:
        if isinstance(args, Mapping):
            _check_args(args, ["size", "height", "width"], key=key, name=name)
        return cls(_size2(args, key=key, name=name))
    return build


# Our transform names -> builder(args, key). Sized transforms take the size itself or a mapping.
TRANSFORMS: dict[str, Callable[[Any, str], JointTransform]] = {
    "d4": _build_p(D4, 1.0, "d4"),
    "hflip": _build_flip(-1, "hflip"),
    "vflip": _build_flip(-2, "vflip"),
    "rot90": _build_p(Rot90, 1.0, "rot90"),
    "transpose": _build_p(Transpose, 0.5, "transpose"),
    "random_crop": _build_sized(RandomCrop, "random_crop"),
    "center_crop": _build_sized(CenterCrop, "center_crop"),
    "resize": _build_sized(Resize, "resize"),
}
_SIZED = {"random_crop", "center_crop", "resize"}
_ALIASES = {"horizontal_flip": "hflip", "vertical_flip": "vflip", "random_rotate90": "rot90",
            "randomcrop": "random_crop", "centercrop": "center_crop"}

# albumentations class name -> (our name, how its init_args map to ours). Args not listed are rejected.
_ALBUMENTATIONS: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "D4": ("d4", ("p",)),
    "HorizontalFlip": ("hflip", ("p",)),
    "VerticalFlip": ("vflip", ("p",)),
    "RandomRotate90": ("rot90", ("p",)),
    "Transpose": ("transpose", ("p",)),
    "RandomCrop": ("random_crop", ("height", "width")),
    "CenterCrop": ("center_crop", ("height", "width")),
    "Resize": ("resize", ("height", "width")),
    "ToTensorV2": (None, ("transpose_mask", "p")),
}
# TerraTorch's reshapes around albumentations, which sees [H, W, C] only: dates are flattened into channels for
# it and unflattened after. Here every transform takes [C, T, H, W] as it is and treats every date alike.
_TERRATORCH_TEMPORAL_RESHAPES = {"FlattenTemporalIntoChannels": (), "UnflattenTemporalFromChannels": ("n_timesteps",)}
# Args albumentations accepts that change nothing for us (always_apply is deprecated there; p=1 crops always).
_IGNORED_ALBUMENTATIONS_ARGS = ("always_apply",)


def _from_class_path(entry: Mapping[str, Any], key: str) -> JointTransform | None:
    class_path = str(entry["class_path"])
    extra = [k for k in entry if k not in ("class_path", "init_args", "dict_kwargs")]
    if extra:
        raise ConfigError(f"unexpected keys {extra} next to class_path {class_path!r}", key=key)
    class_name = class_path.rsplit(".", 1)[-1]
    if class_name in _TERRATORCH_TEMPORAL_RESHAPES:
        _check_args(dict(entry.get("init_args") or {}), _TERRATORCH_TEMPORAL_RESHAPES[class_name], key=key,
                    name=class_path)
        warnings.warn(f"{key}: {class_path} is not needed (transforms here apply to every date of a [C, T, H, W] "
                      "sample alike); skipped", TransformNotice, stacklevel=4)
        return None
    if class_name not in _ALBUMENTATIONS:
        choices = [f"albumentations.{c}" for c in _ALBUMENTATIONS]
        raise ConfigError(
            f"transform {class_path!r} is not supported.{did_you_mean(class_name, _ALBUMENTATIONS)} Supported "
            f"TerraTorch-style entries: {', '.join(choices)}; or use our own names: {', '.join(TRANSFORMS)}", key=key)
    ours, allowed = _ALBUMENTATIONS[class_name]
    args = dict(entry.get("init_args") or {}) | dict(entry.get("dict_kwargs") or {})
    for ignored in _IGNORED_ALBUMENTATIONS_ARGS:
        args.pop(ignored, None)
    _check_args(args, allowed, key=key, name=class_path)
    if ours is None:
        return None
    if ours in _SIZED:
        if "height" not in args or "width" not in args:
            raise ConfigError(f"{class_path} needs init_args height and width", key=key)
        mapped: Any = [args["height"], args["width"]]
    else:
        mapped = args
        if class_name in ("RandomCrop", "CenterCrop") and args.get("p", 1.0) != 1.0:
            raise ConfigError(f"{class_path} with p != 1 is not supported", key=key)
    shown = f"{ours}: {mapped}" if mapped else ours
    warnings.warn(f"{key}: {class_path} -> terramind-ft transform '{shown}'", TransformNotice, stacklevel=4)
    return TRANSFORMS[ours](mapped, key)


def build_transform(spec: Sequence[Any] | None, *, key: str) -> Compose:
    """Build a :class:`Compose` from our YAML schema or TerraTorch-style ``class_path`` entries.

    ``key`` is the config key (e.g. ``data.init_args.train_transform``) used in error messages.
    """
    if spec is None:
        return Compose([])
    if isinstance(spec, (str, Mapping)):
        spec = [spec]
    transforms: list[JointTransform] = []
    for i, entry in enumerate(spec):
        entry_key = f"{key}[{i}]"
        if isinstance(entry, JointTransform):
            transforms.append(entry)
            continue
        if isinstance(entry, str):
            if entry.startswith("albumentations.") or entry == "ToTensorV2":
                t = _from_class_path({"class_path": entry}, entry_key)
                if t is not None:
                    transforms.append(t)
                continue
            name, args = entry, {}
        elif isinstance(entry, Mapping):
            if "class_path" in entry:
                t = _from_class_path(entry, entry_key)
                if t is not None:
                    transforms.append(t)
                continue
            if len(entry) != 1:
                raise ConfigError(f"each transform is one name, optionally with arguments (e.g. "
                                  f"'random_crop: 224'), got {dict(entry)}", key=entry_key)
            name, args = next(iter(entry.items()))
            args = {} if args is None else args
        else:
            raise ConfigError(f"a transform is a name or a one-key mapping, got {entry!r}", key=entry_key)
        lookup = _ALIASES.get(name.lower(), name.lower())
        if lookup not in TRANSFORMS:
            raise ConfigError(f"unknown transform {name!r}.{did_you_mean(name, TRANSFORMS)} "
                              f"Valid transforms: {', '.join(TRANSFORMS)}", key=entry_key)
        if lookup not in _SIZED and not isinstance(args, Mapping):
            raise ConfigError(f"{lookup} takes a mapping of arguments (e.g. {{p: 0.5}}), got {args!r}", key=entry_key)
        if lookup in _SIZED and args == {}:
            raise ConfigError(f"{lookup} needs a size, e.g. '{lookup}: 224'", key=entry_key)
        transforms.append(TRANSFORMS[lookup](args, entry_key))
    return Compose(transforms)
