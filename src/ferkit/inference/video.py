"""Video and webcam prediction: frame reading, IoU face tracking, score smoothing, plots.

A video is read with OpenCV one frame at a time (never loaded whole). Every
``every``-th frame is decoded and analysed; the frames in between are only
grabbed (skipped without decoding), which is what makes ``--every`` cheap.

Faces are linked across analysed frames by box overlap (IoU) into tracks with
stable ids, and each track's emotion scores are smoothed with an exponential
moving average, so the label does not flicker between frames.
"""

from __future__ import annotations

import os
import time as _time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ferkit.errors import DataError, FerkitError
from ferkit.faces import Box, iou
from ferkit.inference.inputs import VIDEO_EXTENSIONS, is_video_file, sniff_media

__all__ = [
    "VIDEO_EXTENSIONS", "CameraError", "Frame", "IouTracker", "TruncatedVideoError", "VideoError",
    "annotate", "frame_count", "frame_rate", "is_video_file", "iter_frames", "open_capture", "plot_tracks",
    "predict_video",
]


class VideoError(DataError):
    """A video file that cannot be opened or yields no frame."""

    reason = "unreadable video"


class CameraError(VideoError):
    """A webcam that cannot be opened."""

    reason = "webcam not available"


class TruncatedVideoError(VideoError):
    """The stream ended before the frame count its container declares.

    Raised by :func:`iter_frames` *after* the last readable frame was yielded,
    so everything readable has been analysed; the caller decides whether a
    partial result is acceptable. ``frames_read`` and ``frames_declared`` hold
    the two counts.
    """

    reason = "truncated video"

    def __init__(self, message: str, frames_read: int, frames_declared: int):
        super().__init__(message)
        self.frames_read, self.frames_declared = frames_read, frames_declared


@dataclass
class Frame:
    """One analysed frame: index in the stream, time in seconds, RGB uint8 pixels.

    ``time`` is the container's presentation time of the frame (so variable
    frame rate files, as phones record, get true times); for webcams it is the
    wall-clock time since the capture opened.
    """

    index: int
    time: float
    rgb: np.ndarray


def open_capture(source: str | os.PathLike | int) -> cv2.VideoCapture:
    """Open a video file or a webcam (int index).

    Raises:
        VideoError: no such file, or not a video OpenCV can read.
        CameraError: the webcam cannot be opened.
    """
    what = f"webcam {source}" if isinstance(source, int) else str(source)
    if not isinstance(source, int) and not Path(source).is_file():
        raise VideoError(f"{what}: no such video file")
    # FFmpeg's own log lines ("partial file", "illegal dc vlc") would repeat, in a
    # less useful form, the one-line errors and warnings we raise; set the variable
    # yourself to see them.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    try:  # OpenCV's own multi-line warnings would repeat our one-line error
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:
        pass
    cap = cv2.VideoCapture(source if isinstance(source, int) else os.fspath(source))
    if not cap.isOpened():
        cap.release()
        if isinstance(source, int):
            raise CameraError(f"{what}: cannot open (no such camera?)")
        raise VideoError(f"{what}: cannot open (not a video, or an unsupported codec)")
    return cap


def frame_count(source) -> int | None:
    """Number of frames a video file declares (None for webcams / unknown)."""
    if isinstance(source, int):
        return None
    cap = cv2.VideoCapture(os.fspath(source))
    n = _declared_count(cap)
    cap.release()
    return n or None


def _declared_count(cap) -> int:
    """The container's frame count, 0 when unknown (live WebM and MPEG-TS streams report
    0, a negative number or NaN)."""
    n = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    return int(n) if np.isfinite(n) and 0 < n < 2**40 else 0


def frame_rate(source, default: float = 25.0) -> float:
    """Nominal frames per second of a video file (``default`` for webcams and odd files)."""
    if isinstance(source, int):
        return default
    cap = cv2.VideoCapture(os.fspath(source))
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    cap.release()
    return fps if 0 < fps < 1000 else default


def _count_slack(source, declared: int) -> int:
    """Frames a complete file may fall short of its declared count.

    MP4/MOV/3GP index every sample, so FFmpeg's count is exact. Other containers
    (Matroska, AVI, MPEG) only give a duration, and OpenCV estimates the count
    as duration x frame rate, which can be off by a frame or two.
    """
    try:
        with open(source, "rb") as f:
            found = sniff_media(f.read(32))
    except OSError:
        found = None
    exact = found is not None and found[1] in ("mp4", "mov", "3gp")
    return 0 if exact else max(2, round(0.02 * declared))


