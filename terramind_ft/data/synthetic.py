"""Small, realistic, learnable datasets written to disk, for tests, benchmarks and demos.

``make_sen1floods11`` writes a Sen1Floods11-like flood segmentation set in either the TerraMind repack layout
or the original v1.1 layout; ``make_classification`` writes a multi-modal scene classification set. Both return
a small frozen dataclass with the roots, split files and greps, and ``datamodule_kwargs()`` giving the
matching :class:`~terramind_ft.data.datamodule.GenericMultiModalDataModule` arguments (plain str/list/dict
values, so the same dict can be dumped as the ``data.init_args`` of a YAML config).

The water structure is learnable: water pixels are dark in the S2 NIR/SWIR bands and low in S1 backscatter,
so a model that fits the train split scores well on val/test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from rasterio.transform import Affine, from_origin

from terramind_ft.data.raster import write_raster
from terramind_ft.modalities import MODALITIES

REGIONS = ("Ghana", "India", "Mekong", "Nigeria", "Pakistan", "Paraguay", "Somalia", "Spain", "Sri-Lanka", "USA")
FLOOD_CLASS_NAMES = ("Others", "Flood")
PIXEL_SIZE = 10.0

# Split key -> the word used in Sen1Floods11 split file names.
_SPLIT_FILE_WORD = {"train": "train", "val": "valid", "test": "test"}

# Per-band S2 L1C reflectance (x10000) of land and water, in catalogue band order (13 bands).
_S2_LAND = np.array([1500, 1300, 1250, 1200, 1600, 2300, 2600, 2700, 2900, 900, 200, 2300, 1500], np.float32)
_S2_WATER = np.array([1400, 1200, 1100, 900, 700, 500, 450, 400, 380, 200, 50, 250, 150], np.float32)
# S1 GRD backscatter (dB) of land and water: VV, VH.
_S1_LAND = np.array([-10.0, -17.0], np.float32)
_S1_WATER = np.array([-21.0, -28.0], np.float32)


@dataclass(frozen=True)
class SyntheticDataset:
    """Where a generated dataset lives and how to point the data module at it."""

    root: Path
    layout: str
    task: str
    modalities: tuple[str, ...]
    data_roots: dict[str, str]  # modality -> folder
    label_root: str  # folder, or csv file of class labels
    splits: dict[str, str]  # "train" / "val" / "test" -> split file
    image_grep: dict[str, str]
    label_grep: str
    prefixes: dict[str, list[str]]  # split -> sample prefixes, in file order
    size: int
    num_classes: int
    class_names: tuple[str, ...]
    crs: str
    extra: dict[str, Any] = field(default_factory=dict)  # generator-specific datamodule arguments
    labels: dict[str, int] = field(default_factory=dict)  # classification: sample prefix -> class index

    def datamodule_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """Arguments of ``GenericMultiModalDataModule`` that read this dataset; ``overrides`` win."""
        kwargs: dict[str, Any] = {
            "task": self.task,
            "modalities": list(self.modalities),
            "batch_size": 2,
            "num_workers": 0,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "image_grep": dict(self.image_grep),
            "label_grep": self.label_grep,
            "rgb_modality": self.modalities[0],
        }
        for split in ("train", "val", "test"):
            if split in self.splits:
                kwargs[f"{split}_data_root"] = dict(self.data_roots)
                kwargs[f"{split}_label_data_root"] = self.label_root
                kwargs[f"{split}_split"] = self.splits[split]
        kwargs["predict_data_root"] = dict(self.data_roots)
        kwargs.update(self.extra)
        kwargs.update(overrides)
        return kwargs


# --------------------------------------------------------------------------------------------------- helpers


def _smooth_field(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """A smooth random field in [0, 1] (low-pass filtered noise), ``scale`` = feature size in pixels."""
    noise = rng.standard_normal((size, size))
    freq = np.fft.fftfreq(size)
    radius2 = freq[:, None] ** 2 + freq[None, :] ** 2
    smooth = np.real(np.fft.ifft2(np.fft.fft2(noise) * np.exp(-radius2 * (scale**2) * 2.0)))
    smooth -= smooth.min()
    return smooth / max(float(smooth.max()), 1e-12)


def _random_boxes(rng: np.random.Generator, size: int, fraction: float, max_boxes: int = 3) -> np.ndarray:
    """A bool mask made of up to ``max_boxes`` rectangles covering about ``fraction`` of the image."""
    mask = np.zeros((size, size), bool)
    if fraction <= 0:
        return mask
    n = int(rng.integers(1, max_boxes + 1))
    side = max(1, int(round(size * np.sqrt(fraction / n))))
    for _ in range(n):
        y, x = rng.integers(0, max(1, size - side + 1), size=2)
        mask[y : y + side, x : x + side] = True
    return mask


def _unique_prefixes(rng: np.random.Generator, n: int) -> list[str]:
    ids = rng.choice(np.arange(100000, 999999), size=n, replace=False)
    return [f"{REGIONS[int(rng.integers(len(REGIONS)))]}_{int(i)}" for i in ids]


def _grid(rng: np.random.Generator) -> Affine:
    """A north-up 10 m pixel grid at a plausible UTM origin (easting, northing)."""
    west, north = float(rng.integers(30000, 70000) * 10), float(rng.integers(100000, 900000) * 10)
    return Affine(PIXEL_SIZE, 0.0, west, 0.0, -PIXEL_SIZE, north)


def _flood_chip(rng: np.random.Generator, size: int, nan_fraction: float, ignore_fraction: float, s2_nodata):
    """One chip: S2 L1C uint16 [13,H,W], S1 GRD float32 dB [2,H,W] with NaNs, label int16 [H,W] in {-1,0,1}."""
    water = _smooth_field(rng, size, scale=size / 6) > rng.uniform(0.55, 0.75)
    w = water[None].astype(np.float32)
    texture = _smooth_field(rng, size, scale=size / 12)[None].astype(np.float32)
    s2 = _S2_LAND[:, None, None] * (1 - w) + _S2_WATER[:, None, None] * w
    s2 = s2 * (0.85 + 0.3 * texture) + rng.normal(0, 60, s2.shape)
    s2 = np.clip(s2, 1, 10000).astype(np.uint16)
    s1 = _S1_LAND[:, None, None] * (1 - w) + _S1_WATER[:, None, None] * w
    s1 = (s1 + 2.0 * (texture - 0.5) + rng.normal(0, 1.5, s1.shape)).astype(np.float32)
    if nan_fraction > 0:
        s1[:, _random_boxes(rng, size, nan_fraction, max_boxes=2)] = np.nan
    if s2_nodata is not None:
        s2[:, _random_boxes(rng, size, nan_fraction or 0.02, max_boxes=1)] = s2_nodata
    label = water.astype(np.int16)
    label[_random_boxes(rng, size, ignore_fraction)] = -1  # clouds / not labelled
    return s2, s1, label


# --------------------------------------------------------------------------------------------- Sen1Floods11


def make_sen1floods11(
    root: str | Path,
    layout: Literal["terramind", "original"] = "terramind",
    size: int = 64,
    splits: dict[str, int] | None = None,
    seed: int = 0,
    *,
    crs: str = "EPSG:32630",
    nan_fraction: float = 0.02,
    ignore_fraction: float = 0.05,
    s2_nodata: int | None = None,
    compress: str | None = "deflate",
) -> SyntheticDataset:
    """Write a small Sen1Floods11-like hand-labelled flood dataset under ``root``.

    ``layout="terramind"``: ``data/{S2L1CHand,S1GRDHand,LabelHand}/<Region>_<id>_{S2Hand,S1Hand,LabelHand}.tif``
    and ``splits/flood_{train,valid,test}_data.txt`` (one prefix per line), as in the TerraMind configs.
    ``layout="original"``: ``v1.1/data/flood_events/HandLabeled/{S2Hand,S1Hand,LabelHand}/...`` and
    ``v1.1/splits/flood_handlabeled/flood_{train,valid,test}_data.csv`` (no header, rows
    ``X_S1Hand.tif,X_LabelHand.tif``), as in the Sen1Floods11 bucket.

    Rasters: S2 L1C 13 bands uint16 (reflectance x 10000, no declared nodata unless ``s2_nodata``), S1 GRD
    2 bands float32 dB with NaN patches (``nan_fraction``), labels int16 in {-1, 0, 1} with -1 patches
    (``ignore_fraction``); all ``size`` x ``size`` at 10 m in ``crs``. ``splits`` maps split -> chip count
    (default train 4, val 2, test 2); ``seed`` makes the output reproducible.
    """
    if layout not in ("terramind", "original"):
        raise ValueError(f"layout must be 'terramind' or 'original', got {layout!r}")
    splits = dict(splits or {"train": 4, "val": 2, "test": 2})
    root = Path(root)
    rng = np.random.default_rng(seed)
    if layout == "terramind":
        data = root / "data"
        folders = {"S2L1C": data / "S2L1CHand", "S1GRD": data / "S1GRDHand"}
        label_dir, split_dir, split_ext = data / "LabelHand", root / "splits", ".txt"
    else:
        data = root / "v1.1" / "data" / "flood_events" / "HandLabeled"
        folders = {"S2L1C": data / "S2Hand", "S1GRD": data / "S1Hand"}
        label_dir, split_dir, split_ext = data / "LabelHand", root / "v1.1" / "splits" / "flood_handlabeled", ".csv"
    suffix = {"S2L1C": "_S2Hand.tif", "S1GRD": "_S1Hand.tif"}
    label_suffix = "_LabelHand.tif"

    all_prefixes = _unique_prefixes(rng, sum(splits.values()))
    prefixes: dict[str, list[str]] = {}
    split_files: dict[str, str] = {}
    start = 0
    for split, count in splits.items():
        names = all_prefixes[start : start + count]
        start += count
        prefixes[split] = names
        for prefix in names:
            s2, s1, label = _flood_chip(rng, size, nan_fraction, ignore_fraction, s2_nodata)
            transform = _grid(rng)
            write_raster(folders["S2L1C"] / f"{prefix}{suffix['S2L1C']}", s2, crs=crs, transform=transform,
                         nodata=s2_nodata, compress=compress)
            write_raster(folders["S1GRD"] / f"{prefix}{suffix['S1GRD']}", s1, crs=crs, transform=transform,
                         compress=compress)
            write_raster(label_dir / f"{prefix}{label_suffix}", label, crs=crs, transform=transform,
                         compress=compress)
        split_file = split_dir / f"flood_{_SPLIT_FILE_WORD.get(split, split)}_data{split_ext}"
        split_file.parent.mkdir(parents=True, exist_ok=True)
        if layout == "terramind":
            lines = names
        else:
            lines = [f"{p}{suffix['S1GRD']},{p}{label_suffix}" for p in names]
        split_file.write_text("".join(line + "\n" for line in lines))
        split_files[split] = str(split_file)

    return SyntheticDataset(
        root=root, layout=layout, task="segmentation", modalities=("S2L1C", "S1GRD"),
        data_roots={m: str(p) for m, p in folders.items()}, label_root=str(label_dir), splits=split_files,
        image_grep={m: "*" + s for m, s in suffix.items()}, label_grep="*" + label_suffix, prefixes=prefixes,
        size=size, num_classes=2, class_names=FLOOD_CLASS_NAMES, crs=crs,
        extra={"no_label_replace": -1, "no_data_replace": 0.0},
    )


# ------------------------------------------------------------------------------------------- classification


def make_classification(
    root: str | Path,
    modalities: tuple[str, ...] | list[str] = ("S2L2A", "S1RTC"),
    size: int = 32,
    splits: dict[str, int] | None = None,
    seed: int = 0,
    *,
    num_classes: int = 3,
    class_names: tuple[str, ...] | list[str] | None = None,
    labels: Literal["csv", "files"] = "csv",
    crs: str = "EPSG:32632",
    compress: str | None = None,
) -> SyntheticDataset:
    """Write a small multi-modal scene classification dataset under ``root``.

    Layout: ``<root>/<modality>/<id>.tif`` per catalogue modality (its band count, plausible raw values),
    ``splits/{train,val,test}.txt`` and either ``labels.csv`` (no header; rows ``<id>,<class name>``) when
    ``labels="csv"`` or ``labels/<id>.txt`` holding the class index when ``labels="files"``. Class k brightens
    every band of every modality by k/num_classes of its standard deviation, so the task is learnable.
    """
    if labels not in ("csv", "files"):
        raise ValueError(f"labels must be 'csv' or 'files', got {labels!r}")
    splits = dict(splits or {"train": 6, "val": 3, "test": 3})
    names = tuple(class_names or (f"class_{k}" for k in range(num_classes)))
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class_names for num_classes={num_classes}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    total = sum(splits.values())
    ids = [f"scene_{i:04d}" for i in rng.choice(10000, size=total, replace=False)]
    classes = rng.integers(0, num_classes, size=total)
    classes[:num_classes] = np.arange(min(num_classes, total))  # every class appears at least once
    label_of = dict(zip(ids, (int(c) for c in classes), strict=True))
    for sample_id in ids:
        transform = _grid(rng)
        shift = label_of[sample_id] / num_classes
        for name in modalities:
            m = MODALITIES[name]
            mean = np.asarray(m.mean, np.float32)[:, None, None]
            std = np.asarray(m.std, np.float32)[:, None, None]
            values = mean + std * (shift + 0.3 * rng.standard_normal((m.num_bands, size, size)))
            if m.units.endswith("(uint16 DN)"):
                array = np.clip(values, 0, 10000).astype(np.int16)
            elif "8-bit" in m.units:
                array = np.clip(values, 0, 255).astype(np.uint8)
            else:
                array = values.astype(np.float32)
            write_raster(root / name / f"{sample_id}.tif", array, crs=crs, transform=transform, compress=compress)
    split_files: dict[str, str] = {}
    prefixes: dict[str, list[str]] = {}
    start = 0
    for split, count in splits.items():
        prefixes[split] = ids[start : start + count]
        start += count
        path = root / "splits" / f"{split}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(p + "\n" for p in prefixes[split]))
        split_files[split] = str(path)
    if labels == "csv":
        label_root = root / "labels.csv"
        label_root.write_text("".join(f"{i},{names[label_of[i]]}\n" for i in ids))
        label_grep = "*"
    else:
        label_dir = root / "labels"
        label_dir.mkdir(parents=True, exist_ok=True)
        for i in ids:
            (label_dir / f"{i}.txt").write_text(f"{label_of[i]}\n")
        label_root, label_grep = label_dir, "*.txt"
    return SyntheticDataset(
        root=root, layout=f"classification-{labels}", task="classification", modalities=tuple(modalities),
        data_roots={m: str(root / m) for m in modalities}, label_root=str(label_root), splits=split_files,
        image_grep={m: "*.tif" for m in modalities}, label_grep=label_grep, prefixes=prefixes, size=size,
        num_classes=num_classes, class_names=names, crs=crs, labels=label_of,
    )


# ------------------------------------------------------------------------------------------- large scenes

SCENE_CLASS_NAMES = ("land", "water")


@dataclass(frozen=True)
class SyntheticScene:
    """A generated multi-modal scene: one raster per modality (each on its own grid) and a label raster."""

    root: Path
    paths: dict[str, Path]  # modality -> raster
    label_path: Path | None  # uint8 water mask on the reference grid (255 = nodata)
    height: int  # reference grid (the first modality's)
    width: int
    crs: str
    transform: Any
    class_names: tuple[str, ...] = SCENE_CLASS_NAMES

    @property
    def data_roots(self) -> dict[str, str]:
        """``{modality: folder}``, the shape of a data module's ``predict_data_root``."""
        return {m: str(p.parent) for m, p in self.paths.items()}


