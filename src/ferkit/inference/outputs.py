"""What batch prediction writes: records (JSON lines, CSV, text), annotated copies, plots.

* :class:`RecordWriter` streams one record per face. Faces are numbered from 1
  within their image or frame in every format (``face`` field, "face 1" in
  text), as video track ids are.
* :class:`OutputNames` gives every input one file-name base for all the files
  written about it (annotated copy, plots), unique within the run, so inputs
  that share a stem (``cam1/clip.webm`` and ``cam2/clip.mp4``, ``photo.gif``
  and ``photo.webp``) never overwrite each other.
* :func:`plot_face_scores` draws the emotion scores of the faces of one still image.
* :class:`RunReport` keeps a batch run's counts and writes its summary line.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ferkit.errors import DataError, FerkitError, tally


@dataclass
class Face:
    """One detected face and its expression.

    Attributes:
        box: (x, y, w, h) in pixels of the input image.
        label: the most probable emotion.
        confidence: its probability.
        scores: probability of every emotion the model knows.
        track_id: stable id across video frames (None for still images).
    """

    box: tuple[int, int, int, int]
    label: str
    confidence: float
    scores: dict[str, float] = field(default_factory=dict)
    track_id: int | None = None

    def to_dict(self) -> dict:
        d = {
            "box": [int(v) for v in self.box],
            "label": self.label,
            "confidence": round(float(self.confidence), 6),
            "scores": {k: round(float(v), 6) for k, v in self.scores.items()},
        }
        if self.track_id is not None:
            d["track_id"] = self.track_id
        return d

FORMATS = ("jsonl", "csv", "text")


class OutputError(DataError):
    """An output file could not be written (folder not writable, codec missing)."""

    reason = "output not written"


class RecordWriter:
    """Streams face records as JSON lines, CSV rows or readable text.

    Args:
        fmt: "jsonl", "csv" or "text".
        labels: the model's emotion names (CSV columns of the per-emotion scores).
        stream: an open text stream.
    """

    COLUMNS = ("source", "frame", "time", "track", "face", "x", "y", "w", "h", "label", "confidence")

    def __init__(self, fmt: str, labels: list[str], stream):
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
        self.fmt, self.labels, self.stream = fmt, labels, stream
        self._csv = None
        if fmt == "csv":
            self._csv = csv.DictWriter(
                stream, fieldnames=list(self.COLUMNS) + list(labels), lineterminator="\n"
            )
            self._csv.writeheader()

    def write(self, source: str, faces, frame: int | None = None, time: float | None = None):
        """One record per face of an image (``frame`` None) or of a video frame (time in s)."""
        for number, f in enumerate(faces, start=1):
            rec = {"source": source}
            if frame is not None:
                rec.update(frame=frame, time=round(time, 3), track=f.track_id)
            rec["face"] = number
            rec.update(f.to_dict())
            rec.pop("track_id", None)
            if self.fmt == "jsonl":
                self.stream.write(json.dumps(rec) + "\n")
            elif self.fmt == "csv":
                x, y, w, h = f.box
                row = {k: rec.get(k, "") for k in ("source", "frame", "time", "track", "face", "label")}
                row.update(x=x, y=y, w=w, h=h, confidence=f"{f.confidence:.6f}")
                row.update({k: f"{v:.6f}" for k, v in f.scores.items()})
                self._csv.writerow(row)
            else:
                where = f" frame {frame} ({time:.2f}s) track {f.track_id}" if frame is not None else ""
                top = sorted(f.scores.items(), key=lambda kv: -kv[1])[1:3]
                rest = ", ".join(f"{k} {v:.0%}" for k, v in top)
                self.stream.write(
                    f"{source}{where}: face {number} at {tuple(f.box)}: "
                    f"{f.label} {f.confidence:.0%} ({rest})\n"
                )
        self.stream.flush()


class OutputNames:
    """One file-name base per input, unique within a run.

    The base is the input's last two folder names and its stem joined by ``_``
    (``shots/cam1/clip.mp4`` -> ``shots_cam1_clip``). When an earlier input
    of the run already has that base, the input's extension is added
    (``photo_webp``), then a counter (``photo_webp-2``). Bases are compared
    without letter case, so they stay distinct on case-insensitive file systems.
    """

    def __init__(self):
        self._by_input: dict[str, str] = {}
        self._taken: set[str] = set()

    def base(self, name: str) -> str:
        """The base for the input called ``name`` (the same on every call for that input)."""
        if name in self._by_input:
            return self._by_input[name]
        if name.startswith("webcam:"):
            candidates = ["webcam" + name.split(":", 1)[1]]
        else:
            p = Path(name)
            parts = [x for x in p.parent.parts if x not in ("/", ".", "..", p.anchor)][-2:]
            first = "_".join([*parts, p.stem]) or "input"
            candidates = [first] + ([f"{first}_{p.suffix[1:]}"] if p.suffix[1:] else [])
        candidates = [_safe(c) for c in candidates]
        chosen = next((c for c in candidates if c.casefold() not in self._taken), None)
        k = 2
        while chosen is None:
            c = f"{candidates[-1]}-{k}"
            chosen = c if c.casefold() not in self._taken else None
            k += 1
        self._taken.add(chosen.casefold())
        self._by_input[name] = chosen
        return chosen


def _safe(stem: str) -> str:
    # Characters some file systems refuse, and path separators, become '_'.
    return "".join("_" if c in '<>:"/\\|?*' or ord(c) < 32 else c for c in stem)


#: Still-image formats an annotated copy keeps; others are written as PNG.
ANNOTATED_KEEP = (".jpg", ".jpeg", ".png", ".bmp")


def annotated_image_path(folder: Path, base: str, source_name: str) -> Path:
    suffix = Path(source_name).suffix.lower()
    return folder / (base + (suffix if suffix in ANNOTATED_KEEP else ".png"))


def write_image(path: Path, bgr: np.ndarray) -> Path:
    """Write a BGR image with OpenCV; OutputError when nothing was written."""
    import cv2

    try:
        ok = cv2.imwrite(os.fspath(path), bgr)
    except cv2.error as e:
        raise OutputError(f"{path}: cannot write ({e.msg.strip() if hasattr(e, 'msg') else e})") from None
    if not ok:
        raise OutputError(f"{path}: cannot write (folder missing or not writable?)")
    return path


def open_video_writer(path: Path, size: tuple[int, int], fps: float):
    """An MPEG-4 ``cv2.VideoWriter`` for frames of ``size`` (w, h); OutputError if it cannot open."""
    import cv2

    writer = cv2.VideoWriter(os.fspath(path), cv2.VideoWriter_fourcc(*"mp4v"), max(1.0, fps), size)
    if not writer.isOpened():
        writer.release()
        raise OutputError(f"{path}: cannot write an MPEG-4 video here")
    return writer


def plot_face_scores(faces, labels: list[str], path: Path, title: str) -> Path:
    """A PNG bar chart of each face's emotion probabilities (one panel per face, at most 12).

    Args:
        faces: :class:`~ferkit.inference.recognizer.Face` objects of one image.
        labels: emotion names, in the model's order.
        path: where to write the PNG.
        title: figure title (the input's name).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = list(faces)[:12]
    cols = min(3, len(shown))
    rows = (len(shown) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 0.35 * len(labels) * rows + 1.2),
                             squeeze=False)
    for ax in axes.flat[len(shown):]:
        ax.axis("off")
    for number, (ax, f) in enumerate(zip(axes.flat, shown), start=1):
        vals = [f.scores.get(lab, 0.0) for lab in labels]
        ax.barh(labels, vals, color=["tab:green" if lab == f.label else "tab:gray" for lab in labels])
        ax.set_xlim(0, 1)
        ax.invert_yaxis()
        ax.set_title(f"face {number}: {f.label} {f.confidence:.0%}", fontsize=9)
        ax.tick_params(labelsize=8)
    more = f" (first 12 of {len(faces)} faces)" if len(faces) > 12 else ""
    fig.suptitle(f"{title}{more}", fontsize=10)
    fig.supxlabel("probability", fontsize=9)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None
    finally:
        plt.close(fig)
    return path


