"""THE modality catalogue: one home for every fact about a TerraMind v1 modality.

Band names in pretrained order, units and value range, pixel- or token-level input, the checkpoint embedding
keys, accepted aliases, the v1 pretraining mean/std, patch size and tokenizer checkpoints. The data module,
the backbone, the generator and the tokenizers all read this module; nothing else hard-codes these facts.

Name resolution follows the reference implementation (TerraTorch 1.2.11): an exact checkpoint key is taken
as is; otherwise the name is lower-cased, ``s2 -> sen2``, ``s1 -> sen1``, ``location -> coords`` are
substituted and the first matching substring wins, so ``S2L2A``, ``s2l2a``, ``S2L1C_L8``, ``S1GRD``,
``RGB``, ``S2RGB``, ``DEM``, ``LULC``, ``NDVI``, ``coords`` and ``location`` all resolve.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from terramind_ft.errors import ModalityError, UnknownNameError

PATCH_SIZE = 16
PRETRAINING_IMG_SIZE = 224

S2L2A_BANDS = (
    "COASTAL_AEROSOL", "BLUE", "GREEN", "RED", "RED_EDGE_1", "RED_EDGE_2", "RED_EDGE_3",
    "NIR_BROAD", "NIR_NARROW", "WATER_VAPOR", "SWIR_1", "SWIR_2",
)  # B01 B02 B03 B04 B05 B06 B07 B08 B8A B09 B11 B12
S2L1C_BANDS = S2L2A_BANDS[:10] + ("CIRRUS",) + S2L2A_BANDS[10:]  # B10 (cirrus) after B09

# Sentinel-2 band ids (B01 ...) accepted as aliases of the band names above.
S2_BAND_IDS = {
    "B01": "COASTAL_AEROSOL", "B1": "COASTAL_AEROSOL", "B02": "BLUE", "B2": "BLUE", "B03": "GREEN", "B3": "GREEN",
    "B04": "RED", "B4": "RED", "B05": "RED_EDGE_1", "B5": "RED_EDGE_1", "B06": "RED_EDGE_2", "B6": "RED_EDGE_2",
    "B07": "RED_EDGE_3", "B7": "RED_EDGE_3", "B08": "NIR_BROAD", "B8": "NIR_BROAD", "B8A": "NIR_NARROW",
    "B09": "WATER_VAPOR", "B9": "WATER_VAPOR", "B10": "CIRRUS", "B11": "SWIR_1", "B12": "SWIR_2",
}

# ESRI 10 m land-use/land-cover classes as used by the TerraMind LULC tokenizer (10 one-hot channels).
LULC_CLASSES = (
    "no_data", "water", "trees", "flooded_vegetation", "crops", "built_area", "bare_ground", "snow_ice",
    "clouds", "rangeland",
)

Kind = Literal["pixel", "token", "sequence"]


@dataclass(frozen=True)
class Modality:
    """Everything known about one TerraMind v1 modality.

    ``kind`` says how the backbone consumes the *raw* data: ``pixel`` modalities are patch-embedded from
    standardised pixels; ``token`` modalities are first turned into token ids by their tokenizer (or given
    as ids) and embedded by id; ``sequence`` modalities (coords) are text-tokenised.
    """

    name: str  # canonical name
    kind: Kind
    bands: tuple[str, ...]  # band names in pretrained order (LULC: one entry per class channel)
    units: str
    value_range: tuple[float, float] | None  # typical physical range, for sanity checks
    mean: tuple[float, ...]  # v1 pretraining standardisation, per band
    std: tuple[float, ...]
    pixel_key: str | None = None  # checkpoint key of the raw-pixel encoder embedding (untok_*)
    token_key: str | None = None  # checkpoint key of the token embedding (tok_*), for TiM / generation
    vocab_size: int | None = None  # token vocabulary (FSQ codebook size)
    fsq_levels: tuple[int, ...] | None = None
    tokenizer: str | None = None  # tokenizer checkpoint suffix: TerraMind-1.0-Tokenizer-<X>
    num_classes: int | None = None  # categorical modalities (LULC)
    class_names: tuple[str, ...] | None = None
    aliases: tuple[str, ...] = field(default_factory=tuple)
    patch_size: int = PATCH_SIZE
    # A sample can be uniform for real (flat terrain at sea level): a tiny spread of its values then says nothing
    # about their units (terramind_ft.data.value_scale).
    may_be_flat: bool = False

    @property
    def num_bands(self) -> int:
        return len(self.bands)

    @property
    def is_categorical(self) -> bool:
        return self.num_classes is not None

    @property
    def embedding_key(self) -> str:
        """Key of the encoder embedding that consumes this modality's raw input in a backbone."""
        key = self.pixel_key if self.kind == "pixel" else self.token_key
        assert key is not None
        return key

    @property
    def tokenizer_repo(self) -> str | None:
        return f"ibm-esa-geospatial/TerraMind-1.0-Tokenizer-{self.tokenizer}" if self.tokenizer else None

    @property
    def tokenizer_filename(self) -> str | None:
        return f"TerraMind_Tokenizer_{self.tokenizer}.pt" if self.tokenizer else None

    def band_index(self, band: str) -> int | None:
        """Index of ``band`` (name or Sentinel-2 id) in the pretrained order, or None if unknown."""
        band = S2_BAND_IDS.get(band.upper(), band.upper())
        return self.bands.index(band) if band in self.bands else None

    @property
    def in_decibels(self) -> bool:
        """Values (and statistics) in dB: backscatter, which linear products hold as power instead."""
        return "dB" in self.units.split()


