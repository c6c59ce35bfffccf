"""Sample discovery: data roots, greps and split files -> one :class:`SampleRecord` per sample.

Rules (TerraTorch users write the same keys; where we differ, we are stricter, never silent):

* A *grep* is a file-name glob that starts with ``*``, e.g. ``*_S2Hand.tif``. The ``*`` stands for the sample
  prefix; the rest is the suffix. A grep without a leading ``*`` gets one prepended, with a notice.
* A sample's file in a modality folder is ``<prefix><suffix>`` when that exact name exists. Otherwise, with
  ``allow_substring_file_names`` (default), any name matching ``<prefix>*<suffix>`` is accepted. Several
  candidates is an error that names them (TerraTorch silently takes the last one).
* Split files: ``.txt`` has one prefix per line; ``.csv`` has the prefix (or a file name) in its first column,
  so the original Sen1Floods11 csv rows ``X_S1Hand.tif,X_LabelHand.tif`` work: a known grep suffix (or the
  extension) is stripped from each entry to derive the prefix. Empty lines and ``#`` comments are skipped.
* Without a split file, prefixes come from the first modality's folder (the union of all modality folders
  with ``allow_missing_modalities``).
* A sample missing a modality or its label is an error listing every missing file with its modality and the
  folder searched, unless ``allow_missing_modalities`` (labels are never optional).
"""

from __future__ import annotations

import csv
import fnmatch
import glob
import os
import re
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from terramind_ft.errors import ConfigError, DataError, DataNotFoundError, Notice

SPLITS = ("train", "val", "test", "predict")
# Header cells recognised in the first row of a csv split or label file.
CSV_HEADER_NAMES = {"id", "prefix", "sample", "sample_id", "filename", "file", "file_name", "name", "image", "s1",
                    "class", "label", "target", "category", "y", "value"}
# How many offending entries an error message lists before summarising the rest.
MAX_LISTED = 10


class DataNotice(Notice):
    """A one-line notice about how the data configuration was interpreted (filterable)."""


@dataclass(frozen=True)
class SampleRecord:
    """One sample: its prefix, one file per present modality, and its label (file and/or scalar target)."""

    prefix: str
    files: dict[str, str]  # modality -> path; only present modalities
    label_file: str | None = None  # segmentation/regression raster, or the classification label source
    target: float | int | None = None  # scalar label (classification / scalar regression)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.files)


@dataclass(frozen=True)
class Grep:
    """A parsed grep: the pattern, its suffix after the leading '*', and a regex that extracts the prefix."""

    pattern: str
    suffix: str
    regex: re.Pattern = field(compare=False)

    @property
    def literal(self) -> bool:
        return not glob.has_magic(self.suffix)


def parse_grep(grep: str, *, key: str, what: str) -> Grep:
    """Parse a suffix glob such as ``*_S2Hand.tif``; ``what`` names the modality or 'label' in messages."""
    if not isinstance(grep, str) or not grep:
        raise ConfigError(f"grep for {what} must be a non-empty string like '*_S2Hand.tif', got {grep!r}", key=key)
    if "/" in grep or os.sep in grep:
        raise ConfigError(f"grep for {what} must match file names, not paths: {grep!r}", key=key)
    if not grep.startswith("*"):
        warnings.warn(f"{key}: grep {grep!r} for {what} has no leading '*'; using '*{grep}'", DataNotice,
                      stacklevel=3)
        grep = "*" + grep
    suffix = grep[1:]
    # '*' in the suffix is allowed (e.g. '*_S2*.tif'); the prefix is the shortest head that lets the rest match.
    regex = re.compile("(.*?)" + fnmatch.translate(suffix), re.DOTALL)
    return Grep(grep, suffix, regex)


def normalise_roots(
    value: str | Mapping[str, str] | None, modalities: Sequence[str], *, key: str, allow_missing: bool
) -> dict[str, str] | None:
    """``str`` (one folder for all modalities) or ``{modality: folder}`` -> ``{modality: folder}``."""
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        return {m: os.fspath(value) for m in modalities}
    if not isinstance(value, Mapping):
        raise ConfigError(f"expected a folder or a {{modality: folder}} mapping, got {type(value).__name__}", key=key)
    unknown = [k for k in value if k not in modalities]
    if unknown:
        warnings.warn(f"{key}: ignoring roots of modalities not in `modalities`: {', '.join(unknown)}", DataNotice,
                      stacklevel=3)
    missing = [m for m in modalities if m not in value]
    if missing and not allow_missing:
        raise ConfigError(
            f"no folder for modalities {missing}; add them (e.g. {key}.{missing[0]}: /path/to/folder) or set "
            "allow_missing_modalities: true", key=key)
    return {m: os.fspath(value[m]) for m in modalities if m in value}


