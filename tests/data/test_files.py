"""Discovery: greps, split files (txt / csv), prefixes, exact vs substring names, missing and ambiguous files."""

from __future__ import annotations

from pathlib import Path

import pytest

from terramind_ft.data.files import (
    DataNotice, derive_prefix, discover, normalise_roots, parse_grep, read_label_table, read_split_file,
)
from terramind_ft.errors import ConfigError, DataError, DataNotFoundError


def _touch(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"")
    return folder


def _greps(**patterns):
    return {m: parse_grep(g, key=f"k.{m}", what=m) for m, g in patterns.items()}


def test_grep_prefix_extraction_and_missing_star_notice():
    g = parse_grep("*_S2Hand.tif", key="k", what="S2L1C")
    assert g.suffix == "_S2Hand.tif" and g.literal
    assert g.regex.fullmatch("Ghana_103272_S2Hand.tif").group(1) == "Ghana_103272"
    assert g.regex.fullmatch("Ghana_103272_S1Hand.tif") is None
    wild = parse_grep("*_S2*.tif", key="k", what="S2L1C")
    assert not wild.literal and wild.regex.fullmatch("a_S2_x.tif").group(1) == "a"
    with pytest.warns(DataNotice, match=r"no leading '\*'"):
        assert parse_grep("_S2Hand.tif", key="k", what="S2L1C").pattern == "*_S2Hand.tif"
    with pytest.raises(ConfigError, match="file names, not paths") as err:
        parse_grep("*/x.tif", key="data.init_args.image_grep.S2L1C", what="S2L1C")
    assert err.value.key == "data.init_args.image_grep.S2L1C"


def test_derive_prefix_from_file_names_and_csv_entries():
    greps = list(_greps(S1GRD="*_S1Hand.tif", S2L1C="*_S2Hand.tif").values()) + [
        parse_grep("*_LabelHand.tif", key="k", what="label")]
    assert derive_prefix("Ghana_103272_S1Hand.tif", greps) == "Ghana_103272"
    assert derive_prefix("v1.1/data/x/S1Hand/Ghana_103272_S1Hand.tif", greps) == "Ghana_103272"
    assert derive_prefix("Ghana_103272", greps) == "Ghana_103272"
    assert derive_prefix("scene_01.tif", []) == "scene_01"


def test_txt_split_skips_blank_comment_and_duplicate_lines(tmp_path):
    split = tmp_path / "train.txt"
    split.write_text("# header comment\nA_1\n\nB_2\nA_1\n")
    with pytest.warns(DataNotice, match="duplicate"):
        assert read_split_file(split, [], key="k") == ["A_1", "B_2"]


def test_csv_split_with_header_and_two_columns(tmp_path):
    split = tmp_path / "flood_train_data.csv"
    split.write_text("s1,label\nA_1_S1Hand.tif,A_1_LabelHand.tif\nB_2_S1Hand.tif,B_2_LabelHand.tif\n")
    greps = list(_greps(S1GRD="*_S1Hand.tif").values())
    assert read_split_file(split, greps, key="k") == ["A_1", "B_2"]


