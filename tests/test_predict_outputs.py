"""What `ferkit predict` writes: unique output names, true counts, score charts, face numbers."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from test_recognizer import ASTRONAUT, stand_in_model

from ferkit.cli import main
from ferkit.inference.outputs import OutputNames


@pytest.fixture(scope="module")
def slim(tmp_path_factory):
    return str(stand_in_model(tmp_path_factory.mktemp("outputs") / "tiny.pt"))


def _run(capsys, *argv):
    rc = main(["predict", *map(str, argv), "--no-progress"])
    out, err = capsys.readouterr()
    return rc, out, err.strip().splitlines()[-1]


def _face_video(path: Path, n: int = 6) -> Path:
    """n frames of the astronaut photo (one face) at 256x256."""
    frame = cv2.resize(cv2.imread(str(ASTRONAUT)), (256, 256))
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (256, 256))
    for _ in range(n):
        w.write(frame)
    w.release()
    return path


def test_images_sharing_a_stem_get_their_own_outputs(slim, tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="--plot needs the plot extra")
    src = tmp_path / "in"
    src.mkdir()
    Image.open(ASTRONAUT).convert("RGB").save(src / "photo.gif")
    Image.open(ASTRONAUT).convert("RGB").save(src / "photo.webp")
    ann, plots = tmp_path / "ann", tmp_path / "plots"
    rc, _, summary = _run(capsys, src, "--model", slim, "--save-annotated", ann, "--plot", plots)
    assert rc == 0
    base = f"{tmp_path.name}_in_photo"  # the last two folders and the stem
    assert sorted(p.name for p in ann.iterdir()) == [f"{base}.png", f"{base}_webp.png"]
    # --plot on still images draws each image's face scores (it was silently ignored).
    charts = sorted(plots.iterdir())
    assert [p.name for p in charts] == [f"{base}_scores.png", f"{base}_webp_scores.png"]
    assert all(Image.open(p).size[0] > 200 for p in charts)
    assert "2 image(s)" in summary and "wrote 2 annotated file(s) and 2 plot(s)" in summary


def test_videos_sharing_a_stem_get_their_own_outputs(slim, tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="--plot needs the plot extra")
    for cam in ("cam1", "cam2"):
        (tmp_path / "shots" / cam).mkdir(parents=True)
    _face_video(tmp_path / "shots" / "cam1" / "clip.mp4")
    _face_video(tmp_path / "shots" / "cam2" / "clip.mp4")
    _face_video(tmp_path / "shots" / "cam2" / "clip.avi")  # same folder and stem as the .mp4
    ann, plots = tmp_path / "ann", tmp_path / "plots"
    rc, _, summary = _run(capsys, tmp_path / "shots", "--model", slim, "--save-annotated", ann,
                            "--plot", plots)
    assert rc == 0
    assert sorted(p.name for p in ann.iterdir()) == [
        "shots_cam1_clip_annotated.mp4", "shots_cam2_clip_annotated.mp4",
        "shots_cam2_clip_mp4_annotated.mp4",
    ]
    assert all(cv2.VideoCapture(str(p)).get(cv2.CAP_PROP_FRAME_COUNT) == 6 for p in ann.iterdir())
    tracks = sorted(p.name for p in plots.iterdir())
    assert tracks == [
        "shots_cam1_clip_track1.png", "shots_cam2_clip_mp4_track1.png", "shots_cam2_clip_track1.png"
    ]
    assert "3 video(s)" in summary and "wrote 3 annotated file(s) and 3 plot(s)" in summary


def test_output_names_are_unique_and_stable():
    names = OutputNames()
    assert names.base("a/b/c/Photo.JPG") == "b_c_Photo"
    assert names.base("x/b/c/photo.png") == "b_c_photo_png"  # same base apart from case
    assert names.base("y/b/c/photo.png") == "b_c_photo_png-2"
    assert names.base("a/b/c/Photo.JPG") == "b_c_Photo"  # one base per input, every call
    assert names.base("webcam:0") == "webcam0"
    assert names.base("astronaut.png") == "astronaut"


def test_a_failed_write_is_reported_not_counted(slim, tmp_path, capsys):
    ann = tmp_path / "ann"
    (ann / "astronaut.png").mkdir(parents=True)  # a folder where the annotated copy would go
    rc, out, summary = _run(capsys, "--demo", "--model", slim, "--save-annotated", ann)
    assert rc == 1 and out  # the record is still written
    assert "wrote 0 annotated file(s)" in summary
    assert "1 input(s) with warnings: 1x output not written" in summary


def test_faces_are_numbered_from_1_in_every_format(slim, tmp_path, capsys):
    pair = np.concatenate([np.asarray(Image.open(ASTRONAUT).convert("RGB"))] * 2, axis=1)
    Image.fromarray(pair).save(tmp_path / "two.png")
    outs = {}
    for fmt in ("jsonl", "csv", "text"):
        rc, outs[fmt], _ = _run(capsys, tmp_path / "two.png", "--model", slim, "--format", fmt)
        assert rc == 0
    assert [json.loads(x)["face"] for x in outs["jsonl"].splitlines()] == [1, 2]
    assert [r["face"] for r in csv.DictReader(io.StringIO(outs["csv"]))] == ["1", "2"]
    assert [line.split(": face ")[1].split()[0] for line in outs["text"].splitlines()] == ["1", "2"]


def test_plot_without_matplotlib_is_a_usage_error_before_any_work(slim, tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "matplotlib" else real(n, *a))
    rc = main(["predict", "--demo", "--model", slim, "--plot", str(tmp_path / "p"), "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 2 and out == "" and "pip install 'ferkit[plot]'" in err


def test_an_image_that_breaks_the_analysis_is_skipped_not_the_batch(slim, tmp_path, capsys,
                                                                      monkeypatch):
    # The service's "one bad slot never fails a batch", on the command line: an exception
    # from detection or the model on one image used to end the whole run with a traceback.
    from ferkit.inference.recognizer import Recognizer

    real = Recognizer.predict_arrays

    def picky(self, arrays, *a, **kw):
        if any(arr.shape[1] == 13 for arr in arrays):
            raise RuntimeError("detector exploded")
        return real(self, arrays, *a, **kw)

    monkeypatch.setattr(Recognizer, "predict_arrays", picky)
    for name, size in (("a.png", (512, 512)), ("b.png", (13, 40)), ("c.png", (512, 512))):
        Image.open(ASTRONAUT).convert("RGB").resize(size).save(tmp_path / name)
    rc, out, summary = _run(capsys, tmp_path, "--model", slim, "--detector", "none")
    assert rc == 1
    assert sorted(Path(json.loads(x)["source"]).name for x in out.splitlines()) == ["a.png", "c.png"]
    assert "2 image(s)" in summary
    assert "1 input(s) skipped: 1x analysis failed (a fault: please report it)" in summary


def test_output_places_that_cannot_be_written_are_usage_errors(slim, tmp_path, capsys):
    (tmp_path / "file").write_text("x")  # a file where a folder is asked for
    for extra in (["-o", str(tmp_path / "no" / "such" / "dir" / "x.jsonl")],
                  ["--save-annotated", str(tmp_path / "file" / "ann")],
                  ["--plot", str(tmp_path / "file" / "plots")]):
        rc = main(["predict", "--demo", "--model", slim, "--no-progress", *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and err[0].startswith("ferkit: error: "), err  # was a traceback
