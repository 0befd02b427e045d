"""Videos in `ferkit predict`: container timestamps, truncated files, 3GP and other containers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from mp4_edit import move_index_to_front, set_sample_times, truncate_media, write_test_video
from test_recognizer import stand_in_model

from ferkit.cli import main
from ferkit.inference.video import TruncatedVideoError, iter_frames

# The file: 30 frames at 30 fps, then 10 frames stamped 3.0-3.9 s.
VFR_TIMES = [i / 30 for i in range(30)] + [3.0 + 0.1 * k for k in range(10)]


@pytest.fixture(scope="module")
def slim(tmp_path_factory):
    return str(stand_in_model(tmp_path_factory.mktemp("video") / "tiny.pt"))


def _predict(capsys, *argv):
    rc = main(["predict", *map(str, argv), "--detector", "none", "--no-progress"])
    out, err = capsys.readouterr()
    return rc, [json.loads(line) for line in out.splitlines() if line.strip()], err


def test_variable_frame_rate_reports_container_times(slim, tmp_path, capsys):
    clip = write_test_video(tmp_path / "vfr.mp4", n=40)
    set_sample_times(clip, VFR_TIMES)
    times = [f.time for f in iter_frames(clip)]
    assert times == pytest.approx(VFR_TIMES, abs=1e-3)
    rc, recs, err = _predict(capsys, clip, "--model", slim, "--every", "1")
    assert rc == 0, err
    by_frame = {r["frame"]: r["time"] for r in recs}
    assert by_frame[29] == pytest.approx(0.967, abs=1e-3)  # was 2.9 (nominal 10 fps)
    assert by_frame[31] == pytest.approx(3.1, abs=1e-3)
    # --every keeps each analysed frame's own time, not index / rate.
    assert [f.time for f in iter_frames(clip, every=10)] == pytest.approx([0, 10 / 30, 20 / 30, 3.0], abs=1e-3)


def test_truncated_mp4_is_reported(slim, tmp_path, capsys):
    clip = write_test_video(tmp_path / "cut.mp4", n=40)
    move_index_to_front(clip)  # the index survives the cut, as in a streamed download
    truncate_media(clip, 0.5)
    frames = []
    with pytest.raises(TruncatedVideoError) as exc:
        for f in iter_frames(clip):
            frames.append(f.index)
    assert frames == list(range(len(frames))) and 5 < len(frames) < 40
    assert (exc.value.frames_read, exc.value.frames_declared) == (len(frames), 40)
    rc, recs, err = _predict(capsys, clip, "--model", slim)
    assert rc == 1  # was 0 with no warning
    assert len(recs) == len(frames)  # what could be read was analysed
    assert f"warning: {clip}: the stream ends after {len(frames)} of the 40 frames" in err
    summary = err.strip().splitlines()[-1]
    assert f"1 video(s) ({len(frames)} frames analysed" in summary
    assert "1 input(s) with warnings: 1x truncated video" in summary


def test_complete_videos_are_not_called_truncated(tmp_path):
    clip = write_test_video(tmp_path / "whole.mp4", n=12)
    move_index_to_front(clip)
    assert len(list(iter_frames(clip))) == 12
    assert len(list(iter_frames(clip, max_frames=5))) == 5  # stopping early is not a cut
    for ext in (".mkv", ".avi"):  # containers whose frame count OpenCV estimates
        assert len(list(iter_frames(write_test_video(tmp_path / f"w{ext}", n=12)))) == 12


def test_3gp_and_unlabelled_videos_are_read_as_video(slim, tmp_path, capsys):
    three = write_test_video(tmp_path / "phone.3gp", n=6)
    assert three.read_bytes()[8:11] == b"3gp"  # a real 3GP brand
    odd = shutil.copy(write_test_video(tmp_path / "x.mp4", n=6), tmp_path / "download.bin")
    rc, recs, err = _predict(capsys, three, odd, "--model", slim)
    assert rc == 0, err  # was "corrupt or unreadable image" for the .3gp
    assert sorted({Path(r["source"]).name for r in recs}) == ["download.bin", "phone.3gp"]
    assert "2 video(s) (12 frames analysed" in err


def test_unreadable_video_and_missing_webcam_are_typed(slim, tmp_path, capsys):
    (tmp_path / "fake.mp4").write_text("not a video")
    rc, recs, err = _predict(capsys, tmp_path / "fake.mp4", "--webcam", "97", "--model", slim)
    assert rc == 1 and not recs
    assert "2 input(s) skipped: 1x unreadable video, 1x webcam not available" in err


def test_unknown_frame_counts_are_not_used(tmp_path, monkeypatch):
    # Live WebM / MPEG-TS streams declare no length: OpenCV reports 0, -1 or a huge negative.
    import cv2

    from ferkit.inference import video

    clip = write_test_video(tmp_path / "live.mp4", n=8)
    real = cv2.VideoCapture

    class NoLength:
        def __init__(self, *a):
            self._cap = real(*a)

        def get(self, prop):
            return -9.2e18 if prop == cv2.CAP_PROP_FRAME_COUNT else self._cap.get(prop)

        def __getattr__(self, name):
            return getattr(self._cap, name)

    monkeypatch.setattr(video.cv2, "VideoCapture", NoLength)
    assert video.frame_count(clip) is None  # was -9.2e18: a negative progress-bar total
    assert len(list(iter_frames(clip))) == 8  # and no truncation claimed
