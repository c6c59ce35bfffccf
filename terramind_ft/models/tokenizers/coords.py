"""Coordinates as TerraMind tokens: ``[B, 2]`` (lon, lat) in degrees <-> WordPiece ids, as the reference does.

Each location is rounded to the 0.25 degree grid, written as the text ``lat=<lat:.2f> lon=<lon:.2f> [EOS]`` and
tokenised with the reference's WordPiece tokenizer (the ``tokenizers`` library): ``config.json`` of the Hugging
Face repo ``ibm-esa-geospatial/TerraMind-1.0-Tokenizer-Coords``, or a local file (``tokenizer_file``). Its
special tokens come first: ``[PAD]`` 0, ``[UNK]`` 1, ``[SOS]`` 2, ``[EOS]`` 3, ``[S_0]`` 4, ``[S_1]`` 5, ``[S_2]`` 6.
:meth:`CoordsTokenizer.decode` turns ids back into (lon, lat), NaN where the text is not a location.

The vocabulary is data, not weights: there is no random-weight coords tokenizer. ``pip install
'terramind-ft[coords]'`` brings ``tokenizers``.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from terramind_ft.errors import ConfigError, ModalityError
from terramind_ft.registry import FULL_MODEL_REGISTRY

REPO_ID = "ibm-esa-geospatial/TerraMind-1.0-Tokenizer-Coords"
FILENAME = "config.json"
GRID_DEG = 0.25
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[SOS]", "[EOS]", "[S_0]", "[S_1]", "[S_2]")
PAD_ID, EOS_ID = 0, 3
SENTINEL_IDS = (4, 5, 6)  # [S_0], [S_1], [S_2]
# Generating a location starts from the sentinel [S_1] and ends at [EOS] (or the next sentinel, which is where
# the reference's empty target sequence ends): "[S_1] lat=.. lon=.. [EOS]".
SEQUENCE_START_ID = 5
SEQUENCE_STOP_IDS = (EOS_ID, 6)
MAX_LENGTH = 4  # the coords sequence length of the reference's embeddings
_LAT = re.compile(r"lat\s*=\s*(-?\d+(?:\.\d+)?)")
_LON = re.compile(r"lon\s*=\s*(-?\d+(?:\.\d+)?)")


def snap(value: float) -> float:
    """The nearest point of the 0.25 degree grid."""
    return round(value / GRID_DEG) * GRID_DEG


def location_problem(lon: float, lat: float, order: tuple[str, str] = ("(lat, lon)", "(lon, lat)")) -> str | None:
    """Why (lon, lat) is not a location in degrees, or None when it is one. A pair that would be one swapped is
    named, in the caller's spelling ``order`` (swapped, expected)."""
    if not (math.isfinite(lon) and math.isfinite(lat)) or abs(lat) > 90 or abs(lon) > 180:
        swapped = abs(lon) <= 90 < abs(lat) <= 180
        return "outside lon [-180, 180] / lat [-90, 90]" + (f"; it looks like {order[0]}: give {order[1]}"
                                                             if swapped else "")
    return None


def location_text(lon: float, lat: float) -> str:
    return f"lat={snap(lat):.2f} lon={snap(lon):.2f} [EOS]"


class CoordsTokenizer(nn.Module):
    """(lon, lat) [B, 2] -> ``{"tensor": ids [B, L], "input_mask": [B, L] (True = padding)}`` and back."""

    def __init__(self, tokenizer: Any, max_length: int = MAX_LENGTH, source: str = ""):
        super().__init__()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.source = source
        vocab = tokenizer.get_vocab()
        for i, token in enumerate(SPECIAL_TOKENS[:4]):
            if vocab.get(token) != i:
                raise ConfigError(f"the coords tokenizer {source or ''} has {token} at id {vocab.get(token)}, the "
                                  f"reference's layout has it at {i}; it is not TerraMind's coords vocabulary",
                                  key="tokenizer_file")

    @staticmethod
    def check(coords: Tensor) -> None:
        if coords.ndim != 2 or coords.shape[1] != 2:
            raise ModalityError(f"coords are [B, 2] (lon, lat) in degrees, got shape {list(coords.shape)}",
                                key="coords")
        for i, (x, y) in enumerate(coords.tolist()):
            problem = location_problem(x, y)
            if problem:
                raise ModalityError(f"coords row {i} is (lon {x}, lat {y}): {problem}", key="coords")

    def encode(self, coords: Tensor) -> dict[str, Tensor]:
        self.check(coords)
        rows = [self.tokenizer.encode(location_text(float(lon), float(lat))).ids for lon, lat in coords.tolist()]
        length = max(len(r) for r in rows)
        if length > self.max_length:
            raise ModalityError(f"a location became {length} tokens, more than the {self.max_length} the model takes; "
                                f"{self.source or 'this tokenizer'} is not TerraMind's coords vocabulary",
                                key="tokenizer_file")
        ids = torch.full((len(rows), length), PAD_ID, dtype=torch.long)
        mask = torch.ones((len(rows), length), dtype=torch.bool)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, : len(r)] = False
        return {"tensor": ids.to(coords.device), "input_mask": mask.to(coords.device)}

    def decode(self, ids: Tensor | dict[str, Tensor]) -> Tensor:
        """(lon, lat) [B, 2] of token ids [B, L]; NaN for a row whose text holds no lat= / lon=."""
        if isinstance(ids, dict):
            ids = ids["tensor"]
        out = torch.full((ids.shape[0], 2), math.nan)
        for i, row in enumerate(ids.tolist()):
            text = self.tokenizer.decode([t for t in row if t != PAD_ID], skip_special_tokens=True)
            text = text.replace(" = ", "=").replace(" . ", ".").replace(" - ", "-")  # WordPiece spacing
            lat, lon = _LAT.search(text), _LON.search(text)
            if lat and lon:
                out[i] = torch.tensor([float(lon.group(1)), float(lat.group(1))])
        return out

    def forward(self, coords: Tensor) -> dict[str, Tensor]:
        return self.encode(coords)


def _load_tokenizer(path: Path) -> Any:
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ConfigError("the coords tokenizer needs the tokenizers library: pip install 'terramind-ft[coords]'",
                          key="tokenizer_kwargs.coords") from None
    try:
        return Tokenizer.from_file(str(path))
    except Exception as err:  # the tokenizers library raises plain Exception for a bad file
        raise ConfigError(f"{path} is not a tokenizers JSON file ({err})", key="tokenizer_file") from None


@FULL_MODEL_REGISTRY.register("terramind_v1_tokenizer_coords")
def terramind_v1_tokenizer_coords(pretrained: bool = False, ckpt_path: str | os.PathLike | None = None,
                                  tokenizer_file: str | os.PathLike | None = None,
                                  max_length: int = MAX_LENGTH) -> CoordsTokenizer:
    """The coords tokenizer from ``tokenizer_file`` (or ``ckpt_path``), else, with ``pretrained``, the hub's."""
    path = tokenizer_file or ckpt_path
    if path is None:
        if not pretrained:
            raise ConfigError("coords need the reference's vocabulary, which has no random form: give "
                              "tokenizer_kwargs: {coords: {tokenizer_file: /path/to/config.json}} or pretrained "
                              f"weights (downloads {FILENAME} from {REPO_ID})", key="tokenizer_kwargs.coords")
        from terramind_ft.hub import download

        path = download(REPO_ID, FILENAME, what="the coords tokenizer", key="tokenizer_kwargs.coords")
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such tokenizer file", key="tokenizer_file")
    return CoordsTokenizer(_load_tokenizer(path), max_length=max_length, source=str(path))
