"""RAVDESS: file-name parsing, frame extraction (real clip + generated clips), splits, video voting."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("torch", reason="needs the train extra (PyTorch)")
import torch

from ferkit.data.dataset import FerDataset, load_index
from ferkit.data.ravdess import RAVDESS6, RAVDESS8, parse_name, video_ids
from ferkit.data.sources import detect_source
from ferkit.errors import DataError, FerkitError
from ferkit.evaluation.video import video_level_report

REAL_CLIP = "ravdess/Actor_19/01-01-08-02-01-01-19.mp4"


def write_clip(path: Path, n_frames: int = 12, size=(64, 48), value: int = 0) -> Path:
    """A tiny mp4 whose frame i is uniformly ``value + 10 * i`` (so frame numbers can be checked)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, size)
    assert w.isOpened(), "OpenCV cannot write mp4v here"
    for i in range(n_frames):
        w.write(np.full((size[1], size[0], 3), min(255, value + 10 * i), np.uint8))
    w.release()
    return path


@pytest.fixture
def corpus(tmp_path):
    """Actors 1, 2, 17, 21, 22: video-only speech clips of emotions 1-8 + decoys."""
    root = tmp_path / "ravdess"
    for actor in (1, 2, 17, 21, 22):
        for emo in (1, 2, 3, 8):
            write_clip(
                root / f"Actor_{actor:02d}" / f"02-01-{emo:02d}-01-01-01-{actor:02d}.mp4",
                n_frames=9,
                value=20 * emo,
            )
        write_clip(
            root / f"Actor_{actor:02d}" / f"02-02-03-01-01-01-{actor:02d}.mp4", n_frames=4
        )  # song
        write_clip(
            root / f"Actor_{actor:02d}" / f"01-01-03-01-01-01-{actor:02d}.mp4", n_frames=4
        )  # full-AV
    (root / "Actor_01" / "03-01-03-01-01-01-01.wav").write_bytes(
        b"RIFF"
    )  # audio-only: never a frame
    (root / "Actor_01" / "02-01-05-01-01-01-01.mp4").write_bytes(b"garbage, not a video")
    (root / "Actor_01" / "holiday.mp4").write_bytes(b"x")
    return root


@pytest.mark.parametrize(
    "name,expect",
    [
        ("02-01-06-01-02-01-12.mp4", (2, 1, 6, 1, 2, 1, 12)),
        ("01-02-08-02-01-02-24", (1, 2, 8, 2, 1, 2, 24)),
        ("/x/Actor_03/03-01-01-01-01-01-03.wav", (3, 1, 1, 1, 1, 1, 3)),
    ],
)
def test_parse_good_names(name, expect):
    n = parse_name(name)
    assert (
        n.modality,
        n.vocal_channel,
        n.emotion,
        n.intensity,
        n.statement,
        n.repetition,
        n.actor,
    ) == expect


def test_parse_labels_map_to_canonical_names():
    assert parse_name("02-01-06-01-01-01-01.mp4").label == "fear"
    assert parse_name("02-01-08-01-01-01-01.mp4").label == "surprise"
    assert parse_name("02-01-02-01-01-01-01.mp4").label == "calm"
    assert RAVDESS6 == ("neutral", "calm", "happy", "sad", "angry", "fear") and len(RAVDESS8) == 8


@pytest.mark.parametrize(
    "name,msg",
    [
        ("holiday.mp4", "not a RAVDESS name"),
        ("02-01-06-01-02-01.mp4", "not a RAVDESS name"),  # six parts
        ("02-01-6-01-02-01-12.mp4", "not a RAVDESS name"),  # one digit
        ("02-01-09-01-02-01-12.mp4", "emotion 09 out of range"),
        ("04-01-06-01-02-01-12.mp4", "modality 04 out of range"),
        ("02-01-06-01-02-01-25.mp4", "actor 25 out of range"),
    ],
)
def test_parse_bad_names(name, msg):
    with pytest.raises(DataError, match=msg):
        parse_name(name)


def test_real_clip_frames(shared_fixtures):
    clip = shared_fixtures / REAL_CLIP
    if not clip.is_file():
        pytest.skip(f"{clip} not available")
    root = clip.parents[1]
    assert detect_source(root).name == "ravdess"
    # the fixture is full-AV (01) and actor 19 (a validation actor by default)
    with pytest.raises(DataError, match="no RAVDESS frames"):
        load_index(root, "val", "ravdess")  # default: video-only
    idx = load_index(root, "val", "ravdess", modalities=[1, 2], every=30)
    assert len(idx) == 5 and set(idx.labels) == {"surprise"} and set(idx.groups) == {"19"}
    assert [fr for _, fr in idx.items] == [0, 30, 60, 90, 120]
    ds = FerDataset(idx, 48, 3, RAVDESS8, progress=False)
    assert ds.images.shape == (5, 48, 48, 3) and not ds.skipped
    assert ds.images.std() > 5  # real picture content, not blank frames
    frame = idx.loader(idx.items[2])
    assert frame.shape == (720, 720, 3) and frame.dtype == np.uint8
    with pytest.raises(DataError, match="no RAVDESS frames"):  # surprise is not among the 6 classes
        load_index(root, "val", "ravdess", modalities=[1], classes=6)