def iter_frames(
    source: str | os.PathLike | int, every: int = 1, max_frames: int | None = None
) -> Iterator[Frame]:
    """Yield every ``every``-th frame of a video file or webcam as RGB.

    Args:
        source: video path or webcam index.
        every: analyse one frame in ``every`` (the others are grabbed, not decoded).
        max_frames: stop after this many frames of the stream (None: until the end).

    Raises:
        VideoError: the source cannot be opened, or yields no frame at all.
        CameraError: the webcam cannot be opened.
        TruncatedVideoError: (after the last readable frame) a file whose stream
            ends well before the frame count its container declares: cut-off
            downloads and recordings, damaged media data.
    """
    every = max(1, int(every))
    cap = open_capture(source)
    camera = isinstance(source, int)
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    fps = fps if 0 < fps < 1000 else 25.0  # webcams and odd files report 0 or nonsense
    declared = 0 if camera else _declared_count(cap)
    start = _time.monotonic()
    i, last_t, ended = 0, None, False
    try:
        while max_frames is None or i < max_frames:
            if i % every:
                ok = cap.grab()
            else:
                ok, bgr = cap.read()
                if ok:
                    t = _frame_time(cap, camera, start, i, fps, last_t)
                    last_t = t
                    yield Frame(i, t, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            if not ok:
                if i == 0:
                    raise VideoError(
                        f"{source}: no readable frame (corrupt video or unsupported codec)"
                    )
                ended = True
                break
            i += 1
    finally:
        cap.release()
    if ended and declared and i < declared - _count_slack(source, declared):
        raise TruncatedVideoError(
            f"{source}: the stream ends after {i} of the {declared} frames its container "
            "declares (truncated or damaged file); the frames before the cut were analysed",
            i, declared,
        )


def _frame_time(cap, camera: bool, start: float, i: int, fps: float, last: float | None) -> float:
    """Seconds of the frame just read: the container's timestamp when it has a sane one."""
    if camera:
        return _time.monotonic() - start
    t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
    if last is None:
        return t if np.isfinite(t) and t >= 0 else 0.0
    if not np.isfinite(t) or t <= last:
        # A backend without timestamps (or a broken one): step by the nominal rate.
        return last + 1.0 / fps
    return t


@dataclass
class Track:
    id: int
    box: Box
    scores: np.ndarray
    last_seen: int
    history: list[tuple[float, np.ndarray]] = field(default_factory=list)


class IouTracker:
    """Greedy IoU matching of face boxes to tracks, with EMA-smoothed scores.

    One tracker follows one stream and is not safe to share between threads: give
    each stream (and thread) its own; :func:`predict_video` makes one per call.

    Args:
        iou_threshold: minimum overlap for a box to continue a track.
        max_missed: analysed frames a track survives without a matching box.
        alpha: weight of the newest scores in the moving average (1 = no smoothing).
    """

    def __init__(self, iou_threshold: float = 0.3, max_missed: int = 5, alpha: float = 0.5):
        # alpha outside (0, 1] is no average: nan gave NaN scores, -1 and 5 "probabilities"
        # of 2.3 and 68.8, all printed without a word (0 would keep the first frame's forever)
        if not (isinstance(alpha, (int, float)) and 0 < alpha <= 1):
            raise FerkitError(f"smoothing must be in (0, 1] (the newest frame's weight; 1 = none), got {alpha}")
        self.iou_threshold, self.max_missed, self.alpha = iou_threshold, max_missed, alpha
        self.tracks: dict[int, Track] = {}
        self.finished: list[Track] = []
        self._next_id = 1
        self._step = 0

    def update(
        self, boxes: list[Box], probs: np.ndarray, time: float
    ) -> list[tuple[int, np.ndarray]]:
        """Assign boxes of one analysed frame to tracks.

        Returns:
            (track id, smoothed probabilities) for each box, in input order.
        """
        self._step += 1
        pairs = sorted(
            (
                (iou(b, t.box), bi, tid)
                for bi, b in enumerate(boxes)
                for tid, t in self.tracks.items()
            ),
            reverse=True,
        )
        assigned: dict[int, int] = {}
        used: set[int] = set()
        for ov, bi, tid in pairs:
            if ov < self.iou_threshold:
                break
            if bi in assigned or tid in used:
                continue
            assigned[bi] = tid
            used.add(tid)
        out = []
        for bi, b in enumerate(boxes):
            p = np.asarray(probs[bi], dtype=np.float64)
            if bi in assigned:
                t = self.tracks[assigned[bi]]
                t.scores = self.alpha * p + (1 - self.alpha) * t.scores
                t.box, t.last_seen = b, self._step
            else:
                t = Track(self._next_id, b, p.copy(), self._step)
                self.tracks[t.id] = t
                self._next_id += 1
            t.history.append((time, t.scores.copy()))
            out.append((t.id, t.scores.copy()))
        for tid in [
            tid for tid, t in self.tracks.items() if self._step - t.last_seen > self.max_missed
        ]:
            self.finished.append(self.tracks.pop(tid))
        return out

    def all_tracks(self) -> list[Track]:
        return sorted(self.finished + list(self.tracks.values()), key=lambda t: t.id)


def predict_video(
    recognizer,
    source,
    every: int = 1,
    max_frames: int | None = None,
    tracker: IouTracker | None = None,
) -> Iterator[tuple[Frame, list]]:
    """Yield (frame, faces) for the analysed frames of a video or webcam.

    Faces carry ``track_id`` and temporally smoothed ``scores``/``label``.
    Pass your own ``tracker`` to read the tracks' histories afterwards.

    Raises:
        the errors of :func:`iter_frames` (:class:`TruncatedVideoError` after the
        last readable frame).
    """
    tracker = tracker or IouTracker()
    for frame in iter_frames(source, every, max_frames):
        # Detection and crops as for photos: the recognizer's min_face and eye alignment.
        raw = recognizer.predict_arrays([frame.rgb])[0]
        probs = np.array([[f.scores[lab] for lab in recognizer.labels] for f in raw])
        faces = [
            recognizer.scores_to_face(f.box, p, tid)
            for f, (tid, p) in zip(raw, tracker.update([f.box for f in raw], probs, frame.time))
        ]
        yield frame, faces


def plot_tracks(
    tracker: IouTracker,
    labels: list[str],
    out_dir: str | os.PathLike,
    stem: str,
    min_points: int = 2,
) -> list[Path]:
    """One PNG per track: smoothed probability of each emotion over time.

    Tracks seen in fewer than ``min_points`` analysed frames (usually spurious
    detections) get no plot. Returns the written paths.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for t in tracker.all_tracks():
        if len(t.history) < min_points:
            continue
        times = [h[0] for h in t.history]
        scores = np.stack([h[1] for h in t.history])
        fig, ax = plt.subplots(figsize=(8, 3.5))
        for k, lab in enumerate(labels):
            ax.plot(times, scores[:, k], label=lab, lw=1.5)
        ax.set(
            xlabel="time (s)",
            ylabel="probability (smoothed)",
            ylim=(0, 1),
            title=f"{stem}: face track {t.id}",
        )
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
        fig.tight_layout()
        path = out_dir / f"{stem}_track{t.id}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def annotate(rgb: np.ndarray, faces: list) -> np.ndarray:
    """A BGR copy of the image with each face's box, label and confidence drawn on it."""
    img = rgb if rgb.shape[2] == 3 else np.repeat(rgb, 3, axis=2)
    bgr = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR)
    thick = max(1, round(max(bgr.shape[:2]) / 400))
    for f in faces:
        x, y, w, h = f.box
        cv2.rectangle(bgr, (x, y), (x + w, y + h), (0, 200, 0), thick)
        text = f"{f.label} {f.confidence:.0%}" + (
            f" #{f.track_id}" if f.track_id is not None else ""
        )
        scale = max(0.4, thick * 0.5)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        ty = y - 4 if y - th - 6 > 0 else y + h + th + 4
        cv2.rectangle(bgr, (x, ty - th - base), (x + tw, ty + base), (0, 200, 0), -1)
        cv2.putText(
            bgr, text, (x, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick, cv2.LINE_AA
        )
    return bgr