_FSQ_DIVAE = (8, 8, 8, 6, 5)  # 15360 codes
_FSQ_LULC = (7, 5, 5, 5, 5)  # 4375 codes

MODALITIES: dict[str, Modality] = {
    m.name: m
    for m in [
        Modality(
            name="S2L1C", kind="pixel", bands=S2L1C_BANDS,
            units="Sentinel-2 L1C top-of-atmosphere reflectance x 10000 (uint16 DN)", value_range=(0.0, 20000.0),
            mean=(2357.089, 2137.385, 2018.788, 2082.986, 2295.651, 2854.537, 3122.849, 3040.56, 3306.481,
                  1473.847, 506.07, 2472.825, 1838.929),
            std=(1624.683, 1675.806, 1557.708, 1833.702, 1823.738, 1733.977, 1732.131, 1679.732, 1727.26,
                 1024.687, 442.165, 1331.411, 1160.419),
            pixel_key="untok_sen2l1c@224", aliases=("S2L1C", "sen2l1c"),
        ),
        Modality(
            name="S2L2A", kind="pixel", bands=S2L2A_BANDS,
            units="Sentinel-2 L2A bottom-of-atmosphere reflectance x 10000 (uint16 DN)", value_range=(0.0, 20000.0),
            mean=(1390.458, 1503.317, 1718.197, 1853.91, 2199.1, 2779.975, 2987.011, 3083.234, 3132.22, 3162.988,
                  2424.884, 1857.648),
            std=(2106.761, 2141.107, 2038.973, 2134.138, 2085.321, 1889.926, 1820.257, 1871.918, 1753.829,
                 1797.379, 1434.261, 1334.311),
            pixel_key="untok_sen2l2a@224", token_key="tok_sen2l2a@224", vocab_size=15360, fsq_levels=_FSQ_DIVAE,
            tokenizer="S2L2A", aliases=("S2L2A", "sen2l2a"),
        ),
        Modality(
            name="RGB", kind="pixel", bands=("RED", "GREEN", "BLUE"),
            units="Sentinel-2 true-colour RGB, 8-bit", value_range=(0.0, 255.0),
            mean=(87.271, 80.931, 66.667), std=(58.767, 47.663, 42.631),
            pixel_key="untok_sen2rgb@224", aliases=("RGB", "S2RGB", "sen2rgb"),
        ),
        Modality(
            name="S1GRD", kind="pixel", bands=("VV", "VH"),
            units="Sentinel-1 GRD backscatter in dB", value_range=(-50.0, 20.0),
            mean=(-12.599, -20.293), std=(5.195, 5.890),
            pixel_key="untok_sen1grd@224", token_key="tok_sen1grd@224", vocab_size=15360, fsq_levels=_FSQ_DIVAE,
            tokenizer="S1GRD", aliases=("S1GRD", "S1", "sen1grd", "sen1"),
        ),
        Modality(
            name="S1RTC", kind="pixel", bands=("VV", "VH"),
            units="Sentinel-1 RTC backscatter in dB", value_range=(-50.0, 20.0),
            mean=(-10.93, -17.329), std=(4.391, 4.459),
            pixel_key="untok_sen1rtc@224", token_key="tok_sen1rtc@224", vocab_size=15360, fsq_levels=_FSQ_DIVAE,
            tokenizer="S1RTC", aliases=("S1RTC", "sen1rtc"),
        ),
        Modality(
            name="DEM", kind="pixel", bands=("DEM",),
            units="elevation in metres", value_range=(-500.0, 9000.0),
            mean=(670.665,), std=(951.272,),
            pixel_key="untok_dem@224", token_key="tok_dem@224", vocab_size=15360, fsq_levels=_FSQ_DIVAE,
            tokenizer="DEM", aliases=("DEM",), may_be_flat=True,
        ),
        Modality(
            name="NDVI", kind="token", bands=("NDVI",),
            units="normalised difference vegetation index", value_range=(-1.0, 1.0),
            mean=(0.327,), std=(0.322,),
            token_key="tok_ndvi@224", vocab_size=15360, fsq_levels=_FSQ_DIVAE, tokenizer="NDVI", aliases=("NDVI",),
        ),
        Modality(
            name="LULC", kind="token", bands=LULC_CLASSES,
            units="land-use/land-cover class index (ESRI 10 m, 10 classes)", value_range=(0.0, 9.0),
            mean=(0.0,), std=(1.0,),  # identity: class maps are one-hot encoded, not standardised
            token_key="tok_lulc@224", vocab_size=4375, fsq_levels=_FSQ_LULC, tokenizer="LULC",
            num_classes=10, class_names=LULC_CLASSES, aliases=("LULC",),
        ),
        Modality(
            name="Coordinates", kind="sequence", bands=("LON", "LAT"),
            units="longitude, latitude in degrees", value_range=(-180.0, 180.0), mean=(0.0, 0.0), std=(1.0, 1.0),
            token_key="coords", vocab_size=30000, aliases=("Coordinates", "coords", "location"),
        ),
    ]
}

