"""RAVDESS (Ryerson Audio-Visual Database of Emotional Speech and Song) as face frames.

Layout: ``<root>/Actor_XX/MM-VV-EE-II-SS-RR-AA.mp4`` (the ``Actor_XX`` folders
are optional). The seven two-digit fields of every file name:

==  =================  ==============================================================
MM  modality           01 full audio-video, 02 video-only, 03 audio-only
VV  vocal channel      01 speech, 02 song
EE  emotion            01 neutral, 02 calm, 03 happy, 04 sad, 05 angry, 06 fearful,
                       07 disgust, 08 surprised
II  intensity          01 normal, 02 strong
SS  statement          01 "Kids are talking by the door", 02 "Dogs are sitting by the door"
RR  repetition         01, 02
AA  actor              01..24 (odd male, even female)
==  =================  ==============================================================

Items are ``(video path, frame number)`` pairs, one every ``every`` frames; the
loader decodes that frame with OpenCV (RGB, centre square, or the face when
``face_crop``) and the normal decode cache keeps the result, keyed by the video
files and the options. Source options (recipe ``source_options``):

* ``modalities`` (default ``[2]``, video-only) and ``vocal_channels`` (default
  ``[1]``, speech) -- Ayadi & Lachiri's selection; the test fixture is
  full-AV (``01-01-...``), so pass ``modalities: [1, 2]`` to include it;
* ``every`` (10), ``max_frames`` per video (none), ``face_crop`` (false);
* ``face_margin`` (:data:`ferkit.faces.VIDEO_MARGIN`, 0.05, i.e. the box side x 1.1):
  the border kept around the detector box with ``face_crop``, per side as a fraction
  of the box side; the crop is :func:`ferkit.faces.face_square`, the cropper the
  Recognizer uses;
* ``classes``: 8 (all) or 6 (the paper's neutral, calm, happy, sad, angry,
  fearful). ``calm`` is not a FER7 class: recipes must set ``labels`` to
  :data:`RAVDESS6` or :data:`RAVDESS8`;
* splits: actor-independent by default -- train actors 1-16, val 17-20,
  test 21-24 (two men and two women in each held-out group; override with
  ``val_actors`` / ``test_actors``). ``random_frames: true`` reproduces the
  paper's random frame split (``random_split: [val, test]`` fractions, default
  0.2 and 0.1, seed ``split_seed``) and warns: frames of one video, and the
  same actors, then sit on both sides, which inflates accuracy.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import cv2
import numpy as np

from ferkit.data.images import ImageDecodeError
from ferkit.data.sources import Index, file_fingerprint, register_source
from ferkit.data.splits import stratified_split
from ferkit.errors import DataError, FerkitError

EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fear", "disgust", "surprise")
"""Canonical names of emotion codes 01..08."""
RAVDESS8: tuple[str, ...] = EMOTIONS
RAVDESS6: tuple[str, ...] = EMOTIONS[:6]
"""Ayadi & Lachiri's six classes (codes 01-06)."""

MODALITIES = {1: "full-AV", 2: "video-only", 3: "audio-only"}
VOCAL_CHANNELS = {1: "speech", 2: "song"}
TRAIN_ACTORS = tuple(range(1, 17))
VAL_ACTORS = (17, 18, 19, 20)
TEST_ACTORS = (21, 22, 23, 24)
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv")
_NAME = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")
_RANGES = {
    "modality": (1, 3),
    "vocal_channel": (1, 2),
    "emotion": (1, 8),
    "intensity": (1, 2),
    "statement": (1, 2),
    "repetition": (1, 2),
    "actor": (1, 24),
}


@dataclass(frozen=True)
class RavdessName:
    """The seven fields of a RAVDESS file name (as integers)."""

    modality: int
    vocal_channel: int
    emotion: int
    intensity: int
    statement: int
    repetition: int
    actor: int

    @property
    def label(self) -> str:
        """Canonical emotion name (``fearful`` -> ``fear``, ``surprised`` -> ``surprise``)."""
        return EMOTIONS[self.emotion - 1]

    @property
    def video_id(self) -> str:
        """The recording without modality: full-AV and video-only files of one take share it."""
        return (
            f"{self.vocal_channel:02d}-{self.emotion:02d}-{self.intensity:02d}-{self.statement:02d}-"
            f"{self.repetition:02d}-{self.actor:02d}"
        )


def parse_name(name: str | Path) -> RavdessName:
    """Parse ``MM-VV-EE-II-SS-RR-AA[.ext]``; raises :class:`DataError` naming the bad part."""
    stem = Path(name).name.split(".")[0]
    m = _NAME.match(stem)
    if not m:
        raise DataError(
            f"{Path(name).name}: not a RAVDESS name (expected 7 two-digit fields "
            "MM-VV-EE-II-SS-RR-AA, e.g. 02-01-06-01-02-01-12.mp4)"
        )
    values = dict(zip(_RANGES, (int(g) for g in m.groups())))
    for field, (lo, hi) in _RANGES.items():
        if not lo <= values[field] <= hi:
            raise DataError(
                f"{Path(name).name}: {field} {values[field]:02d} out of range {lo:02d}-{hi:02d}"
            )
    return RavdessName(**values)