def _scene_water(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Water mask at map coordinates (metres; ``x`` [1, w], ``y`` [h, 1]): a smooth sinusoid mix, the same
    whatever grid samples it."""
    rng = np.random.default_rng(seed)
    field_ = np.zeros(np.broadcast_shapes(x.shape, y.shape), np.float32)
    for _ in range(6):
        wavelength = rng.uniform(800.0, 6000.0)
        angle = rng.uniform(0, np.pi)
        phase = rng.uniform(0, 2 * np.pi)
        k = 2 * np.pi / wavelength
        # float64 phases per axis (exact over large extents), float32 for the [h, w] sum
        field_ += np.sin((np.cos(angle) * k * x + phase).astype(np.float32)
                         + (np.sin(angle) * k * y).astype(np.float32))
    return field_ > 1.2  # about a quarter of the scene is water


def make_scene(
    root: str | Path,
    height: int = 2048,
    width: int = 2048,
    modalities: tuple[str, ...] | list[str] = ("S2L2A", "S1GRD"),
    seed: int = 0,
    *,
    name: str = "scene",
    crs: str = "EPSG:32633",
    pixel_size: float = PIXEL_SIZE,
    origin: tuple[float, float] = (500000.0, 5000000.0),
    resolutions: dict[str, float] | None = None,
    offsets: dict[str, tuple[float, float]] | None = None,
    nodata_box: tuple[int, int, int, int] | None = None,
    label: bool = True,
    block_rows: int = 512,
    compress: str | None = "deflate",
) -> SyntheticScene:
    """Write a large flood-like scene as ``<root>/<modality>/<name>.tif`` (plus ``<root>/label/<name>.tif``).

    The first modality sets the reference grid: ``height`` x ``width`` pixels of ``pixel_size`` m in ``crs``
    from ``origin`` (upper-left x, y). ``resolutions`` gives other modalities their own pixel size (e.g.
    ``{"S1GRD": 20.0}``) and ``offsets`` shifts their upper-left corner by (dx, dy) metres, so that modalities on
    different grids cover the same ground. Water is dark in S2 NIR/SWIR and low in S1 backscatter, as in
    :func:`make_sen1floods11`. ``nodata_box = (row, col, h, w)`` (reference pixels) blanks a rectangle: S2 / RGB
    integer rasters hold their declared nodata 0 there, float rasters NaN. Rasters are written ``block_rows``
    rows at a time (tiled 256, ``compress``), so generating a scene needs little memory.
    """
    import rasterio

    root = Path(root)
    modalities = tuple(modalities)
    resolutions = dict(resolutions or {})
    offsets = dict(offsets or {})
    x0, y0 = origin
    paths: dict[str, Path] = {}
    label_path: Path | None = None
    ref_transform = from_origin(x0, y0, pixel_size, pixel_size)
    targets = [(m, m) for m in modalities] + ([("label", None)] if label else [])
    for folder, modality in targets:
        res = resolutions.get(modality, pixel_size) if modality else pixel_size
        dx, dy = offsets.get(modality, (0.0, 0.0)) if modality else (0.0, 0.0)
        h = int(np.ceil(height * pixel_size / res))
        w = int(np.ceil(width * pixel_size / res))
        transform = from_origin(x0 + dx, y0 + dy, res, res)
        if modality is None:
            count, dtype, nodata = 1, "uint8", 255
        else:
            m = MODALITIES[modality]
            count = m.num_bands
            integer = m.units.endswith("(uint16 DN)") or "8-bit" in m.units
            dtype = ("uint16" if m.units.endswith("(uint16 DN)") else "uint8") if integer else "float32"
            nodata = 0 if integer else None
        path = root / folder / f"{name}.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        profile: dict[str, Any] = dict(driver="GTiff", height=h, width=w, count=count, dtype=dtype, crs=crs,
                                       transform=transform, nodata=nodata, tiled=True, blockxsize=256,
                                       blockysize=256)
        if compress:
            profile.update(compress=compress, zlevel=1)
        tmp = path.with_name(f".{path.name}.tmp")
        with rasterio.open(tmp, "w", **profile) as dst:
            for row0 in range(0, h, block_rows):
                n = min(block_rows, h - row0)
                ys = y0 + dy - (np.arange(row0, row0 + n, dtype=np.float64) + 0.5) * res
                xs = x0 + dx + (np.arange(w, dtype=np.float64) + 0.5) * res
                water = _scene_water(xs[None, :] - x0, ys[:, None] - y0, seed)
                blank = np.zeros((n, w), bool)
                if nodata_box is not None:
                    r, c, bh, bw = nodata_box
                    # the box in map coordinates, sampled by this grid's pixel centres
                    in_y = (ys <= y0 - r * pixel_size) & (ys > y0 - (r + bh) * pixel_size)
                    in_x = (xs >= x0 + c * pixel_size) & (xs < x0 + (c + bw) * pixel_size)
                    blank = in_y[:, None] & in_x[None, :]
                rng = np.random.default_rng((seed, row0, len(folder)))
                if modality is None:
                    values = water.astype(np.uint8)[None]
                    values[:, blank] = 255
                else:
                    values = _scene_values(modality, water, rng)
                    if nodata_box is not None:
                        values[:, blank] = 0 if nodata == 0 else np.nan
                    values = values.astype(dtype)
                dst.write(values, window=rasterio.windows.Window(0, row0, w, n))
        tmp.replace(path)
        if modality is None:
            label_path = path
        else:
            paths[modality] = path
    return SyntheticScene(root=root, paths=paths, label_path=label_path, height=height,
                          width=width, crs=crs, transform=ref_transform)


def _scene_values(modality: str, water: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Float32 ``[C, h, w]`` raw values of ``modality`` for a water mask, with a little sensor noise.

    One noise field per call, shifted along the row for each band: cheap, and bands still differ."""
    m = MODALITIES[modality]
    w = water[None].astype(np.float32)
    noise_row = rng.standard_normal((water.shape[0], water.shape[1] + 7 * m.num_bands), dtype=np.float32)
    noise = np.stack([noise_row[:, 7 * b:7 * b + water.shape[1]] for b in range(m.num_bands)])
    if modality in ("S2L1C", "S2L2A"):
        land = _S2_LAND if modality == "S2L1C" else np.delete(_S2_LAND, 10)  # L2A has no cirrus band
        wet = _S2_WATER if modality == "S2L1C" else np.delete(_S2_WATER, 10)
        values = land[:, None, None] * (1 - w) + wet[:, None, None] * w
        return np.clip(values + 40 * noise, 1, 10000)
    if modality in ("S1GRD", "S1RTC"):
        values = _S1_LAND[:, None, None] * (1 - w) + _S1_WATER[:, None, None] * w
        return values + noise
    mean = np.asarray(m.mean, np.float32)[:, None, None]
    std = np.asarray(m.std, np.float32)[:, None, None]
    values = mean + std * (0.8 * (0.5 - w) + 0.2 * noise)
    if m.value_range is not None:
        values = np.clip(values, *m.value_range)
    return values


def make_time_series(root: str | Path, n: int = 8, dates: int = 3, bands: int = 6, size: int = 64,
                     layout: Literal["time_major", "band_major"] = "time_major", seed: int = 0) -> Path:
    """Bands-as-time chips (HLS-like multi-temporal crops): ``<root>/<id>_merged.tif`` holds ``dates`` x ``bands``
    bands in ``layout`` order, with value ``1000 * (date + 1) + 10 * band`` plus noise below 1 (so a reader's layout
    can be checked), ``<id>.mask.tif`` a 2-class label beside it, ``train/val/test.txt`` (half, quarter, quarter)."""
    import rasterio

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = [f"chip_{i:02d}" for i in range(n)]
    for i, sample in enumerate(ids):
        cube = np.empty((bands, dates, size, size), np.float32)  # [C, T, H, W]
        for c in range(bands):
            for t in range(dates):
                cube[c, t] = 1000 * (t + 1) + 10 * c + rng.uniform(0, 1, (size, size))
        stacked = (cube.transpose(1, 0, 2, 3) if layout == "time_major" else cube).reshape(-1, size, size)
        profile = {"driver": "GTiff", "width": size, "height": size, "crs": "EPSG:32633",
                   "transform": Affine(30, 0, 400000 + 2000 * i, 0, -30, 5000000)}
        with rasterio.open(root / f"{sample}_merged.tif", "w", count=stacked.shape[0], dtype="float32",
                           **profile) as dst:
            dst.write(stacked)
        with rasterio.open(root / f"{sample}.mask.tif", "w", count=1, dtype="uint8", **profile) as dst:
            dst.write((rng.random((1, size, size)) > 0.5).astype("uint8"))
    half, quarter = n // 2, n // 4
    for name, part in (("train", ids[:half]), ("val", ids[half:half + quarter]), ("test", ids[half + quarter:])):
        (root / f"{name}.txt").write_text("\n".join(part) + "\n")
    return root


def make_multi_temporal_crop(root: str | Path, n_train: int = 4, n_val: int = 2, size: int = 64,
                             seed: int = 0) -> Path:
    """The layout of the ibm-nasa-geospatial/multi-temporal-crop-classification dataset, which TerraTorch's
    MultiTemporalCropClassificationDataModule reads: ``<root>/{training,validation}_chips/<id>_merged.tif``
    (3 dates x 6 HLS bands, date after date, int16 reflectance x 10000, nodata -9999 in a corner of the first
    chip), ``<id>.mask.tif`` beside each (classes 1..13, 0 = no data), and ``<root>/{training,validation}_data.txt``.
    Band ``b`` of date ``t`` holds about ``1000 * (t + 1) + 100 * b``, so a reader's band and date order can be
    checked."""
    import rasterio

    root = Path(root)
    rng = np.random.default_rng(seed)
    counter = 0
    for folder, n in (("training", n_train), ("validation", n_val)):
        chips = root / f"{folder}_chips"
        chips.mkdir(parents=True, exist_ok=True)
        ids = []
        for _ in range(n):
            sample = f"chip_{counter:03d}_{100 + counter:03d}"
            ids.append(sample)
            cube = np.empty((3, 6, size, size), np.int16)  # [T, C, H, W]: date after date in the file
            for t in range(3):
                for b in range(6):
                    cube[t, b] = 1000 * (t + 1) + 100 * b + rng.integers(0, 50, (size, size))
            if counter == 0:
                cube[:, :, :4, :4] = -9999
            profile = {"driver": "GTiff", "width": size, "height": size, "crs": "EPSG:5070",
                       "transform": Affine(30, 0, 100000 + 30 * size * counter, 0, -30, 2000000)}
            with rasterio.open(chips / f"{sample}_merged.tif", "w", count=18, dtype="int16", nodata=-9999,
                               **profile) as dst:
                dst.write(cube.reshape(18, size, size))
            labels = rng.integers(1, 14, (1, size, size)).astype("uint8")
            labels[:, -3:, -3:] = 0
            with rasterio.open(chips / f"{sample}.mask.tif", "w", count=1, dtype="uint8", **profile) as dst:
                dst.write(labels)
            counter += 1
        (root / f"{folder}_data.txt").write_text("\n".join(ids) + "\n")
    return root