# The six modalities that have a tokenizer (can be TiM / generation targets).
TOKEN_MODALITIES = tuple(name for name, m in MODALITIES.items() if m.tokenizer)
# Modalities a backbone patch-embeds from pixels.
PIXEL_MODALITIES = tuple(name for name, m in MODALITIES.items() if m.kind == "pixel")

# Checkpoint key -> (canonical modality, "pixel" | "token" | "sequence")
_KEY_TO_MODALITY: dict[str, tuple[str, str]] = {}
for _m in MODALITIES.values():
    if _m.pixel_key:
        _KEY_TO_MODALITY[_m.pixel_key] = (_m.name, "pixel")
    if _m.token_key:
        _KEY_TO_MODALITY[_m.token_key] = (_m.name, "sequence" if _m.kind == "sequence" else "token")

# Every accepted spelling (case-insensitive) -> canonical modality: the catalogue's names and aliases, its checkpoint
# keys with and without the ``@224`` suffix. Names are matched exactly: ``S1_RTC`` or ``S1RTX`` is an error with
# "did you mean", never S1GRD by a substring.
_NAMES: dict[str, str] = {}
for _m in MODALITIES.values():
    for _spelling in (_m.name, *_m.aliases, *(k for k in (_m.pixel_key, _m.token_key) if k)):
        _NAMES[_spelling.lower()] = _m.name
        _NAMES[_spelling.split("@")[0].lower()] = _m.name
_KEYS_LOWER = {k.lower(): k for k in _KEY_TO_MODALITY}
_KEYS_LOWER.update({k.split("@")[0].lower(): k for k in _KEY_TO_MODALITY})


def accepted_names() -> list[str]:
    """Every modality spelling the catalogue accepts (for error messages and docs)."""
    return sorted({n for m in MODALITIES.values() for n in (m.name, *m.aliases)} | set(_KEY_TO_MODALITY))


def resolve_input(name: str, *, key: str | None = None) -> tuple[str, str]:
    """Resolve a backbone *input* name to ``(canonical modality, embedding key)``.

    Raw-pixel names map to the ``untok_*`` embedding, token names (LULC, NDVI) to ``tok_*``; an exact
    checkpoint key (``tok_sen2l2a@224``, also without ``@224``) selects that embedding. Matching is exact and
    case-insensitive against the catalogue's names and aliases.
    """
    lowered = str(name).lower()
    if lowered in _KEYS_LOWER and lowered not in {m.lower() for m in MODALITIES}:
        checkpoint_key = _KEYS_LOWER[lowered]
        return _KEY_TO_MODALITY[checkpoint_key][0], checkpoint_key
    modality = _NAMES.get(lowered)
    if modality is None:
        raise UnknownNameError("modality", str(name), accepted_names(), key=key)
    return modality, MODALITIES[modality].embedding_key


def resolve_output(name: str, *, key: str | None = None) -> tuple[str, str]:
    """Resolve a TiM / generation *target* name to ``(canonical modality, token embedding key)``."""
    lowered = str(name).lower()
    modality = _NAMES.get(lowered)
    if modality is not None and MODALITIES[modality].token_key is not None:
        return modality, MODALITIES[modality].token_key
    raise UnknownNameError("output modality", str(name), TOKEN_MODALITIES + ("Coordinates",), key=key)


def get_modality(name: str, *, key: str | None = None) -> Modality:
    """The catalogue entry for a user modality name (any accepted alias) or a checkpoint key."""
    resolved = resolve_input(name, key=key)
    return MODALITIES[resolved[0]]


def find_modality(name: str) -> Modality | None:
    """Like :func:`get_modality` but returns None for names that match no catalogue entry."""
    try:
        return get_modality(name)
    except (ModalityError, UnknownNameError):  # get_modality raises UnknownNameError for unmatched names
        return None


# The reference's standardisation tables, keyed by checkpoint key (``untok_sen2l2a@224``, ...), as the notebooks
# import them: generated from the catalogue above, never a second table.
v1_pretraining_mean: dict[str, list[float]] = {m.pixel_key: list(m.mean) for m in MODALITIES.values() if m.pixel_key}
v1_pretraining_std: dict[str, list[float]] = {m.pixel_key: list(m.std) for m in MODALITIES.values() if m.pixel_key}


def pretraining_stats(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of the v1 pretraining standardisation for a modality name or alias."""
    m = get_modality(name)
    return m.mean, m.std


def select_bands(name: str, bands: list[str], *, key: str | None = None) -> list[int | None]:
    """Pretrained band index of each requested band name (None for bands the modality lacks)."""
    m = get_modality(name, key=key)
    return [m.band_index(b) for b in bands]