def _looks_like_ravdess(p: Path) -> bool:
    if not p.is_dir():
        return False
    # islice: detection runs on every dataset path, some of them folders of 30k images
    cands = list(islice(p.glob("*.*"), 50))
    cands += [f for d in islice(p.glob("Actor_*"), 3) for f in islice(d.glob("*.*"), 20)]
    return any(_NAME.match(f.name.split(".")[0]) for f in cands)


def _ints(v, what: str) -> set[int]:
    vals = [v] if isinstance(v, (int, str)) else list(v or [])
    try:
        return {int(x) for x in vals}
    except ValueError:
        raise FerkitError(f"ravdess: {what} must be integers, got {v!r}") from None


class FrameReader:
    """Decodes frame ``n`` of a video, reading forward when frames come in order.

    The decode cache visits ``(video, frame)`` items in index order, so keeping
    the capture open and grabbing forward avoids one seek (a keyframe decode)
    per item.
    """

    def __init__(self, face_crop: bool = False, margin: float | None = None):
        self.path, self.cap, self.pos = None, None, 0
        self.detect = _face_detector() if face_crop else None
        self.margin = None
        if face_crop:
            from ferkit.faces.framing import VIDEO_MARGIN, check_margin

            self.margin = check_margin(VIDEO_MARGIN if margin is None else margin, DataError)

    def _open(self, path: str) -> None:
        if self.cap is not None:
            self.cap.release()
        self.cap = cv2.VideoCapture(path)
        self.path, self.pos = path, 0
        if not self.cap.isOpened():
            self.cap = None
            raise ImageDecodeError(f"{path}: cannot open video")

    def __call__(self, item) -> np.ndarray:
        path, frame = str(item[0]), int(item[1])
        if self.path != path or self.cap is None or frame < self.pos:
            self._open(path)
        while self.pos < frame:  # skip to the frame without colour conversion
            if not self.cap.grab():
                raise ImageDecodeError(f"{path}: video ends before frame {frame}")
            self.pos += 1
        ok, bgr = self.cap.read()
        if not ok or bgr is None:
            self.path = None
            raise ImageDecodeError(f"{path}: frame {frame} unreadable")
        self.pos += 1
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return self._crop(rgb, path, frame)

    def _crop(self, rgb: np.ndarray, path: str, frame: int) -> np.ndarray:
        h, w = rgb.shape[:2]
        if self.detect is None:
            s = min(h, w)  # the face sits in the middle of RAVDESS frames: centre square
            y0, x0 = (h - s) // 2, (w - s) // 2
            return np.ascontiguousarray(rgb[y0 : y0 + s, x0 : x0 + s])
        from ferkit.faces.framing import face_square, largest_box

        box = largest_box(self.detect(rgb))
        if box is None:
            raise ImageDecodeError(f"{path}: no face in frame {frame}")
        return np.ascontiguousarray(face_square(rgb, box, self.margin))


def _face_detector():
    try:
        from ferkit.faces import detect_faces
    except ImportError:
        raise FerkitError(
            "ravdess: face_crop needs the project's face detector (ferkit.faces), which is "
            "not available in this installation; use face_crop: false (centre square)"
        ) from None
    return detect_faces


def frame_count(path: Path) -> int:
    """Frames in a video per its container (0 when OpenCV cannot open it)."""
    cap = cv2.VideoCapture(str(path))
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    finally:
        cap.release()


def scan_videos(root: Path) -> tuple[list[tuple[Path, RavdessName]], dict[str, int]]:
    """Every video with a valid RAVDESS name under ``root``; bad names are counted, not fatal."""
    found, skipped = [], {}
    for f in sorted(root.rglob("*")):
        if not f.is_file() or f.suffix.lower() not in VIDEO_EXTS + (".wav",):
            continue
        try:
            found.append((f, parse_name(f.name)))
        except DataError:
            skipped["file name not in RAVDESS format"] = (
                skipped.get("file name not in RAVDESS format", 0) + 1
            )
    return found, skipped


def _actor_split(split: str, val_actors, test_actors) -> set[int] | None:
    val, test = _ints(val_actors, "val_actors"), _ints(test_actors, "test_actors")
    if val & test:
        raise FerkitError(
            f"ravdess: actors {sorted(val & test)} are in both val_actors and test_actors"
        )
    if split == "val":
        return val
    if split == "test":
        return test
    if split == "train":
        return set(range(1, 25)) - val - test
    return None  # all


