"""Bad and degenerate data: CSV rows counted truly with line numbers, single-class and empty splits."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import write_class_tree, write_fer_csv

from ferkit.cli import main
from ferkit.data.checks import check_classes
from ferkit.data.dataset import load_index
from ferkit.data.fer2013 import read_fer2013_csv
from ferkit.errors import DataError
from ferkit.labels import FER7

FAST = ["--no-progress", "--device", "cpu", "--epochs", "1", "--limit-batches", "1"]


def _csv_with(tmp_path, bad_rows: dict[int, str], n_per_split: int = 6):
    """write_fer_csv's rows (3 * n_per_split) with ``bad_rows`` inserted before those line numbers."""
    lines = write_fer_csv(tmp_path / "f.csv", n_per_split=n_per_split).read_text().splitlines()
    for lineno in sorted(bad_rows):
        lines.insert(lineno - 1, bad_rows[lineno])
    p = tmp_path / "f.csv"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_unterminated_quote_does_not_swallow_later_rows(tmp_path):
    """The named case: 18 good rows and one with an unterminated quote were read as 9, 'skipped 1'."""
    px = " ".join(["7"] * 2304)
    p = _csv_with(tmp_path, {5: f'3,"{px},Training'})
    images, labels, usages, skipped = read_fer2013_csv(p)
    assert len(images) == 18 and len(labels) == len(usages) == 18
    assert skipped == {"unterminated or stray quote (line 5)": 1}


def test_unterminated_quote_early_is_not_a_field_limit_crash(tmp_path):
    """An open quote on line 2 used to read ~all later rows into one field: _csv.Error 'field larger
    than field limit (131072)' and a traceback."""
    p = _csv_with(tmp_path, {2: '0,"1 2 3,Training'}, n_per_split=20)
    images, _, _, skipped = read_fer2013_csv(p)
    assert len(images) == 60 and skipped == {"unterminated or stray quote (line 2)": 1}


def test_quoted_pixel_fields_still_read(tmp_path):
    px = " ".join(["9"] * 2304)
    p = _csv_with(tmp_path, {3: f'4,"{px}",Training'})
    images, _, _, skipped = read_fer2013_csv(p)
    assert len(images) == 19 and not skipped


def test_bad_rows_are_counted_per_reason_with_line_numbers(tmp_path):
    px = " ".join(["1"] * 2304)
    p = _csv_with(tmp_path, {
        2: "3,1 2 3,Training",
        4: f"x,{px},Training",
        6: f"9,{px},Training",
        8: "3,1 2,Training",
        10: f"2,{px},Validation",
        12: f"2,{px}",
        14: "5,1 2 3 4,PublicTest",
        16: "0," + "9" * 200_000 + ",Training",  # one huge field, over the csv module's limit
        18: "1,4 5,Training",
    })
    images, _, _, skipped = read_fer2013_csv(p)
    assert len(images) == 18 and sum(skipped.values()) == 9
    assert skipped["pixel string of length 3, not 2304 (line 2)"] == 1
    assert skipped["pixel string of length 2, not 2304 (lines 8, 18)"] == 2
    assert skipped["non-numeric emotion or pixels (line 4)"] == 1
    assert skipped["emotion label 9 outside 0..6 (line 6)"] == 1
    assert skipped["unknown Usage value 'Validation' (line 10)"] == 1
    assert skipped["2 fields instead of 3 (line 12)"] == 1
    assert any(k.endswith("(line 16)") for k in skipped)


def test_many_bad_lines_list_the_first_three(tmp_path):
    p = _csv_with(tmp_path, {n: "1,4 5,Training" for n in (2, 3, 4, 5, 6)})
    _, _, _, skipped = read_fer2013_csv(p)
    assert skipped == {"pixel string of length 2, not 2304 (lines 2, 3, 4, ... 2 more)": 5}


def test_csv_skips_reach_the_user_with_line_numbers(tmp_path, capsys):
    p = _csv_with(tmp_path, {5: '3,"1 2,Training'}, n_per_split=14)
    data = tmp_path / "data"
    data.mkdir()
    p.rename(data / "fer2013.csv")
    assert main(["train", "boulis-baseline", "--data", str(data / "fer2013.csv"), "--out", str(tmp_path / "runs"),
                 *FAST]) == 0
    assert "1x unterminated or stray quote (line 5)" in capsys.readouterr().out