class AnalysisError(FerkitError):
    """Detection or classification raised on an input: a fault in ferkit or a library,
    reported for that input while the rest of the batch goes on."""

    reason = "analysis failed (a fault: please report it)"

    @classmethod
    def of(cls, name: str, exc: BaseException) -> AnalysisError:
        return cls(f"{name}: analysis failed ({type(exc).__name__}: {exc})")


class RunReport:
    """True counts of a batch run and its one-line summary.

    ``skip`` (an input not analysed), ``warn`` (analysed in part, or an output not
    written) and ``ignore`` (a harmless file) group problems by their class's
    ``reason``, never by message text; ``echo`` prints one line per skip or warning.
    ``stats`` counts images, no_face, faces, videos, frames, tracks, annotated, plots.
    """

    def __init__(self, echo=print):
        self.echo = echo
        self.stats: Counter = Counter()
        self.skipped: Counter = Counter()
        self.warned: Counter = Counter()
        self.ignored: defaultdict[str, list[str]] = defaultdict(list)
        self.interrupted = False  # a run stopped by Ctrl-C: the counts cover the work done

    def skip(self, name: str, problem: BaseException) -> None:
        self.skipped[_reason(problem)] += 1
        self.echo(f"ferkit: skipped {_detail(name, problem)}")

    def warn(self, name: str, problem: BaseException) -> None:
        self.warned[_reason(problem)] += 1
        self.echo(f"ferkit: warning: {_detail(name, problem)}")

    def ignore(self, name: str, problem: BaseException) -> None:
        self.ignored[_reason(problem)].append(name)

    @property
    def exit_code(self) -> int:
        """0 when every input was read whole, 1 when some were skipped or had warnings."""
        return 1 if self.skipped or self.warned else 0

    def summary(self, rec, annotated: bool = False, plots: bool = False) -> str:
        s = self.stats
        parts = [f"{s['images']} image(s)" + (f" ({s['no_face']} with no face)" if s["no_face"] else "")]
        if s["videos"]:
            parts.append(
                f"{s['videos']} video(s) ({s['frames']} frames analysed, {s['tracks']} face track(s))"
            )
        parts.append(f"{s['faces']} face(s)")
        line = "ferkit predict: " + ", ".join(parts)
        wrote = ([f"{s['annotated']} annotated file(s)"] if annotated else []) + (
            [f"{s['plots']} plot(s)"] if plots else [])
        if wrote:
            line += "; wrote " + " and ".join(wrote)
        for what, counts in (("input(s) skipped", self.skipped), ("input(s) with warnings", self.warned)):
            if counts:
                line += f"; {sum(counts.values())} {what}: {tally(counts)}"
        if self.ignored:
            why = ", ".join(
                f"{len(names)}x {r} ({', '.join(Path(n).name for n in names[:3])}"
                f"{', ...' if len(names) > 3 else ''})"
                for r, names in sorted(self.ignored.items(), key=lambda kv: -len(kv[1]))
            )
            line += f"; {sum(len(v) for v in self.ignored.values())} file(s) ignored: {why}"
        name = getattr(rec, "name", None) or rec.model_name
        return line + (f" [model {name} (version {rec.version}), {rec.backend}, "
                       f"detector {rec.detector.name}]")


def _reason(problem: BaseException) -> str:
    """The summary category of a problem: its class's ``reason`` (never its message text)."""
    return getattr(problem, "reason", None) or "unreadable input"


def _detail(name: str, problem: BaseException) -> str:
    msg = str(problem)
    return msg if msg.startswith(str(name)) else f"{name}: {msg}"
