"""Bands and standardisation: which bands of each modality's files feed the model, and their statistics.

One :class:`~terramind_ft.data.dataset.ModalitySpec` per modality, from ``dataset_bands`` (what the files hold),
``output_bands`` (what the model takes, by name; band aliases such as RED = B04 match), ``means`` / ``stds``
(per output or dataset band; default the TerraMind pretraining statistics), ``constant_scale`` (folded into the
statistics), ``time_steps`` (bands-as-time) and, for predict files that hold other bands,
``predict_dataset_bands``. Option keys may name a modality by catalogue name or alias.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from terramind_ft.data.dataset import ModalitySpec
from terramind_ft.errors import ConfigError, did_you_mean
from terramind_ft.modalities import S2_BAND_IDS, accepted_names, find_modality

KEY = "data.init_args"
TIME_LAYOUTS = ("time_major", "band_major")


def canonical_band(name: str) -> str:
    return S2_BAND_IDS.get(str(name).upper(), str(name).upper())


def find_bands(file_bands: Sequence[Any], wanted: Sequence[Any]) -> tuple[list[int], list[Any]]:
    """(indices in ``file_bands`` of the ``wanted`` bands found there, by canonical name; the wanted bands that are
    not there)."""
    canon = [canonical_band(str(b)) for b in file_bands]
    found, missing = [], []
    for b in wanted:
        if canonical_band(str(b)) in canon:
            found.append(canon.index(canonical_band(str(b))))
        else:
            missing.append(b)
    return found, missing


def lookup(table: dict[str, Any] | None, modality: str) -> Any:
    """``table[modality]``, also accepting the catalogue name or an alias as the key."""
    if not table:
        return None
    if modality in table:
        return table[modality]
    entry = find_modality(modality)
    if entry is not None:
        for k, v in table.items():
            other = find_modality(k)
            if other is not None and other.name == entry.name:
                return v
    return None


def configured_modality(modalities: Sequence[str], name: str, option: str) -> str:
    """The configured modality a per-modality option's key names (its name, catalogue name or an alias)."""
    for m in modalities:
        if lookup({name: True}, m) is not None:
            return m
    raise ConfigError(f"{option} names {name!r}, which is not one of {list(modalities)}",
                      key=f"{KEY}.{option}.{name}")


def build_specs(modalities: Sequence[str], dataset_bands: dict, output_bands: dict, means: dict | None,
                stds: dict | None) -> dict[str, ModalitySpec]:
    """How each modality's files are read and standardised: the bands taken (by name, from dataset_bands /
    output_bands / the catalogue) and their means and stds (given, per output or dataset band, or TerraMind's)."""
    specs = {}
    for m in modalities:
        entry = find_modality(m)
        file_bands = lookup(dataset_bands, m)
        out_bands = lookup(output_bands, m)
        # integers are TerraTorch's placeholders for bands without a name: named by their number here
        file_bands = [str(b) for b in file_bands] if file_bands is not None else None
        out_bands = [str(b) for b in out_bands] if out_bands is not None else None
        if file_bands is None and out_bands is not None:
            if entry is None:
                raise ConfigError(f"output_bands for {m!r} need dataset_bands.{m} (the bands in the files)",
                                  key=f"{KEY}.dataset_bands")
            file_bands = list(entry.bands)
        band_indices = None
        if out_bands is not None:
            band_indices, missing = find_bands(file_bands, out_bands)
            if missing:
                raise ConfigError(f"output band {missing[0]!r} of {m!r} is not in dataset_bands {list(file_bands)}",
                                  key=f"{KEY}.output_bands.{m}")
        bands = tuple(out_bands or file_bands or (entry.bands if entry else ()))
        expected = len(file_bands) if file_bands is not None else (entry.num_bands if entry else None)

        mean, std = lookup(means, m), lookup(stds, m)
        if (mean is None) != (std is None):
            raise ConfigError(f"give both means.{m} and stds.{m}, or neither (pretraining statistics)",
                              key=f"{KEY}.{'stds' if std is None else 'means'}.{m}")
        if mean is None:
            if entry is None:
                raise ConfigError(f"{m!r} is not a TerraMind modality name.{did_you_mean(m, accepted_names())} A "
                                  "modality of your own has no pretraining statistics: give "
                                  f"means.{m} and stds.{m} (terramind-ft compute-statistics prints them)",
                                  key=f"{KEY}.means.{m}")
            idx = [entry.band_index(b) for b in bands]
            unknown = [b for b, i in zip(bands, idx, strict=True) if i is None]
            if unknown:
                raise ConfigError(f"bands {unknown} of {m!r} are not {entry.name} bands ({', '.join(entry.bands)}),"
                                  f" so they have no pretraining statistics; give means.{m} and stds.{m}",
                                  key=f"{KEY}.means.{m}")
            mean = [entry.mean[i] if len(entry.mean) > 1 else entry.mean[0] for i in idx]
            std = [entry.std[i] if len(entry.std) > 1 else entry.std[0] for i in idx]
        else:
            mean, std = [float(v) for v in mean], [float(v) for v in std]
            n_out = len(bands) if bands else None
            for name, values in (("means", mean), ("stds", std)):
                if n_out is not None and len(values) != n_out:
                    if band_indices is not None and file_bands is not None and len(values) == len(file_bands):
                        continue  # given per dataset band: selected below
                    raise ConfigError(f"{len(values)} values for {n_out} bands of {m!r} ({', '.join(bands)})",
                                      key=f"{KEY}.{name}.{m}")
            if band_indices is not None and file_bands is not None and len(mean) == len(file_bands) != len(bands):
                mean = [mean[i] for i in band_indices]
            if band_indices is not None and file_bands is not None and len(std) == len(file_bands) != len(bands):
                std = [std[i] for i in band_indices]
            if expected is None:
                expected = len(mean)
        if any(s <= 0 for s in std):
            raise ConfigError(f"stds of {m!r} must be positive, got {std}", key=f"{KEY}.stds.{m}")
        specs[m] = ModalitySpec(m, tuple(band_indices) if band_indices is not None else None, expected,
                                bands or None, tuple(mean), tuple(std))
    return specs