# ------------------------------------------------------------------------------------------------ split files


def _read_rows(path: Path, key: str) -> list[list[str]]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise DataError(f"{key}: cannot read split file {path}: {exc}") from exc
    if path.suffix.lower() == ".csv":
        rows = [[c.strip() for c in row] for row in csv.reader(text.splitlines())]
    else:
        rows = [[line.strip()] for line in text.splitlines()]
    return [r for r in rows if r and r[0] and not r[0].startswith("#")]


def _file_name(entry: str) -> str:
    return entry.replace("\\", "/").rsplit("/", 1)[-1]


def _grep_prefix(entry: str, greps: Sequence[Grep]) -> str | None:
    """The prefix before the first (longest) grep suffix that the entry's file name ends with, or None."""
    name = _file_name(entry)
    for grep in sorted(greps, key=lambda g: len(g.suffix), reverse=True):
        if grep.suffix and grep.suffix != "*":
            match = grep.regex.fullmatch(name)
            if match and match.group(1):
                return match.group(1)
    return None


def derive_prefix(entry: str, greps: Sequence[Grep]) -> str:
    """The sample prefix of a split entry: strip the folder, then the first (longest) matching grep suffix or,
    failing that, a raster/text extension."""
    prefix = _grep_prefix(entry, greps)
    if prefix is not None:
        return prefix
    name = _file_name(entry)
    stem, ext = os.path.splitext(name)
    return stem if ext.lower() in (".tif", ".tiff", ".txt", ".npy", ".png", ".jp2", ".vrt") else name


def _row_prefix(row: Sequence[str], greps: Sequence[Grep]) -> str:
    """A split row's sample prefix: from the first cell that one of ``greps`` matches (Sen1Floods11's csv rows
    ``X_S1Hand.tif,X_LabelHand.tif`` name the sample by its S1 file, which an S2-only config has no grep for:
    the label cell names it then), else from the first cell."""
    for cell in row:
        prefix = _grep_prefix(cell, greps)
        if prefix is not None:
            return prefix
    return derive_prefix(row[0], greps)


def read_split_file(path: str | os.PathLike, greps: Sequence[Grep], *, key: str) -> list[str]:
    """Sample prefixes listed in a txt (one per line) or csv (first column) split file, in file order."""
    path = Path(path)
    if not path.is_file():
        hint = f" A folder was given; point {key} at the split file inside it." if path.is_dir() else ""
        raise DataNotFoundError(f"{key}: split file {path} does not exist.{hint}")
    rows = _read_rows(path, key)
    if path.suffix.lower() == ".csv" and rows and rows[0][0].lower() in CSV_HEADER_NAMES:
        rows = rows[1:]
    prefixes, seen, duplicates = [], set(), []
    for row in rows:
        prefix = _row_prefix(row, greps)
        if prefix in seen:
            duplicates.append(prefix)
            continue
        seen.add(prefix)
        prefixes.append(prefix)
    if duplicates:
        warnings.warn(f"{key}: {len(duplicates)} duplicate entries in {path} were used once "
                      f"(first: {duplicates[0]!r})", DataNotice, stacklevel=2)
    if not prefixes:
        raise DataError(f"{key}: split file {path} lists no samples (one prefix per line, or a csv whose first "
                        "column names the sample)")
    return prefixes


