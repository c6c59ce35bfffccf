"""Where was this image taken? TerraMind's distribution over locations, from its coords decoder.

The coords vocabulary has one token per latitude (``lat=40.25``) and one per longitude (``lon=-3.50``) of the
0.25 degree grid (:mod:`terramind_ft.models.tokenizers.coords`); the reference decodes a location as
``[S_1] lat lon [EOS]``. So the model's probability of a location is exact in two decoder passes:

* P(lat | inputs): the logits after the start sentinel, over the latitude tokens;
* P(lon | lat, inputs): the logits after ``[S_1] lat``, over the longitude tokens, for every latitude at once:
  one decoder pass over ``[S_1] lat_1 ... lat_K`` in which each ``lat_k`` sits at position 1 and sees only the
  sentinel and itself, which is exactly the causal pass over ``[S_1] lat_k`` (the context is projected once).

Their product on the 721 x 1440 grid (rows 90 N to 90 S, columns 180 W to 179.75 E; 180 E is the same meridian as
180 W and is added to it) is renormalised to sum to 1; :attr:`LocationDistribution.location_mass` keeps the
probability the model gave to well-formed "lat lon" pairs at all. The map is written as a GeoTIFF in EPSG:4326 with
0.25 degree pixels centred on the grid values; :meth:`LocationDistribution.top_k` lists the most likely cells.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from terramind_ft.errors import ConfigError

GRID_DEG = 0.25
ROWS = 721  # latitudes 90, 89.75, ..., -90
COLS = 1440  # longitudes -180, -179.75, ..., 179.75
EARTH_RADIUS_KM = 6371.0088
_LAT_TOKEN = re.compile(r"lat=(-?\d+(?:\.\d+)?)")
_LON_TOKEN = re.compile(r"lon=(-?\d+(?:\.\d+)?)")


def row_of_lat(lat: float) -> int:
    return int(round((90.0 - lat) / GRID_DEG))


def col_of_lon(lon: float) -> int:
    return int(round((lon + 180.0) / GRID_DEG)) % COLS


def lat_of_row(row: int) -> float:
    return 90.0 - row * GRID_DEG


def lon_of_col(col: int) -> float:
    return -180.0 + col * GRID_DEG


def great_circle_km(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Haversine distance in km."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


@dataclass(frozen=True)
class GridTokens:
    """The coords vocabulary's latitude and longitude tokens: ids and their cells on the grid."""

    lat_ids: Tensor  # [n_lat] token ids
    lat_rows: Tensor  # [n_lat] grid rows
    lon_ids: Tensor  # [n_lon]
    lon_cols: Tensor  # [n_lon] grid columns (180 E and 180 W share one)

    @classmethod
    def from_vocab(cls, vocab: Mapping[str, int], vocab_size: int, source: str = "") -> GridTokens:
        lats, lons = [], []
        for token, index in vocab.items():
            if index >= vocab_size:
                continue
            if (m := _LAT_TOKEN.fullmatch(token)) and abs(float(m.group(1))) <= 90:
                lats.append((index, row_of_lat(float(m.group(1)))))
            elif (m := _LON_TOKEN.fullmatch(token)) and abs(float(m.group(1))) <= 180:
                lons.append((index, col_of_lon(float(m.group(1)))))
        if not lats or not lons:
            raise ConfigError(f"the coords vocabulary {source} has no 'lat=<deg>' / 'lon=<deg>' tokens (found "
                              f"{len(lats)} / {len(lons)}); a location distribution needs TerraMind's coords tokenizer "
                              "(ibm-esa-geospatial/TerraMind-1.0-Tokenizer-Coords)", key="tokenizer_kwargs.coords")
        lats.sort(key=lambda t: t[1])
        lons.sort(key=lambda t: t[1])
        return cls(torch.tensor([i for i, _ in lats]), torch.tensor([r for _, r in lats]),
                   torch.tensor([i for i, _ in lons]), torch.tensor([c for _, c in lons]))