def test_split_file_errors_name_the_key(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist") as err:
        read_split_file(tmp_path / "nope.txt", [], key="data.init_args.train_split")
    assert "data.init_args.train_split" in str(err.value)
    with pytest.raises(DataNotFoundError, match="point data.init_args.val_split at the split file"):
        read_split_file(tmp_path, [], key="data.init_args.val_split")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n# nothing\n")
    with pytest.raises(DataError, match="lists no samples"):
        read_split_file(empty, [], key="k")


def test_normalise_roots():
    assert normalise_roots("/d", ["A", "B"], key="k", allow_missing=False) == {"A": "/d", "B": "/d"}
    with pytest.raises(ConfigError, match=r"no folder for modalities \['B'\]") as err:
        normalise_roots({"A": "/a"}, ["A", "B"], key="data.init_args.train_data_root", allow_missing=False)
    assert err.value.key == "data.init_args.train_data_root"
    assert normalise_roots({"A": "/a"}, ["A", "B"], key="k", allow_missing=True) == {"A": "/a"}
    with pytest.warns(DataNotice, match="ignoring roots of modalities not in `modalities`: DEM"):
        normalise_roots({"A": "/a", "B": "/b", "DEM": "/c"}, ["A", "B"], key="k", allow_missing=False)


def _layout(tmp_path, prefixes=("A_1", "A_10", "B_2")):
    s2 = _touch(tmp_path / "S2", *[f"{p}_S2Hand.tif" for p in prefixes])
    s1 = _touch(tmp_path / "S1", *[f"{p}_S1Hand.tif" for p in prefixes])
    lab = _touch(tmp_path / "L", *[f"{p}_LabelHand.tif" for p in prefixes])
    return dict(modalities=["S2L1C", "S1GRD"], roots={"S2L1C": str(s2), "S1GRD": str(s1)},
                image_greps=_greps(S2L1C="*_S2Hand.tif", S1GRD="*_S1Hand.tif"), label_root=str(lab),
                label_grep=parse_grep("*_LabelHand.tif", key="k", what="label"), task="segmentation",
                class_names=None)


def test_discover_without_split_uses_first_modality_and_exact_names_win(tmp_path):
    kwargs = _layout(tmp_path)
    records = discover("train", split_file=None, **kwargs)
    assert [r.prefix for r in records] == ["A_1", "A_10", "B_2"]
    # 'A_1' would substring-match 'A_10_S2Hand.tif' too: the exact name must win
    assert records[0].files["S2L1C"].endswith("/A_1_S2Hand.tif")
    assert records[0].label_file.endswith("/A_1_LabelHand.tif")


def test_substring_matching_and_ambiguity(tmp_path):
    kwargs = _layout(tmp_path, prefixes=())
    _touch(Path(kwargs["roots"]["S2L1C"]), "X_2019_S2Hand.tif", "Y_a_S2Hand.tif", "Y_b_S2Hand.tif")
    _touch(Path(kwargs["roots"]["S1GRD"]), "X_S1Hand.tif", "Y_S1Hand.tif")
    _touch(Path(kwargs["label_root"]), "X_LabelHand.tif", "Y_LabelHand.tif")
    split = tmp_path / "split.txt"
    split.write_text("X\n")
    records = discover("train", split_file=str(split), **kwargs)
    assert records[0].files["S2L1C"].endswith("X_2019_S2Hand.tif")
    with pytest.raises(DataNotFoundError, match=r"sample 'X', modality 'S2L1C': no file .*X_S2Hand\.tif"):
        discover("train", split_file=str(split), allow_substring_file_names=False, **kwargs)
    split.write_text("Y\n")
    with pytest.raises(DataError, match="ambiguous") as err:
        discover("train", split_file=str(split), **kwargs)
    message = str(err.value)
    assert "sample 'Y', modality 'S2L1C'" in message and "Y_a_S2Hand.tif" in message and "Y_b_S2Hand.tif" in message


def test_missing_files_are_all_listed_with_modality_and_folder(tmp_path):
    kwargs = _layout(tmp_path)
    (Path(kwargs["roots"]["S1GRD"]) / "A_10_S1Hand.tif").unlink()
    (Path(kwargs["label_root"]) / "B_2_LabelHand.tif").unlink()
    split = tmp_path / "split.txt"
    split.write_text("A_1\nA_10\nB_2\nC_3\n")
    with pytest.raises(DataNotFoundError) as err:
        discover("val", split_file=str(split), **kwargs)
    message = str(err.value)
    assert "val split: 5 of the files" in message and "nothing was dropped" in message
    assert f"sample 'A_10', modality 'S1GRD': no file {kwargs['roots']['S1GRD']}/A_10*_S1Hand.tif" in message
    assert f"sample 'B_2', label: no file {kwargs['label_root']}/B_2*_LabelHand.tif" in message
    assert "sample 'C_3', modality 'S2L1C'" in message and "sample 'C_3', modality 'S1GRD'" in message


def test_allow_missing_modalities_keeps_partial_samples(tmp_path):
    kwargs = _layout(tmp_path)
    (Path(kwargs["roots"]["S1GRD"]) / "A_10_S1Hand.tif").unlink()
    _touch(Path(kwargs["roots"]["S1GRD"]), "Z_9_S1Hand.tif")
    _touch(Path(kwargs["label_root"]), "Z_9_LabelHand.tif")
    records = {r.prefix: r for r in discover("train", split_file=None, allow_missing_modalities=True, **kwargs)}
    assert set(records) == {"A_1", "A_10", "B_2", "Z_9"}  # union of the modality folders
    assert records["A_10"].modalities == ("S2L1C",) and records["Z_9"].modalities == ("S1GRD",)


def test_missing_folder_and_empty_match_messages(tmp_path):
    kwargs = _layout(tmp_path)
    kwargs["roots"] = {"S2L1C": str(tmp_path / "nowhere"), "S1GRD": kwargs["roots"]["S1GRD"]}
    with pytest.raises(DataNotFoundError, match=r"data.init_args.train_data_root.S2L1C: folder .*nowhere for "
                                                r"modality 'S2L1C' does not exist"):
        discover("train", split_file=None, **kwargs)
    kwargs = _layout(tmp_path / "b")
    kwargs["image_greps"] = _greps(S2L1C="*_B02.tif", S1GRD="*_S1Hand.tif")
    with pytest.raises(DataNotFoundError, match=r"matches grep '\*_B02.tif' \(files there: A_1_S2Hand.tif"):
        discover("train", split_file=None, **kwargs)


def test_one_file_per_modality_is_one_sample_of_those_files(tmp_path):
    """predict on one scene: ``predict_data_root: {S2L1C: file, S1GRD: file}``. Used to be refused ("It is a
    file; give the folder"), so a user had to make a folder per modality for one scene."""
    kwargs = _layout(tmp_path)
    s2, s1 = tmp_path / "S2" / "A_1_S2Hand.tif", tmp_path / "other" / "scene 7.tif"
    _touch(s1.parent, s1.name)
    kwargs.update(roots={"S2L1C": str(s2), "S1GRD": str(s1)}, label_root=None)
    (record,) = discover("predict", split_file=None, **kwargs)
    assert record.prefix == "A_1"  # named after the first file, without its grep suffix
    assert record.files == {"S2L1C": str(s2), "S1GRD": str(s1)} and record.label_file is None
    kwargs["roots"] = {"S2L1C": str(s1), "S1GRD": str(s2)}  # no grep suffix to strip: the file's stem
    assert discover("predict", split_file=None, **kwargs)[0].prefix == "scene 7"
    label = tmp_path / "L" / "A_1_LabelHand.tif"
    kwargs.update(roots={"S2L1C": str(s2), "S1GRD": str(s1)}, label_root=str(label))
    assert discover("test", split_file=None, **kwargs)[0].label_file == str(label)


def test_files_and_folders_mixed_or_with_a_split_file_are_refused(tmp_path):
    kwargs = _layout(tmp_path)
    s2 = str(tmp_path / "S2" / "A_1_S2Hand.tif")
    kwargs.update(roots={"S2L1C": s2, "S1GRD": str(tmp_path / "S1")}, label_root=None)
    with pytest.raises(DataNotFoundError, match=r"predict_data_root: some modalities name a file, others not "
                                                r"\(S1GRD: a folder"):
        discover("predict", split_file=None, **kwargs)
    kwargs["roots"]["S1GRD"] = str(tmp_path / "S1" / "A_1_S1Hand.tif")
    split = tmp_path / "split.txt"
    split.write_text("A_1\n")
    with pytest.raises(ConfigError, match="set data.init_args.predict_split: null") as err:
        discover("predict", split_file=str(split), **kwargs)
    assert err.value.key == "data.init_args.predict_split"
    with pytest.raises(DataNotFoundError, match="give the label as one file too"):
        discover("test", split_file=None, **{**kwargs, "label_root": str(tmp_path / "L")})


def test_label_table_indices_names_header_and_errors(tmp_path):
    table = tmp_path / "labels.csv"
    table.write_text("id,class\nA.tif,1\nB,cat\n")
    assert read_label_table(table, [], task="classification", class_names=["dog", "cat"], key="k") == {"A": 1, "B": 1}
    with pytest.raises(DataError, match=r"class 'cat' is neither an index nor a known class name.*set "
                                        r"data.init_args.class_names"):
        read_label_table(table, [], task="classification", class_names=None, key="k")
    table.write_text("A,2.5\n")
    assert read_label_table(table, [], task="regression", class_names=None, key="k") == {"A": 2.5}
    with pytest.raises(DataError, match="not an integer"):
        read_label_table(table, [], task="classification", class_names=None, key="k")


def _class_folders(root: Path, layout: dict[str, list[str]], suffix: str = ".tif") -> Path:
    for name, prefixes in layout.items():
        _touch(root / name, *(p + suffix for p in prefixes))
    return root


def test_class_folders_give_sorted_indices_and_split_entries_find_their_folder(tmp_path):
    s2 = _class_folders(tmp_path / "s2", {"River": ["r1", "r2"], "Forest": ["f1"], "Highway": []})
    s1 = _class_folders(tmp_path / "s1", {"River": ["r1", "r2"], "Forest": ["f1"], "Highway": []}, "_s1.tif")
    greps = _greps(S2L2A="*.tif", S1GRD="*_s1.tif")
    common = dict(modalities=["S2L2A", "S1GRD"], roots={"S2L2A": str(s2), "S1GRD": str(s1)}, image_greps=greps,
                  label_root=None, label_grep=None, task="classification", class_folders=True)
    with pytest.warns(DataNotice, match="0 = Forest, 1 = Highway, 2 = River"):
        records = discover("train", split_file=None, class_names=None, **common)
    assert {(r.prefix, r.target) for r in records} == {("Forest/f1", 0), ("River/r1", 2), ("River/r2", 2)}
    assert records[0].files["S1GRD"] == str(s1 / "Forest" / "f1_s1.tif")
    split = tmp_path / "val.txt"
    split.write_text("r2\nf1\n")
    with pytest.warns(DataNotice):
        picked = discover("val", split_file=str(split), class_names=None, **common)
    assert sorted(r.prefix for r in picked) == ["Forest/f1", "River/r2"]


def test_class_folder_problems_are_listed_not_dropped(tmp_path):
    s2 = _class_folders(tmp_path / "s2", {"A": ["x1", "x2"], "B": ["x1"]})
    s1 = _class_folders(tmp_path / "s1", {"A": ["x1"], "B": ["x1"]})
    greps = _greps(S2L2A="*.tif", S1GRD="*.tif")
    common = dict(modalities=["S2L2A", "S1GRD"], roots={"S2L2A": str(s2), "S1GRD": str(s1)}, image_greps=greps,
                  label_root=None, label_grep=None, task="classification", class_folders=True)
    with pytest.raises(DataNotFoundError, match=r"sample 'x2', modality 'S1GRD', class 'A': 0 files match"):
        discover("train", split_file=None, class_names=None, **common)
    split = tmp_path / "split.txt"
    split.write_text("x1\nx9\n")
    with pytest.raises(DataNotFoundError) as err:
        discover("train", split_file=str(split), class_names=None,
                 **{**common, "modalities": ["S2L2A"], "roots": {"S2L2A": str(s2)}})
    assert "'x9': in no class folder" in str(err.value) and "'x1': in 2 class folders" in str(err.value)
    with pytest.raises(ConfigError, match=r"sorted order, \['A', 'B'\]") as err:
        discover("train", split_file=None, class_names=["B", "A"], **common)
    assert err.value.key == "data.init_args.class_names"


def test_a_csv_row_is_named_by_the_cell_a_grep_knows(tmp_path):
    """Sen1Floods11's published rows name the sample by its S1 file; an S2-only config has no grep for that, so
    the label cell names it (before: the prefix came out as 'X_S1Hand' and every file was 'missing')."""
    split = tmp_path / "flood_test_data.csv"
    split.write_text("Bolivia_1_S1Hand.tif,Bolivia_1_LabelHand.tif\nGhana_2_S1Hand.tif,Ghana_2_LabelHand.tif\n")
    greps = [parse_grep("*_S2Hand.tif", key="k", what="S2L1C"), parse_grep("*_LabelHand.tif", key="k", what="label")]
    assert read_split_file(split, greps, key="k") == ["Bolivia_1", "Ghana_2"]
    assert read_split_file(split, greps[:1], key="k") == ["Bolivia_1_S1Hand", "Ghana_2_S1Hand"]  # no grep knows it