def build_predict_specs(specs: dict[str, ModalitySpec], modalities: Sequence[str], dataset_bands: dict,
                        output_bands: dict, layout: str | None) -> dict[str, ModalitySpec]:
    """The specs of the predict files: the training specs, except where predict_dataset_bands says what the
    predict files hold; the model's bands are then found in them by name (standardised the same)."""
    training, specs = specs, dict(specs)
    for name, wanted in output_bands.items():
        m = configured_modality(modalities, name, "predict_output_bands")
        model_bands = [canonical_band(str(b)) for b in (training[m].bands or ())]
        if [canonical_band(str(b)) for b in wanted] != model_bands:
            raise ConfigError(f"predict_output_bands.{name} {list(wanted)} must be the model's bands, "
                              f"output_bands.{m} {list(training[m].bands or ())}, in that order: the model "
                              "takes no others", key=f"{KEY}.predict_output_bands.{name}")
    for name, file_bands in dataset_bands.items():
        m = configured_modality(modalities, name, "predict_dataset_bands")
        spec = training[m]
        chosen, missing = find_bands(file_bands, spec.bands or ())
        if not spec.bands or missing:
            raise ConfigError(f"predict_dataset_bands.{name} lacks the model's bands {missing or '(unnamed)'} "
                              f"(output_bands.{m}: {list(spec.bands or ())})",
                              key=f"{KEY}.predict_dataset_bands.{name}")
        per_date, steps = len(file_bands), spec.time_steps
        if steps > 1:
            chosen = dated_band_indices(chosen, per_date, steps, layout)
        specs[m] = dataclasses.replace(spec, band_indices=tuple(chosen), expected_bands=per_date * steps)
    return specs