@dataclass(frozen=True)
class LocationDistribution:
    """P(location | inputs) per sample on the 0.25 degree grid.

    ``probabilities``: float32 ``[B, 721, 1440]``, rows from 90 N southwards, columns from 180 W eastwards, each
    sample summing to 1. ``location_mass``: ``[B]``, the model's total probability of a well-formed location
    (below 1 when it would rather emit another token).
    """

    probabilities: Tensor
    location_mass: Tensor

    # GDAL geotransform of the map: pixel centres on the grid values
    transform = (-180.0 - GRID_DEG / 2, GRID_DEG, 0.0, 90.0 + GRID_DEG / 2, 0.0, -GRID_DEG)

    def __len__(self) -> int:
        return int(self.probabilities.shape[0])

    def top_k(self, k: int = 5) -> list[list[tuple[float, float, float]]]:
        """Per sample, the ``k`` most likely cells as ``(lon, lat, probability)``, most likely first."""
        flat = self.probabilities.flatten(1)
        values, indices = flat.topk(min(k, flat.shape[1]), dim=1)
        return [[(lon_of_col(int(i) % COLS), lat_of_row(int(i) // COLS), float(v)) for v, i in zip(vs, ids)]
                for vs, ids in zip(values.tolist(), indices)]

    def probability_at(self, lon: float, lat: float) -> Tensor:
        """``[B]`` probability of the cell holding (lon, lat)."""
        return self.probabilities[:, row_of_lat(lat), col_of_lon(lon)]

    def write_geotiff(self, path: str | Path, index: int = 0, tags: Mapping[str, str] | None = None) -> Path:
        """Sample ``index`` as a float32 GeoTIFF in EPSG:4326 (written to a temp file, then renamed)."""
        import rasterio
        from rasterio.transform import Affine

        from terramind_ft.io import atomic_path

        path = Path(path)
        a, b, c, d, e, f = self.transform
        with atomic_path(path) as tmp:
            with rasterio.open(tmp, "w", driver="GTiff", width=COLS, height=ROWS, count=1, dtype="float32",
                               crs="EPSG:4326", transform=Affine(b, c, a, e, f, d), compress="deflate") as dst:
                dst.write(self.probabilities[index].float().cpu().numpy()[None])
                dst.set_band_description(1, "probability of the location (sums to 1)")
                dst.update_tags(**(tags or {}), location_mass=f"{float(self.location_mass[index]):.6g}",
                                grid_deg=str(GRID_DEG))
        return path


@torch.no_grad()
def location_distribution(model, context: Tensor, key: str, grid: GridTokens, *, start_id: int,
                          lat_chunk: int = 256, context_mask: Tensor | None = None) -> LocationDistribution:
    """The exact two-step distribution (module docstring) of decoder ``key`` of ``model`` given ``context``.

    ``model`` is a :class:`~terramind_ft.models.terramind.decoder.TerraMind`; ``context`` ``[B, N, D]`` its
    encoder output for the inputs (``model.encode``).
    """
    batch, device = context.shape[0], context.device
    lat_ids, lon_ids = grid.lat_ids.to(device), grid.lon_ids.to(device)
    log_pairs = []  # [B, k, n_lon] log P(lat_k) + log P(lon | lat_k), per chunk
    for begin in range(0, lat_ids.numel(), lat_chunk):
        chunk = lat_ids[begin:begin + lat_chunk]
        k = chunk.numel()
        ids = torch.cat([torch.tensor([start_id], device=device), chunk])[None].expand(batch, -1)
        positions = torch.ones(k + 1, dtype=torch.long, device=device)
        positions[0] = 0
        sees = torch.eye(k + 1, dtype=torch.bool, device=device)
        sees[:, 0] = True  # every latitude sees the sentinel and itself
        logits = model.decode_sequence_logits(context, key, ids, positions=positions, self_mask=~sees,
                                              context_mask=context_mask)
        log_p = logits.double().log_softmax(dim=-1)
        log_pairs.append(log_p[:, 0, chunk][..., None] + log_p[:, 1:][..., lon_ids])
    log_pair = torch.cat(log_pairs, dim=1)  # [B, n_lat, n_lon]
    # In log space until the end: random or overconfident weights put almost all mass on one token, and the
    # map must still sum to 1.
    peak = log_pair.flatten(1).max(dim=1).values
    pair = (log_pair - peak[:, None, None]).exp()
    cells = (grid.lat_rows.to(device)[:, None] * COLS + grid.lon_cols.to(device)[None]).flatten()
    joint = torch.zeros(batch, ROWS * COLS, dtype=torch.float64, device=device)
    joint.index_add_(1, cells, pair.reshape(batch, -1))
    total = joint.sum(dim=1)
    probabilities = (joint / total[:, None]).float().view(batch, ROWS, COLS)
    return LocationDistribution(probabilities=probabilities, location_mass=(peak + total.log()).exp().float())
