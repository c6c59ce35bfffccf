"""Download the hand-labelled Sen1Floods11 chips and lay them out for configs/sen1floods11*.yaml.

Needs network access (it is never run by the tests). Source: the public Sen1Floods11 v1.1 bucket
(``gs://sen1floods11``, read over HTTPS, no account needed): 446 hand-labelled 512 x 512 chips of
S2 L1C (13 bands, uint16), S1 GRD (VV, VH in dB, float32, with NaN) and labels (-1 no data, 0, 1), plus the
train / valid / test / bolivia split csv files (252 / 89 / 90 / 15 chips). About 3.5 GB.

    python scripts/download_sen1floods11.py data/sen1floods11_v1.1            # TerraMind layout (default)
    python scripts/download_sen1floods11.py data/sen1floods11 --layout original

TerraMind layout (what IBM/terramind's configs and ours expect)::

    <out>/data/S2L1CHand/<Region>_<id>_S2Hand.tif
    <out>/data/S1GRDHand/<Region>_<id>_S1Hand.tif
    <out>/data/LabelHand/<Region>_<id>_LabelHand.tif
    <out>/splits/flood_{train,valid,test,bolivia}_data.txt     one "<Region>_<id>" per line

Original layout: the bucket's own ``v1.1/data/flood_events/HandLabeled/{S1Hand,S2Hand,LabelHand}`` and
``v1.1/splits/flood_handlabeled/*.csv`` (GenericMultiModalDataModule reads both). Files already present with
the right size are skipped, so an interrupted download resumes; every file is written to a temporary name
and renamed when complete.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

BUCKET = "sen1floods11"
LIST_URL = "https://storage.googleapis.com/storage/v1/b/{bucket}/o?{query}"
OBJECT_URL = "https://storage.googleapis.com/{bucket}/{name}"
HAND = "v1.1/data/flood_events/HandLabeled"
SPLITS = "v1.1/splits/flood_handlabeled"
LAYERS = {"S2Hand": "S2L1CHand", "S1Hand": "S1GRDHand", "LabelHand": "LabelHand"}  # bucket -> TerraMind folder
EXPECTED_CHIPS = 446
SPLIT_NAMES = ("train", "valid", "test", "bolivia")


def list_objects(prefix: str) -> list[dict]:
    """Every object under ``prefix`` (name, size), following the JSON API's pages."""
    objects, token = [], None
    while True:
        query = {"prefix": prefix, "fields": "items(name,size),nextPageToken"}
        if token:
            query["pageToken"] = token
        with urllib.request.urlopen(LIST_URL.format(bucket=BUCKET, query=urllib.parse.urlencode(query))) as r:
            page = json.load(r)
        objects += page.get("items", [])
        token = page.get("nextPageToken")
        if not token:
            return objects


def fetch(name: str, dest: Path, size: int | None) -> bool:
    """Download one object to ``dest`` atomically; False when it was already there."""
    if dest.exists() and (size is None or dest.stat().st_size == size):
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(
                OBJECT_URL.format(bucket=BUCKET, name=urllib.parse.quote(name))) as r:
            while chunk := r.read(1 << 20):
                out.write(chunk)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return True


def target_path(out: Path, name: str, layout: str) -> Path | None:
    """Where a bucket object goes in ``layout`` (None: not needed)."""
    if layout == "original":
        return out / name
    if name.startswith(SPLITS):
        return None  # split csv files are converted, not copied
    layer = Path(name).parent.name
    return out / "data" / LAYERS[layer] / Path(name).name if layer in LAYERS else None


def convert_splits(out: Path, csv_dir: Path) -> dict[str, int]:
    """``flood_<split>_data.csv`` rows ``X_S1Hand.tif,X_LabelHand.tif`` -> txt of ``X`` prefixes."""
    counts = {}
    (out / "splits").mkdir(parents=True, exist_ok=True)
    for split in SPLIT_NAMES:
        rows = (csv_dir / f"flood_{split}_data.csv").read_text().split()
        prefixes = [row.split(",")[0].removesuffix("_S1Hand.tif") for row in rows if row.strip()]
        (out / "splits" / f"flood_{split}_data.txt").write_text("".join(p + "\n" for p in prefixes))
        counts[split] = len(prefixes)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output folder, e.g. data/sen1floods11_v1.1")
    parser.add_argument("--layout", choices=("terramind", "original"), default="terramind")
    args = parser.parse_args(argv)

    objects = [o for layer in LAYERS for o in list_objects(f"{HAND}/{layer}/")]
    splits = [o for o in list_objects(f"{SPLITS}/") if o["name"].endswith(".csv")]
    chips = {Path(o["name"]).name.rsplit("_", 1)[0] for o in objects if o["name"].endswith(".tif")}
    if len(chips) != EXPECTED_CHIPS:
        print(f"warning: the bucket lists {len(chips)} hand-labelled chips, expected {EXPECTED_CHIPS}", file=sys.stderr)

    fetched = 0
    for obj in tqdm(objects + splits, desc="sen1floods11", unit="file"):
        dest = target_path(args.out, obj["name"], args.layout)
        if dest is None and obj["name"].startswith(SPLITS):
            dest = args.out / ".csv_splits" / Path(obj["name"]).name
        if dest is not None:
            fetched += fetch(obj["name"], dest, int(obj["size"]) if "size" in obj else None)
    if args.layout == "terramind":
        counts = convert_splits(args.out, args.out / ".csv_splits")
        print("splits: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"{fetched} files downloaded, {len(objects) + len(splits) - fetched} already present, in {args.out}")
    print(f"next: terramind-ft check --config configs/sen1floods11.yaml (data roots point at {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