@register_source(
    "ravdess",
    splits=("train", "val", "test", "all"),
    detect=_looks_like_ravdess,
    description="RAVDESS videos (Actor_XX/MM-VV-EE-II-SS-RR-AA.mp4) as frames; actor-independent splits",
    priority=20,
)
def index_ravdess(
    root,
    split: str = "train",
    *,
    modalities=(2,),
    vocal_channels=(1,),
    every: int = 10,
    max_frames: int | None = None,
    face_crop: bool = False,
    face_margin: float | None = None,
    classes: int = 8,
    val_actors=VAL_ACTORS,
    test_actors=TEST_ACTORS,
    random_frames: bool = False,
    random_split=(0.2, 0.1),
    split_seed: int = 0,
    **unknown,
) -> Index:
    """Index one split of RAVDESS as ``(video, frame)`` items (see the module docstring)."""
    if unknown:
        raise FerkitError(f"ravdess: unknown source option(s) {sorted(unknown)}")
    root_p = Path(root)
    if int(every) < 1:
        raise FerkitError(f"ravdess: every must be >= 1 (got {every})")
    if int(classes) not in (6, 8):
        raise FerkitError(f"ravdess: classes must be 6 or 8 (got {classes})")
    if split not in ("train", "val", "test", "all"):
        raise DataError(f"ravdess has splits train, val, test, all (got {split!r})")
    mods, chans = _ints(modalities, "modalities"), _ints(vocal_channels, "vocal_channels")
    reader = FrameReader(face_crop=bool(face_crop), margin=face_margin)  # fails early without a detector
    actors = None if random_frames else _actor_split(split, val_actors, test_actors)

    videos, skipped = scan_videos(root_p)
    if not videos:
        raise DataError(f"{root}: no RAVDESS files (MM-VV-EE-II-SS-RR-AA.mp4) found")
    items, labels, groups, used = [], [], [], []
    for path, meta in videos:
        if (
            meta.modality not in mods
            or meta.vocal_channel not in chans
            or meta.emotion > int(classes)
        ):
            continue
        if meta.modality == 3:
            continue  # audio-only: no frames to extract
        if actors is not None and meta.actor not in actors:
            continue
        n = frame_count(path)
        if n <= 0:
            skipped["unreadable video"] = skipped.get("unreadable video", 0) + 1
            continue
        frames = range(0, n, int(every))
        if max_frames:
            frames = frames[: int(max_frames)]
        used.append(path)
        for fr in frames:
            items.append((str(path), fr))
            labels.append(meta.label)
            groups.append(f"{meta.actor:02d}")
    opts = {
        "modalities": sorted(mods),
        "vocal_channels": sorted(chans),
        "every": int(every),
        "max_frames": max_frames,
        "face_crop": bool(face_crop),
        # The one cropper (face_square) replaced this loader's own clipped crop: new key.
        **({"face_margin": reader.margin} if face_crop else {}),
        "classes": int(classes),
        "random_frames": bool(random_frames),
        "actors": sorted(actors) if actors is not None else None,
    }
    fingerprint = file_fingerprint(used, extra=json.dumps(opts, sort_keys=True))
    index = Index(
        source="ravdess",
        root=str(root),
        split=split,
        items=items,
        labels=labels,
        loader=reader,
        fingerprint=fingerprint,
        groups=groups,
        skipped=skipped,
        face_margin=reader.margin,  # None without face_crop (centre square of the frame)
    )
    if random_frames and split != "all":
        warnings.warn(
            "ravdess: random_frames splits frames at random (as Ayadi & Lachiri): frames of the same "
            "video and the same actors land in train and val/test, so accuracy is inflated; use the "
            "default actor-independent split for a real estimate",
            UserWarning,
            stacklevel=3,
        )
        index = _random_frame_split(index, split, random_split, split_seed)
    if not len(index):
        raise DataError(
            f"{root} [{split}]: no RAVDESS frames match (modalities {sorted(mods)}, vocal channels "
            f"{sorted(chans)}, classes {classes}, actors {opts['actors']})"
        )
    return index


def _random_frame_split(index: Index, split: str, fractions, seed: int) -> Index:
    val_f, test_f = (float(f) for f in fractions)
    if not (0 < val_f < 1 and 0 < test_f < 1 and val_f + test_f < 1):
        raise FerkitError(
            f"ravdess: random_split fractions must be in (0, 1) and sum below 1 (got {fractions})"
        )
    rest, test = stratified_split(index.labels, test_f, seed)
    tr, va = stratified_split([index.labels[i] for i in rest], val_f / (1 - test_f), seed)
    pick = {"test": test, "val": [rest[i] for i in va], "train": [rest[i] for i in tr]}[split]
    return index.subset(sorted(pick), split=split)


def video_ids(items) -> list[str]:
    """The video of each ``(video, frame)`` item (for video-level voting)."""
    return [str(it[0]) if isinstance(it, (tuple, list)) else str(it) for it in items]
