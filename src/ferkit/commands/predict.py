"""ferkit predict INPUT... : emotions of the faces in images, folders, globs, videos, a webcam."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import warnings
from pathlib import Path

FORMATS = ("jsonl", "csv", "text")


def _wrap(text: str) -> str:
    import textwrap

    return textwrap.fill(" ".join(text.split()), 79)


def add_parser(sub):
    p = sub.add_parser(
        "predict",
        help="recognise facial expressions in images, folders, videos or a webcam",
        description=_wrap(
            "Find the faces in each input and print one record per face: source, face number "
            "(from 1 within its image or frame), box (x, y, w, h), label, confidence and a "
            "probability per emotion; for videos also the frame index, the frame's time in the "
            "container (seconds) and a track id that stays the same for a face across frames. "
            "Images with no face print nothing (they are counted in the summary). Folders are read "
            "recursively (symbolic links followed, each file once) and one image at a time; glob "
            "patterns and folder scans match extensions in any letter case. Inputs that cannot be "
            "read (corrupt files, broken links, FIFOs, no permission) are reported on stderr and "
            "skipped; other files met in folders (README.txt, .json sidecars) are ignored and "
            "counted; a video whose stream ends before its declared length is analysed as far as "
            "it goes and reported as truncated. Exit code: 0 all inputs read whole, 1 some were "
            "skipped or truncated, 2 usage error."
        ),
        epilog="examples:\n  ferkit predict --demo\n  ferkit predict photos/ --format csv -o faces.csv\n"
        "  ferkit predict 'shots/**/*.jpg' --save-annotated out/\n"
        "  ferkit predict clip.mp4 --every 5 --plot plots/\n  ferkit predict --webcam 0 --max-frames 300",
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="image files, folders (recursive), glob patterns, videos (mp4, mov, 3gp, avi, mkv, "
        "webm, ...), or 'demo' for the bundled demo photo",
    )
    p.add_argument(
        "--demo", action="store_true", help="run on the bundled public-domain demo photo"
    )
    p.add_argument("--webcam", type=int, metavar="N", help="read camera N (0 = first camera)")
    p.add_argument(
        "--model",
        default="default",
        help="'default' (shipped model), a checkpoint (.ckpt/.pt), an .onnx file or a run folder",
    )
    p.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "torch", "onnx"],
        help="inference engine (default auto: onnxruntime on the CPU, about 4x PyTorch's CPU "
        "speed, same scores to 1e-4; torch on a GPU; torch needs the ferkit[train] extra)",
    )
    from ferkit.faces import DEFAULT_MIN_FACE, detector_help

    p.add_argument("--detector", default="default", help=f"face detector: {detector_help()}")
    p.add_argument(
        "--min-face",
        type=int,
        default=None,
        metavar="PX",
        help=f"smallest face side in pixels to find, at any image size (default "
        f"{DEFAULT_MIN_FACE}; smaller costs detection time on large photos, 0 = fastest, "
        "big faces only)",
    )
    p.add_argument(
        "--mirror",
        action="store_true",
        help="also classify each face's mirror image and average the scores (test-time "
        "augmentation: +0.9 points on FER2013 PublicTest for the shipped model; the "
        "classifier does twice the work, detection is unchanged)",
    )
    p.add_argument(
        "--tta",
        choices=["none", "mirror", "ten-crop"],
        default=None,
        help="test-time views, overriding what the model file records: none, mirror (= "
        "--mirror), or ten-crop (four corner crops, the centre crop and their mirrors, for "
        "models trained on crops such as vgg-fer; ten times the classifier work)",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="jsonl (default), csv, or text (readable; the default with --demo)",
    )
    p.add_argument("-o", "--output", help="write records to this file instead of stdout")
    p.add_argument(
        "--save-annotated",
        metavar="DIR",
        help="write copies with boxes and labels drawn (videos as NAME_annotated.mp4); file "
        "names are the input's last two folders and stem, made unique within the run",
    )
    p.add_argument(
        "--plot",
        metavar="DIR",
        help="PNG charts: for each image with faces, its faces' emotion scores (NAME_scores.png); "
        "for videos, each tracked face's emotions over time (NAME_trackN.png)",
    )
    p.add_argument(
        "--every", type=int, default=1, metavar="N", help="videos: analyse every N-th frame"
    )
    p.add_argument("--max-frames", type=int, metavar="N", help="videos/webcam: stop after N frames")
    p.add_argument(
        "--smoothing",
        type=float,
        default=0.5,
        metavar="A",
        help="videos: weight of the newest frame in the score average (1 = none; default 0.5)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=32,
        metavar="N",
        help="images decoded and classified together (memory stays bounded by this)",
    )
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, auto")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


# ----------------------------------------------------------------------------- run
def demo_image() -> Path:
    return Path(__file__).resolve().parents[1] / "assets" / "astronaut.png"


def run(args) -> int:
    from ferkit.errors import FerkitError
    from ferkit.inference.recognizer import Recognizer

    items = list(args.inputs)
    if args.demo:
        items.append("demo")
    if not items and args.webcam is None:
        raise FerkitError(
            "no input: give image/video files, folders or globs, --demo, or --webcam N"
        )
    if args.every < 1 or args.batch_size < 1:
        raise FerkitError("--every and --batch-size must be at least 1")
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        # Checked before any work: a missing plotting library must not end a long batch.
        raise FerkitError("--plot needs matplotlib, which is not installed: pip install 'ferkit[plot]'")
    if args.min_face is not None and args.min_face < 0:
        raise FerkitError("--min-face must be 0 or more pixels")
    fmt = args.format or ("text" if args.demo and not args.inputs else "jsonl")
    # Output places are checked before the model loads: a typo must not cost a batch.
    for flag, folder in (("--save-annotated", args.save_annotated), ("--plot", args.plot)):
        if folder:
            try:
                Path(folder).mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise FerkitError(f"{flag} {folder}: cannot create the folder ({e.strerror})") from None
    with contextlib.ExitStack() as stack:
        try:
            out = stack.enter_context(open(args.output, "w", newline="")) if args.output else sys.stdout
        except OSError as e:
            raise FerkitError(f"-o {args.output}: cannot write ({e.strerror})") from None
        rec = Recognizer.from_pretrained(
            args.model, backend=args.backend, detector=args.detector, device=args.device,
            mirror=args.mirror, min_face=args.min_face, tta=args.tta,
        )
        aliases = {"demo": (demo_image(), "astronaut.png")}
        return _predict_all(args, rec, items, aliases, fmt, out)


def _predict_all(args, rec, items, aliases, fmt, out) -> int:
    from tqdm import tqdm

    from ferkit.inference.inputs import iter_inputs
    from ferkit.inference.outputs import RecordWriter

    quiet = True if args.no_progress else None  # None: tqdm shows bars only on a terminal
    job = _Job(args, rec, RecordWriter(fmt, rec.labels, out), quiet)
    try:
        total = sum(1 for _ in iter_inputs(items, aliases))  # names only: cheap, gives the bar a total
        bar = tqdm(total=total, unit="file", desc="predict", disable=quiet, file=sys.stderr)
        chunk = []
        for entry in iter_inputs(items, aliases):
            if entry.kind == "image":
                chunk.append(entry)
                if len(chunk) >= args.batch_size:
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
        if args.webcam is not None:
            job.video(args.webcam, f"webcam:{args.webcam}")
    except KeyboardInterrupt:
        print("ferkit: interrupted; summary so far:", file=sys.stderr)
    if job.stats["crop_like"] and rec.detector.name != "none":
        print(
            f"ferkit: hint: {job.stats['crop_like']} image(s) with no face found look like face "
            "crops (small and square): if they are cropped faces, use --detector none to "
            "classify each whole image",
            file=sys.stderr,
        )
    print(job.report.summary(rec, bool(job.annot), bool(job.plots)), file=sys.stderr)
    return job.report.exit_code


class _Job:
    """One predict run: analyses inputs, writes records and files, keeps true counts."""

    def __init__(self, args, rec, writer, quiet):
        from tqdm import tqdm

        from ferkit.inference.outputs import OutputNames, RunReport

        self.args, self.rec, self.writer, self.quiet = args, rec, writer, quiet
        self.report = RunReport(echo=lambda line: tqdm.write(line, file=sys.stderr))
        self.stats = self.report.stats
        self.skip, self.warn = self.report.skip, self.report.warn
        self.names = OutputNames()
        self.annot = Path(args.save_annotated) if args.save_annotated else None
        self.plots = Path(args.plot) if args.plot else None  # both created by run()

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

        args = self.args
        tracker = IouTracker(alpha=args.smoothing)
        n = frame_count(source)
        if n and args.max_frames:
            n = min(n, args.max_frames)
        bar = tqdm(
            total=(n + args.every - 1) // args.every if n else None,
            unit="frame",
            leave=False,
            desc=Path(str(name)).name,
            disable=self.quiet,
            file=sys.stderr,
        )
        writer, frames = None, 0
        try:
            for frame, faces in predict_video(
                self.rec, source, args.every, args.max_frames, tracker
            ):
                frames += 1
                self.stats["faces"] += len(faces)
                self.writer.write(str(name), faces, frame.index, frame.time)
                if self.annot and writer is not False:
                    if writer is None:
                        h, w = frame.rgb.shape[:2]
                        path = self.annot / f"{self.names.base(name)}_annotated.mp4"
                        try:
                            writer = open_video_writer(path, (w, h), frame_rate(source) / args.every)
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