def apply_time_steps(specs: dict[str, ModalitySpec], modalities: Sequence[str], time_steps: dict[str, int],
                     layout: str | None) -> None:
    """Bands-as-time: each modality with ``T`` time steps reads T x its bands, date by date."""
    if not time_steps:
        if layout is not None:
            raise ConfigError("time_layout without time_steps: say how many dates each file holds, e.g. "
                              "time_steps: {S2L2A: 3}", key=f"{KEY}.time_steps")
        return
    if layout not in TIME_LAYOUTS:
        raise ConfigError(f"time_steps needs time_layout, the order of the bands in the files: "
                          f"'time_major' (all bands of date 1, then of date 2, ...) or 'band_major' (band 1 at "
                          f"every date, then band 2, ...); got {layout!r}", key=f"{KEY}.time_layout")
    for name, steps in time_steps.items():
        m = configured_modality(modalities, name, "time_steps")
        if not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"time_steps is a count of dates >= 1, got {steps!r}", key=f"{KEY}.time_steps.{name}")
        if steps == 1:
            continue
        spec = specs[m]
        per_date = spec.expected_bands
        if per_date is None:
            raise ConfigError(f"the bands of one date of {m!r} are not known: give dataset_bands.{m}",
                              key=f"{KEY}.dataset_bands.{m}")
        chosen = list(spec.band_indices) if spec.band_indices is not None else list(range(per_date))
        specs[m] = dataclasses.replace(spec, band_indices=tuple(dated_band_indices(chosen, per_date, steps, layout)),
                                       expected_bands=per_date * steps, time_steps=steps)


def apply_constant_scale(specs: dict[str, ModalitySpec], modalities: Sequence[str],
                         constant_scale: dict[str, float]) -> None:
    """(x * s - mean) / std == (x - mean / s) / (std / s): the factor is folded into the statistics, so files
    are read as they are and nodata is still recognised in their own units."""
    for name, factor in constant_scale.items():
        m = configured_modality(modalities, name, "constant_scale")
        if not isinstance(factor, (int, float)) or factor <= 0:
            raise ConfigError(f"constant_scale must be a positive number, got {factor!r}",
                              key=f"{KEY}.constant_scale.{name}")
        spec = specs[m]
        specs[m] = dataclasses.replace(spec, mean=tuple(v / factor for v in spec.mean),
                                       std=tuple(v / factor for v in spec.std), constant_scale=float(factor))


def apply_linear_to_db(specs: dict[str, ModalitySpec], modalities: Sequence[str], names: Sequence[str]) -> None:
    """Modalities whose files hold linear backscatter: read as dB (the unit of TerraMind's S1 statistics)."""
    if isinstance(names, str):
        raise ConfigError(f"is a list of modalities, e.g. [{names}]", key=f"{KEY}.linear_to_db")
    for name in names:
        m = configured_modality(modalities, name, "linear_to_db")
        specs[m] = dataclasses.replace(specs[m], linear_to_db=True)


def dated_band_indices(chosen: Sequence[int], per_date: int, steps: int, layout: str | None) -> list[int]:
    """The file band indices of bands ``chosen`` (indices within one date of ``per_date`` bands) at each of
    ``steps`` dates: date by date, in the file's ``layout`` (time_major = T C, band_major = C T)."""
    if layout == "time_major":
        return [t * per_date + c for t in range(steps) for c in chosen]
    return [c * steps + t for t in range(steps) for c in chosen]


def described_band_problem(path: str, modality: str, descriptions: Sequence[str | None], spec: ModalitySpec,
                           dataset_bands: Sequence[Any] | None, option: str = "dataset_bands") -> str | None:
    """A file whose GeoTIFF band descriptions name its bands in another order than the config reads them.

    Judged only when every description is a band name of the modality (catalogue names and ids such as B04 =
    RED, or the names in ``dataset_bands``): descriptions such as ``"bands"`` or ``"Band 1"`` say nothing.
    """
    if spec.time_steps > 1 or not spec.bands:
        return None
    entry = find_modality(modality)
    known = {canonical_band(b) for b in (entry.bands if entry else ())}
    known |= {canonical_band(str(b)) for b in (dataset_bands or ())}
    described = [canonical_band(d) if d else None for d in descriptions]
    if not known or not all(d in known for d in described) or len(set(described)) != len(described):
        return None
    read = spec.band_indices if spec.band_indices is not None else range(len(spec.bands))
    wrong = [(i, name) for i, name in zip(read, spec.bands, strict=True)
             if i < len(described) and canonical_band(str(name)) != described[i]]
    if not wrong:
        return None
    i, name = wrong[0]
    return (f"{path} (modality {modality!r}) names its bands {list(descriptions)} (GeoTIFF band descriptions), "
            f"but the config reads its band {i + 1} as {name!r}, which the file calls {descriptions[i]!r} "
            f"({len(wrong)} of {len(spec.bands)} bands differ); set {KEY}.{option}.{modality} to the file's "
            f"order, {list(descriptions)}, and {KEY}.output_bands.{modality} to the bands the model takes, "
            f"{list(spec.bands)}")
