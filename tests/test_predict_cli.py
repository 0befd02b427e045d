"""`ferkit predict`: folders with bad files, formats, annotated output, demo, video, exit codes."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_recognizer import ASTRONAUT, png_bomb, stand_in_model

from ferkit.cli import main
from ferkit.inference import pretrained
from ferkit.labels import FER7


@pytest.fixture(scope="module")
def slim(tmp_path_factory):
    return str(stand_in_model(tmp_path_factory.mktemp("cli") / "tiny.pt"))


@pytest.fixture
def mixed_folder(tmp_path):
    """2 photos with a face (one in a sub-folder), a blank image, a corrupt JPEG, a text file."""
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    shutil.copy(ASTRONAUT, root / "a.png")
    Image.open(ASTRONAUT).convert("L").save(root / "sub" / "b.jpg")
    Image.fromarray(np.full((120, 160, 3), 90, np.uint8)).save(root / "blank.png")
    (root / "broken.jpg").write_bytes(ASTRONAUT.read_bytes()[:3000])
    (root / "notes.txt").write_text("not an image")
    (root / ".DS_Store").write_bytes(b"\0\1")  # hidden files are ignored, not counted
    return root


def _jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_folder_with_bad_files_exits_1_and_counts_them(slim, mixed_folder, capsys):
    rc = main(["predict", str(mixed_folder), "--model", slim, "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 1
    recs = _jsonl(out)
    assert sorted(Path(r["source"]).name for r in recs) == ["a.png", "b.jpg"]  # one face each
    for r in recs:
        assert set(r) >= {"source", "face", "box", "label", "confidence", "scores"}
        assert set(r["scores"]) == set(FER7) and r["label"] in FER7 and len(r["box"]) == 4
    summary = err.strip().splitlines()[-1]
    assert "3 image(s) (1 with no face)" in summary and "2 face(s)" in summary
    assert "1 input(s) skipped: 1x corrupt or unreadable image" in summary
    # A text file beside the photos is harmless: ignored and counted, not an error.
    assert "1 file(s) ignored: 1x not an image or video file (notes.txt)" in summary
    assert "skipped " + str(mixed_folder / "broken.jpg") in err  # one line per skipped input


def test_all_good_inputs_exit_0_csv_format_and_glob(slim, tmp_path, capsys):
    shutil.copy(ASTRONAUT, tmp_path / "x1.png")
    shutil.copy(ASTRONAUT, tmp_path / "x2.png")
    rc = main(
        ["predict", str(tmp_path / "x*.png"), "--model", slim, "--format", "csv", "--no-progress"]
    )
    out, err = capsys.readouterr()
    assert rc == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 2 and rows[0]["label"] in FER7
    assert list(rows[0])[:11] == [
        "source",
        "frame",
        "time",
        "track",
        "face",
        "x",
        "y",
        "w",
        "h",
        "label",
        "confidence",
    ]
    assert abs(sum(float(rows[0][k]) for k in FER7) - 1) < 1e-4
    assert rows[0]["frame"] == ""  # still images have no frame index


def test_detector_none_and_batching(slim, tmp_path, capsys):
    for i in range(5):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (48, 48), dtype=np.uint8)).save(
            tmp_path / f"crop{i}.png"
        )
    rc = main(
        [
            "predict",
            str(tmp_path),
            "--model",
            slim,
            "--detector",
            "none",
            "--batch-size",
            "2",
            "--no-progress",
        ]
    )
    recs = _jsonl(capsys.readouterr().out)
    assert rc == 0 and len(recs) == 5
    assert [Path(r["source"]).name for r in recs] == [
        f"crop{i}.png" for i in range(5)
    ]  # input order
    assert all(r["box"] == [0, 0, 48, 48] for r in recs)


def test_save_annotated_and_output_file(slim, mixed_folder, tmp_path, capsys):
    ann, out = tmp_path / "ann", tmp_path / "faces.jsonl"
    main(
        [
            "predict",
            str(mixed_folder),
            "--model",
            slim,
            "--save-annotated",
            str(ann),
            "-o",
            str(out),
            "--no-progress",
        ]
    )
    assert capsys.readouterr().out == ""
    assert len(_jsonl(out.read_text())) == 2
    written = sorted(p.name for p in ann.iterdir())
    assert len(written) == 3 and any(
        n.endswith("a.png") for n in written
    )  # images with and without faces
    im = np.asarray(Image.open(next(p for p in ann.iterdir() if p.name.endswith("a.png"))))
    assert im.shape == (512, 512, 3) and not np.array_equal(im, np.asarray(Image.open(ASTRONAUT)))


def test_demo_prints_readable_emotions(slim, capsys):
    assert main(["predict", "--demo", "--model", slim, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("astronaut.png: face 1 at (") and any(lab in out for lab in FER7)


def test_mirror_flag_changes_scores_not_boxes(slim, capsys):
    records = []
    for extra in (["--tta", "none"], ["--mirror"]):  # one view whatever the file records, then two
        assert main(["predict", "--demo", "--model", slim, "--format", "jsonl", "--no-progress",
                     *extra]) == 0
        (line,) = capsys.readouterr().out.strip().splitlines()
        records.append(json.loads(line))
    plain, mirrored = records
    assert plain["box"] == mirrored["box"] and abs(sum(mirrored["scores"].values()) - 1) < 1e-4
    assert plain["scores"] != mirrored["scores"]


def test_bad_inputs_and_usage_errors(slim, tmp_path, capsys, monkeypatch):
    (tmp_path / "bomb.png").write_bytes(png_bomb())
    (tmp_path / "fake.mp4").write_text("not a video")
    rc = main(
        [
            "predict",
            str(tmp_path / "bomb.png"),
            str(tmp_path / "fake.mp4"),
            str(tmp_path / "nope.jpg"),
            "--model",
            slim,
            "--webcam",
            "97",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1
    for reason in (
        "1x image too large (refused)",
        "1x unreadable video",
        "1x no such file or folder",
        "1x webcam not available",
    ):
        assert reason in err, err
    assert main(["predict", "--model", slim]) == 2  # no input at all
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path / "empty")
    assert main(["predict", "--demo"]) == 2
    assert "not installed" in capsys.readouterr().err


@pytest.mark.slow
def test_real_ravdess_clip_with_tracking_and_plot(slim, shared_fixtures, tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="--plot needs the plot extra")
    clip = shared_fixtures / "ravdess" / "Actor_19" / "01-01-08-02-01-01-19.mp4"
    if not clip.is_file():
        pytest.skip(f"{clip} not available")
    plots, ann = tmp_path / "plots", tmp_path / "ann"
    rc = main(
        [
            "predict",
            str(clip),
            "--model",
            slim,
            "--every",
            "15",
            "--plot",
            str(plots),
            "--save-annotated",
            str(ann),
            "--no-progress",
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 0, err
    recs = _jsonl(out)
    frames = sorted({r["frame"] for r in recs})
    assert frames and all(f % 15 == 0 for f in frames) and len(frames) >= 6  # 4 s at ~30 fps
    assert all(abs(r["time"] - r["frame"] / 30) < 0.05 for r in recs)
    # One actor: the largest face keeps one track id over the whole clip.
    main_track = max({r["track"] for r in recs}, key=lambda t: sum(r["track"] == t for r in recs))
    assert sum(r["track"] == main_track for r in recs) >= len(frames) - 1
    base = f"ravdess_Actor_19_{clip.stem}"  # last two folders and the stem
    assert (plots / f"{base}_track{main_track}.png").is_file()
    assert (ann / f"{base}_annotated.mp4").stat().st_size > 1000
    assert "1 video(s)" in err and "wrote 1 annotated file(s) and" in err


@pytest.mark.parametrize(("argv", "msg"), [
    (["--webcam", "-1"], "argument --webcam: expected a whole number >= 0, got -1"),  # OpenCV segfaulted
    (["--smoothing", "nan"], "argument --smoothing: expected a finite number, got nan"),  # NaN scores printed
    (["--smoothing", "-1"], "expected a number in (0, 1], got -1"),  # 'confidence' 2.29
    (["--smoothing", "5"], "expected a number in (0, 1], got 5"),  # 'confidence' 68.8
    (["--smoothing", "0"], "expected a number in (0, 1], got 0"),  # the first frame's scores forever
    (["--max-frames", "0"], "argument --max-frames: expected a whole number >= 1, got 0"),  # no frame, exit 0
    (["--max-frames", "-1"], "expected a whole number >= 1, got -1"),
])
def test_video_options_out_of_range_are_usage_errors(argv, msg, capsys):
    with pytest.raises(SystemExit) as e:
        main(["predict", "clip.mp4", *argv])
    assert e.value.code == 2 and msg in capsys.readouterr().err


@pytest.mark.parametrize("alpha", [float("nan"), -1.0, 5.0, 0.0])
def test_tracker_refuses_a_smoothing_that_is_no_average(alpha):
    from ferkit.errors import FerkitError
    from ferkit.inference.video import IouTracker

    with pytest.raises(FerkitError, match=r"smoothing must be in \(0, 1\]"):
        IouTracker(alpha=alpha)
    IouTracker(alpha=1.0)
