"""Run a Recognizer over many inputs: image files, folders, globs, videos, a webcam.

What ``ferkit predict`` does between parsing its arguments and printing its summary:
walk the inputs (:func:`ferkit.inference.inputs.iter_inputs`), classify images in
chunks (one forward pass per chunk), follow faces through videos, write one record per
face (:class:`~ferkit.inference.outputs.RecordWriter`), write annotated files and
plots, and count everything in a :class:`~ferkit.inference.outputs.RunReport`. A bad
input never ends the run: it is skipped, counted by its error class's ``reason`` and
reported in one line.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from ferkit.errors import FerkitError


def predict_inputs(
    rec,
    items,
    out,
    *,
    fmt: str = "jsonl",
    aliases: dict | None = None,
    batch_size: int = 32,
    every: int = 1,
    max_frames: int | None = None,
    smoothing: float = 0.6,
    webcam: int | None = None,
    annotated_dir=None,
    plot_dir=None,
    progress: bool | None = None,
):
    """Analyse every input and write its records; returns the run's report.

    Args:
        rec: a :class:`~ferkit.inference.recognizer.Recognizer`.
        items: paths, folders, glob patterns and aliases (see :func:`iter_inputs`).
        out: text stream the records go to (stdout, an open file).
        fmt: record format, ``jsonl``, ``csv`` or ``text``.
        aliases: name -> (path, display name) for inputs such as ``"demo"``.
        batch_size: images classified per forward pass.
        every, max_frames, smoothing: videos: analyse every N-th frame, stop after
            ``max_frames`` frames, the newest frame's weight in the track's score average, in (0, 1] (1 = none).
        webcam: camera number to read after the files, or None.
        annotated_dir, plot_dir: existing folders for annotated images/videos and
            score plots (None: none written).
        progress: show progress bars; None: only on a terminal.

    Returns:
        :class:`~ferkit.inference.outputs.RunReport` whose ``stats`` count images,
        faces, videos, frames, tracks and files written, and ``crop_like`` images
        with no face that look like face crops; ``interrupted`` is True when the
        run was stopped with Ctrl-C (the counts then cover the work done).
    """
    from tqdm import tqdm

    from ferkit.inference.inputs import iter_inputs
    from ferkit.inference.outputs import RecordWriter

    quiet = None if progress is None else not progress  # None: tqdm shows bars only on a terminal
    job = _Job(rec, RecordWriter(fmt, rec.labels, out), quiet, every=every, max_frames=max_frames,
               smoothing=smoothing, annotated_dir=annotated_dir, plot_dir=plot_dir)
    try:
        total = sum(1 for _ in iter_inputs(items, aliases))  # names only: cheap, gives the bar a total
        bar = tqdm(total=total, unit="file", desc="predict", disable=quiet, file=sys.stderr)
        chunk = []
        for entry in iter_inputs(items, aliases):
            if entry.kind == "image":
                chunk.append(entry)
                if len(chunk) >= batch_size:
                    job.images(chunk, bar)
                    chunk = []
                continue
            if chunk:
                job.images(chunk, bar)
                chunk = []
            if entry.kind == "video":
                job.video(entry.path, entry.name)
            elif entry.kind == "skipped":
                job.report.skip(entry.name, entry.problem)
            else:
                job.report.ignore(entry.name, entry.problem)
            bar.update(1)
        if chunk:
            job.images(chunk, bar)
        bar.close()
        if webcam is not None:
            job.video(webcam, f"webcam:{webcam}")
    except KeyboardInterrupt:
        job.report.interrupted = True
    return job.report


class _Job:
    """One predict run: analyses inputs, writes records and files, keeps true counts."""

    def __init__(self, rec, writer, quiet, *, every, max_frames, smoothing, annotated_dir, plot_dir):
        from tqdm import tqdm

        from ferkit.inference.outputs import OutputNames, RunReport
        from ferkit.inference.video import IouTracker

        IouTracker(alpha=smoothing)  # refuses a smoothing outside (0, 1] before the first input
        if max_frames is not None and max_frames < 1:
            # 0 and -1 analysed no frame of any video and still reported success
            raise FerkitError(f"max_frames must be a whole number >= 1 (or None: every frame), got {max_frames}")
        self.rec, self.writer, self.quiet = rec, writer, quiet
        self.every, self.max_frames, self.smoothing = every, max_frames, smoothing
        self.report = RunReport(echo=lambda line: tqdm.write(line, file=sys.stderr))
        self.stats = self.report.stats
        self.skip, self.warn = self.report.skip, self.report.warn
        self.names = OutputNames()
        self.annot = Path(annotated_dir) if annotated_dir else None
        self.plots = Path(plot_dir) if plot_dir else None

    def images(self, chunk, bar):
        """Decode, detect and classify a chunk of images (one forward pass for all faces)."""
        from ferkit.errors import FerkitError
        from ferkit.faces import CropHintWarning, looks_like_crop
        from ferkit.inference.outputs import AnalysisError

        arrays, names = [], []
        for entry in chunk:
            try:
                arrays.append(self.rec.load_image(entry.path))
                names.append(entry.name)
            except FerkitError as e:  # this input only; the batch goes on
                self.skip(entry.name, e)
                bar.update(1)
        with warnings.catch_warnings():  # the summary gives the crop hint once, with numbers
            warnings.simplefilter("ignore", CropHintWarning)
            results = _isolating(self.rec.predict_arrays, arrays)
        for name, arr, faces in zip(names, arrays, results):
            if isinstance(faces, Exception):  # this image alone broke detection or the model
                self.skip(name, AnalysisError.of(name, faces))
                bar.update(1)
                continue
            self.stats["images"] += 1
            self.stats["faces"] += len(faces)
            self.stats["no_face"] += not faces
            self.stats["crop_like"] += not faces and looks_like_crop(arr.shape)
            self.writer.write(name, faces)
            self._image_files(name, arr, faces)
            bar.update(1)

    def _image_files(self, name, arr, faces):
        from ferkit.inference.outputs import (
            OutputError,
            annotated_image_path,
            plot_face_scores,
            write_image,
        )
        from ferkit.inference.video import annotate

        try:
            if self.annot:
                base = self.names.base(name)
                write_image(annotated_image_path(self.annot, base, name), annotate(arr, faces))
                self.stats["annotated"] += 1
            if self.plots and faces:
                base = self.names.base(name)
                plot_face_scores(faces, self.rec.labels, self.plots / f"{base}_scores.png", name)
                self.stats["plots"] += 1
        except OutputError as e:
            self.warn(name, e)

    def video(self, source, name):
        from tqdm import tqdm

        from ferkit.inference.outputs import AnalysisError, OutputError, open_video_writer
        from ferkit.inference.video import (
            IouTracker,
            TruncatedVideoError,
            VideoError,
            annotate,
            frame_count,
            frame_rate,
            plot_tracks,
            predict_video,
        )

        tracker = IouTracker(alpha=self.smoothing)
        n = frame_count(source)
        if n and self.max_frames:
            n = min(n, self.max_frames)
        bar = tqdm(
            total=(n + self.every - 1) // self.every if n else None,
            unit="frame",
            leave=False,
            desc=Path(str(name)).name,
            disable=self.quiet,
            file=sys.stderr,
        )
        writer, frames = None, 0
        try:
            for frame, faces in predict_video(self.rec, source, self.every, self.max_frames, tracker):
                frames += 1
                self.stats["faces"] += len(faces)
                self.writer.write(str(name), faces, frame.index, frame.time)
                if self.annot and writer is not False:
                    if writer is None:
                        h, w = frame.rgb.shape[:2]
                        path = self.annot / f"{self.names.base(name)}_annotated.mp4"
                        try:
                            writer = open_video_writer(path, (w, h), frame_rate(source) / self.every)
                        except OutputError as e:
                            self.warn(name, e)
                            writer = False  # no more attempts for this video
                    if writer:
                        writer.write(annotate(frame.rgb, faces))
                bar.update(1)
        except TruncatedVideoError as e:
            self.warn(name, e)  # its readable frames were analysed: counted below
        except Exception as e:  # noqa: BLE001 - VideoError, or a fault on this video only
            if not isinstance(e, VideoError):
                e = AnalysisError.of(name, e)
            if not frames:
                self.skip(name, e)
                return
            self.warn(name, e)  # the frames before the failure were analysed: counted below
        finally:
            bar.close()
            if writer:
                writer.release()
                self.stats["annotated"] += 1
        self.stats["videos"] += 1
        self.stats["frames"] += frames
        self.stats["tracks"] += len(tracker.all_tracks())
        if self.plots:
            written = plot_tracks(tracker, self.rec.labels, self.plots, self.names.base(name))
            self.stats["plots"] += len(written)


def _isolating(fn, arrays):
    """``fn(arrays)``; if it raises, ``fn`` on each array alone, the failing ones as exceptions."""
    try:
        return fn(arrays)
    except Exception:  # noqa: BLE001 - one input's fault must not end the batch: find it
        return [_one(fn, a) for a in arrays]


def _one(fn, arr):
    try:
        return fn([arr])[0]
    except Exception as e:  # noqa: BLE001 - reported as this input's problem
        return e