def read_label_table(
    path: str | os.PathLike, greps: Sequence[Grep], *, task: str, class_names: Sequence[str] | None, key: str
) -> dict[str, int | float]:
    """A ``prefix,class`` csv (class index or class name; regression: a number) -> {prefix: target}."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"{key}: label table {path} does not exist")
    rows = _read_rows(path, key)
    if rows and (rows[0][0].lower() in CSV_HEADER_NAMES or (len(rows[0]) > 1 and rows[0][1].lower() in
                                                            CSV_HEADER_NAMES)):
        rows = rows[1:]
    table: dict[str, int | float] = {}
    for line_no, row in enumerate(rows, start=1):
        if len(row) < 2:
            raise DataError(f"{key}: row {line_no} of {path} has no label column: {row!r} (expected 'prefix,class')")
        table[derive_prefix(row[0], greps)] = parse_target(row[1], task=task, class_names=class_names,
                                                           where=f"{path} row {line_no}", key=key)
    return table


def parse_target(text: str, *, task: str, class_names: Sequence[str] | None, where: str, key: str) -> int | float:
    """A class index / class name (classification) or a number (regression)."""
    text = text.strip()
    if task == "regression":
        try:
            return float(text)
        except ValueError:
            raise DataError(f"{where}: regression target {text!r} is not a number") from None
    try:
        value = float(text)
    except ValueError:
        if class_names and text in class_names:
            return list(class_names).index(text)
        known = f"; class_names are {list(class_names)}" if class_names else (
            "; set data.init_args.class_names to map class names to indices")
        raise DataError(f"{where}: class {text!r} is neither an index nor a known class name{known}") from None
    if value != int(value):
        raise DataError(f"{where}: class index {text!r} is not an integer")
    return int(value)


# ------------------------------------------------------------------------------------------------- discovery


class _Folder:
    """The file names in one folder that match a grep, listed once."""

    def __init__(self, folder: str, grep: Grep, *, what: str, key: str):
        self.folder = folder
        self.grep = grep
        if not os.path.isdir(folder):
            hint = " It is a file; give the folder that holds the files." if os.path.isfile(folder) else ""
            raise DataNotFoundError(f"{key}: folder {folder} for {what} does not exist.{hint}")
        self.names = sorted(n for n in os.listdir(folder) if fnmatch.fnmatchcase(n, grep.pattern))
        self._set = set(self.names)

    def prefixes(self) -> list[str]:
        out = []
        for name in self.names:
            match = self.grep.regex.fullmatch(name)
            if match and match.group(1):
                out.append(match.group(1))
        return out

    def find(self, prefix: str, allow_substring: bool) -> list[str]:
        """Candidate file names for ``prefix`` (exact name first; substring matches only if none)."""
        if self.grep.literal and prefix + self.grep.suffix in self._set:
            return [prefix + self.grep.suffix]
        pattern = glob.escape(prefix) + (self.grep.pattern if allow_substring else self.grep.suffix)
        return [n for n in self.names if n.startswith(prefix) and fnmatch.fnmatchcase(n, pattern)]

    def searched(self, prefix: str, allow_substring: bool) -> str:
        pattern = prefix + (self.grep.pattern if allow_substring else self.grep.suffix)
        return os.path.join(self.folder, pattern)


def discover(
    split: str,
    *,
    modalities: Sequence[str],
    roots: Mapping[str, str],
    image_greps: Mapping[str, Grep],
    label_root: str | None,
    label_grep: Grep | None,
    split_file: str | None,
    task: str | None,
    class_names: Sequence[str] | None,
    allow_substring_file_names: bool = True,
    allow_missing_modalities: bool = False,
    key_prefix: str = "data.init_args",
    class_folders: bool = False,
) -> list[SampleRecord]:
    """Resolve every sample of ``split`` to its files. Raises with the full list of problems, never drops.
    ``class_folders``: each root holds one folder per class (``<root>/<class>/<files>``), which gives the label."""
    root_key = f"{key_prefix}.{split}_data_root"
    label_key = f"{key_prefix}.{split}_label_data_root"
    given = {m: roots[m] for m in modalities if m in roots}
    if class_folders:
        return _class_folder_samples(split, given, image_greps, split_file, class_names,
                                     allow_substring_file_names, key_prefix)
    if given and any(os.path.isfile(path) for path in given.values()):
        return [_one_sample_of_files(split, given, image_greps, label_root, split_file, task, class_names,
                                     root_key=root_key, label_key=label_key, key_prefix=key_prefix)]
    folders = {m: _Folder(roots[m], image_greps[m], what=f"modality {m!r}", key=f"{root_key}.{m}")
               for m in modalities if m in roots}
    if not folders:
        raise ConfigError(f"no data folder for any of the modalities {list(modalities)}", key=root_key)

    # The label source: a folder of per-sample files, or (scalar tasks) a csv table.
    label_table: dict[str, int | float] | None = None
    label_folder: _Folder | None = None
    if label_root is not None:
        all_greps = list(image_greps.values()) + ([label_grep] if label_grep else [])
        if task in ("classification", "regression") and os.path.isfile(label_root):
            label_table = read_label_table(label_root, all_greps, task=task, class_names=class_names, key=label_key)
        else:
            assert label_grep is not None
            label_folder = _Folder(label_root, label_grep, what="the label", key=label_key)

    # Sample prefixes: the split file, else the first modality's folder (all folders if modalities may miss).
    if split_file:
        greps = list(image_greps.values()) + ([label_grep] if label_grep else [])
        prefixes = read_split_file(split_file, greps, key=f"{key_prefix}.{split}_split")
    else:
        sources = list(folders.values()) if allow_missing_modalities else [next(iter(folders.values()))]
        prefixes = sorted({p for f in sources for p in f.prefixes()})
        if not prefixes:
            first = next(iter(folders.values()))
            examples = ", ".join(os.listdir(first.folder)[:5]) or "(empty folder)"
            raise DataNotFoundError(
                f"{root_key}: no file in {first.folder} matches grep {first.grep.pattern!r} (files there: "
                f"{examples}). Fix {key_prefix}.image_grep or the folder.")

    missing: list[str] = []
    ambiguous: list[str] = []
    records: list[SampleRecord] = []
    for prefix in prefixes:
        files: dict[str, str] = {}
        n_ambiguous = len(ambiguous)
        for m, folder in folders.items():
            found = folder.find(prefix, allow_substring_file_names)
            if len(found) == 1:
                files[m] = os.path.join(folder.folder, found[0])
            elif len(found) > 1:
                ambiguous.append(f"sample {prefix!r}, modality {m!r}: {len(found)} files match "
                                 f"{folder.searched(prefix, allow_substring_file_names)}: {', '.join(found[:5])}")
            elif not allow_missing_modalities:
                missing.append(f"sample {prefix!r}, modality {m!r}: no file "
                               f"{folder.searched(prefix, allow_substring_file_names)}")
        if allow_missing_modalities and not files and len(ambiguous) == n_ambiguous:
            missing.append(f"sample {prefix!r}: no file in any modality folder ({', '.join(roots.values())})")
        label_file: str | None = None
        target: int | float | None = None
        if label_table is not None:
            if prefix in label_table:
                target, label_file = label_table[prefix], label_root
            else:
                missing.append(f"sample {prefix!r}, label: no row in {label_root}")
        elif label_folder is not None:
            found = label_folder.find(prefix, allow_substring_file_names)
            if len(found) == 1:
                label_file = os.path.join(label_folder.folder, found[0])
            elif len(found) > 1:
                ambiguous.append(f"sample {prefix!r}, label: {len(found)} files match "
                                 f"{label_folder.searched(prefix, allow_substring_file_names)}: {', '.join(found[:5])}")
            else:
                missing.append(f"sample {prefix!r}, label: no file "
                               f"{label_folder.searched(prefix, allow_substring_file_names)}")
        records.append(SampleRecord(prefix, files, label_file, target))

    if ambiguous:
        raise DataError(
            f"{split} split: {len(ambiguous)} sample files are ambiguous (several files match one sample). Make "
            f"{key_prefix}.image_grep / label_grep more specific, or set allow_substring_file_names: false:\n  "
            + _listing(ambiguous))
    if missing:
        source = f"split file {split_file}" if split_file else f"the files in {next(iter(folders.values())).folder}"
        raise DataNotFoundError(
            f"{split} split: {len(missing)} of the files that {source} promises are missing (checked "
            f"{len(prefixes)} samples; nothing was dropped). Fix {root_key} / {label_key} / image_grep / label_grep, "
            f"or remove the samples from the split:\n  " + _listing(missing))
    return records


def class_folder_names(root: str) -> list[str]:
    """The class folders of a ``class_folders`` data root, sorted: their order gives the class indices."""
    return sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))


def _class_folder_samples(split: str, roots: Mapping[str, str], image_greps: Mapping[str, Grep],
                          split_file: str | None, class_names: Sequence[str] | None,
                          allow_substring_file_names: bool, key_prefix: str) -> list[SampleRecord]:
    """Samples of roots laid out one folder per class (torchvision's ImageFolder, TerraTorch's
    GenericNonGeoClassificationDataModule): the label of ``<root>/<class>/<file>`` is the index of ``<class>``
    among the sorted folder names, so a TerraTorch checkpoint's classes line up. Every modality root must hold the
    same class folders, each sample's file in the same class folder."""
    root_key = f"{key_prefix}.{split}_data_root"
    first_modality, first_root = next(iter(roots.items()))
    if not os.path.isdir(first_root):
        raise DataNotFoundError(f"{root_key}.{first_modality}: folder {first_root} does not exist")
    classes = class_folder_names(first_root)
    if not classes:
        raise DataNotFoundError(f"{root_key}.{first_modality}: {first_root} holds no class folders; class_folders: "
                                "true reads <root>/<class name>/<sample files>")
    if class_names is not None and list(class_names) != classes:
        raise ConfigError(f"class_names {list(class_names)} must be the class folders of {first_root} in sorted "
                          f"order, {classes}: their order gives the class indices (as in torchvision's ImageFolder "
                          "and TerraTorch), so a checkpoint's classes keep their meaning",
                          key=f"{key_prefix}.class_names")
    folders = {(m, c): _Folder(os.path.join(root, c), image_greps[m], what=f"modality {m!r}, class {c!r}",
                               key=f"{root_key}.{m}") for m, root in roots.items() for c in classes}
    entries = read_split_file(split_file, list(image_greps.values()), key=f"{key_prefix}.{split}_split") \
        if split_file else None
    records: list[SampleRecord] = []
    problems: list[str] = []
    for index, name in enumerate(classes):
        first = folders[(first_modality, name)]
        prefixes = first.prefixes() if entries is None else [
            p for p in entries if first.find(p, allow_substring_file_names)]
        for prefix in prefixes:
            files: dict[str, str] = {}
            for m in roots:
                folder = folders[(m, name)]
                found = folder.find(prefix, allow_substring_file_names)
                if len(found) == 1:
                    files[m] = os.path.join(folder.folder, found[0])
                else:
                    problems.append(f"sample {prefix!r}, modality {m!r}, class {name!r}: {len(found)} files match "
                                    f"{folder.searched(prefix, allow_substring_file_names)}")
            records.append(SampleRecord(f"{name}/{prefix}", files, os.path.join(first_root, name), index))
    if entries is not None:
        counts = Counter(record.prefix.split("/", 1)[1] for record in records)
        problems += [f"sample {p!r}: in no class folder of {first_root}" for p in entries if p not in counts]
        problems += [f"sample {p!r}: in {n} class folders of {first_root}" for p, n in counts.items() if n > 1]
    if problems:
        raise DataNotFoundError(f"{split} split: {len(problems)} problems with the class folders of {root_key} "
                                f"(nothing was dropped):\n  " + _listing(problems))
    warnings.warn(f"{split} labels from the class folders of {first_root}: "
                  + ", ".join(f"{i} = {c}" for i, c in enumerate(classes)), DataNotice, stacklevel=3)
    return records