def test_generated_corpus_selection_and_counts(corpus):
    idx = load_index(corpus, "all", "ravdess", every=4)
    # default: video-only speech -> 5 actors x 4 emotions (+ the unreadable one, skipped)
    assert len({p for p, _ in idx.items}) == 20
    assert all(Path(p).name.startswith("02-01-") for p, _ in idx.items)
    assert [fr for p, fr in idx.items if p == idx.items[0][0]] == [0, 4, 8]
    assert idx.skipped == {"file name not in RAVDESS format": 1, "unreadable video": 1}
    six = load_index(corpus, "all", "ravdess", every=4, classes=6)
    assert "surprise" not in six.labels and {"neutral", "calm", "happy"} == set(six.labels)
    song = load_index(corpus, "all", "ravdess", vocal_channels=[1, 2], modalities=[1, 2], every=100)
    assert len(song) == 30  # one frame per video: 20 + 5 song + 5 full-AV
    ds = FerDataset(idx, 16, 3, RAVDESS8, progress=False)
    first_video = [i for i, (p, _) in enumerate(ds.items) if p == idx.items[0][0]]
    # frame i of the generated clip is about 20*emotion + 10*i: frames 0, 4, 8 are decoded in order
    means = [float(ds.images[i].mean()) for i in first_video]
    assert means[0] < means[1] < means[2] and means[2] - means[0] == pytest.approx(80, abs=8)
    with pytest.raises(FerkitError, match="unknown source option"):
        load_index(corpus, "all", "ravdess", evry=3)
    with pytest.raises(FerkitError, match="classes must be 6 or 8"):
        load_index(corpus, "all", "ravdess", classes=7)


def test_actor_independent_split_has_no_overlap(corpus):
    parts = {s: load_index(corpus, s, "ravdess", every=4) for s in ("train", "val", "test")}
    actors = {s: set(i.groups) for s, i in parts.items()}
    assert actors == {"train": {"01", "02"}, "val": {"17"}, "test": {"21", "22"}}
    assert not (actors["train"] & actors["val"]) and not (actors["train"] & actors["test"])
    custom = load_index(corpus, "test", "ravdess", every=4, test_actors=[1], val_actors=[2])
    assert set(custom.groups) == {"01"}
    with pytest.raises(FerkitError, match="both"):
        load_index(corpus, "test", "ravdess", test_actors=[1], val_actors=[1])


def test_random_frame_split_warns_and_leaks(corpus):
    with pytest.warns(UserWarning, match="inflated"):
        tr = load_index(corpus, "train", "ravdess", every=1, random_frames=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        va = load_index(corpus, "val", "ravdess", every=1, random_frames=True)
        te = load_index(corpus, "test", "ravdess", every=1, random_frames=True)
    assert not set(tr.items) & set(va.items) and not set(va.items) & set(te.items)
    assert len(tr) + len(va) + len(te) == 20 * 9
    assert set(tr.groups) & set(va.groups)  # the leak the warning is about: same actors
    assert tr.fingerprint != va.fingerprint


def test_face_crop_needs_detector(corpus, monkeypatch):
    try:
        import ferkit.faces  # noqa: F401
    except ImportError:
        with pytest.raises(FerkitError, match="face detector"):
            load_index(corpus, "all", "ravdess", face_crop=True)
        return
    from ferkit import faces

    monkeypatch.setattr(faces, "detect_faces", lambda img: [(8, 4, 20, 30)])
    idx = load_index(corpus, "all", "ravdess", face_crop=True, every=100)
    assert idx.loader(idx.items[0]).shape[:2] == (33, 33)


def test_video_level_report():
    labels = ["a", "b"]
    # video v1 (label a): frames a, a, b -> mean says a; video v2 (label b): frames a(weak), b, b
    p = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.55, 0.45], [0.1, 0.9], [0.2, 0.8]])
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    rep = video_level_report(p.log(), y, ["v1"] * 3 + ["v2"] * 3, labels)
    assert rep["n_frames"] == 6 and rep["n_videos"] == 2
    assert rep["frame_accuracy"] == pytest.approx(4 / 6) and rep["video_accuracy"] == 1.0
    assert rep["videos"] == {"v1": "a", "v2": "b"}
    with pytest.raises(FerkitError, match="different labels"):
        video_level_report(
            p.log(), torch.tensor([0, 1, 0, 1, 1, 1]), ["v1"] * 3 + ["v2"] * 3, labels
        )
    assert video_ids([("x.mp4", 0), ("x.mp4", 5)]) == ["x.mp4", "x.mp4"]