# --- degenerate splits -------------------------------------------------------------------------


def test_single_class_folder_is_refused(tmp_path, capsys):
    """Used to train to 'val accuracy 1.0000' with no warning."""
    one = write_class_tree(tmp_path / "one", classes=("happy",), n=10, splits=())
    assert main(["train", "boulis-baseline", "--data", str(one), "--out", str(tmp_path / "runs"), *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "all 9 training faces are of one class (happy)" in err[0]
    assert not (tmp_path / "runs").exists()


def test_classes_too_small_to_split_make_an_empty_validation_split(tmp_path, capsys):
    tiny = write_class_tree(tmp_path / "tiny", classes=("happy", "sad", "angry"), n=1, splits=())
    assert main(["train", "boulis-baseline", "--data", str(tiny), "--out", str(tmp_path / "runs"), *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "leaves the validation split empty" in err[0] and "val_fraction 0.1" in err[0]


def test_one_group_cannot_be_split_by_group(tmp_path):
    from ferkit.data.sources import Index, register_source

    @register_source("one-subject-test", splits=("train",), description="test only")
    def _one(root, split="train", **_):
        return Index(source="one-subject-test", root=str(root), split=split, items=[0, 1, 2, 3],
                     labels=["happy", "sad", "happy", "sad"], loader=lambda i: np.zeros((8, 8, 1), np.uint8),
                     fingerprint="x", groups=["s1"] * 4)

    with pytest.raises(DataError, match="leaves the validation split empty"):
        load_index(tmp_path, "val", "one-subject-test", val_fraction=0.2, group_val=True)


def test_small_classes_warn_that_they_are_not_validated(tmp_path, capsys):
    d = write_class_tree(tmp_path / "d", classes=("happy", "sad"), n=10, splits=())
    write_class_tree(tmp_path / "d", classes=("fear",), n=1, splits=())
    assert main(["train", "boulis-baseline", "--data", str(d), "--out", str(tmp_path / "runs"), *FAST]) == 0
    err = capsys.readouterr().err
    assert "too few faces to validate fear (training faces: fear 1)" in err
    assert "no training faces of angry, disgust, surprise, neutral" in err


def test_check_classes_rules():
    labels = list(FER7)
    assert check_classes([0, 1, 2, 3, 4, 5, 6] * 3, [0, 1, 2, 3, 4, 5, 6], labels) == []
    with pytest.raises(DataError, match="one class"):
        check_classes([3] * 9, [3], labels)
    with pytest.raises(DataError, match="validation split is empty"):
        check_classes([0, 1], [], labels)
    with warnings.catch_warnings():
        msgs = check_classes([0, 1, 1, 0], [1], ["a", "b"], where="D")
    assert msgs == ["D: too few faces to validate a (training faces: a 2); validation accuracy leaves them out",
                    "D: the validation split holds one class only (b); its accuracy says nothing about the others"]


def test_quoted_header_is_detected_as_fer2013(tmp_path):
    p = write_fer_csv(tmp_path / "q.csv", n_per_split=7)
    lines = p.read_text().splitlines()
    lines[0] = '"emotion","pixels","Usage"'
    p.write_text("\n".join(lines) + "\n")
    assert len(load_index(p, "train", val_fraction=0)) == 7  # was detected as nothing: "not a dataset"


@pytest.mark.parametrize("field,value,msg", [
    ("init_checkpoint", "{bad}", "not a readable checkpoint"),
    ("freeze", "{{freeze_until: nowhere}}", "freeze: module 'nowhere'"),
])
def test_bad_init_checkpoint_or_freeze_leaves_no_run_folder(tmp_path, capsys, field, value, msg):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    data = write_class_tree(tmp_path / "d", n=3)
    argv = ["train", "boulis-baseline", "--data", str(data), "--out", str(tmp_path / "runs"),
            "--set", f"{field}={value.format(bad=bad)}", *FAST]
    assert main(argv) == 2
    err = [e for e in capsys.readouterr().err.strip().splitlines() if not e.startswith("ferkit: warning:")]
    assert len(err) == 1 and msg in err[0], err
    assert not (tmp_path / "runs").exists()