def _one_sample_of_files(split: str, files: Mapping[str, str], image_greps: Mapping[str, Grep],
                         label_root: str | None, split_file: str | None, task: str | None,
                         class_names: Sequence[str] | None, *, root_key: str, label_key: str,
                         key_prefix: str) -> SampleRecord:
    """A data root that names one file per modality (``predict_data_root: {S2L2A: scene_s2.tif, S1RTC:
    scene_s1.tif}``): one sample of exactly those files. No grep applies, the names were given; the sample is
    named after the first file, without its grep suffix where it has one."""
    folders = [m for m, path in files.items() if not os.path.isfile(path)]
    if folders:
        kinds = ", ".join(f"{m}: {'a folder' if os.path.isdir(files[m]) else 'no such file'} ({files[m]})"
                          for m in folders)
        raise DataNotFoundError(f"{root_key}: some modalities name a file, others not ({kinds}). Give one file per "
                                "modality (one scene), or one folder per modality")
    if split_file:
        raise ConfigError(f"{split_file} lists samples of folders, but {root_key} names one file per modality: "
                          f"set {key_prefix}.{split}_split: null, or give the folders",
                          key=f"{key_prefix}.{split}_split")
    first_modality, first = next(iter(files.items()))
    name = os.path.basename(first)
    match = image_greps[first_modality].regex.fullmatch(name) if first_modality in image_greps else None
    prefix = match.group(1) if match and match.group(1) else os.path.splitext(name)[0]
    label_file: str | None = None
    target: int | float | None = None
    if label_root is not None:
        if not os.path.isfile(label_root):
            raise DataNotFoundError(f"{label_key}: {label_root} is not a file; with one file per modality in "
                                    f"{root_key}, give the label as one file too")
        if task in ("classification", "regression"):
            all_greps = list(image_greps.values())
            table = read_label_table(label_root, all_greps, task=task, class_names=class_names, key=label_key)
            if prefix not in table:
                raise DataNotFoundError(f"{label_key}: no row for sample {prefix!r} (from {first}) in {label_root}")
            target, label_file = table[prefix], label_root
        else:
            label_file = label_root
    return SampleRecord(prefix, dict(files), label_file, target)


def _listing(lines: list[str]) -> str:
    shown = lines[:MAX_LISTED]
    more = f"\n  ... and {len(lines) - MAX_LISTED} more" if len(lines) > MAX_LISTED else ""
    return "\n  ".join(shown) + more
