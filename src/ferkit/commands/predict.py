"""ferkit predict INPUT... : emotions of the faces in images, folders, globs, videos, a webcam."""

from __future__ import annotations

import csv
import glob
import json
import os
import sys
from collections import Counter
from pathlib import Path

FORMATS = ("jsonl", "csv", "text")
_GLOB_CHARS = set("*?[")


def _wrap(text: str) -> str:
    import textwrap

    return textwrap.fill(" ".join(text.split()), 79)


def add_parser(sub):
    p = sub.add_parser(
        "predict",
        help="recognise facial expressions in images, folders, videos or a webcam",
        description=_wrap(
            "Find the faces in each input and print one record per face: source, box "
            "(x, y, w, h), label, confidence and a probability per emotion; for videos also the frame "
            "index, time and a track id that stays the same for a face across frames. Images with no "
            "face print nothing (they are counted in the summary). Folders are read recursively and "
            "one image at a time. Unreadable inputs are reported on stderr and skipped; the summary "
            "on stderr counts them. Exit code: 0 all inputs read, 1 some were skipped, 2 usage error."
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
        help="image files, folders (recursive), glob patterns, videos (mp4/avi/mov/mkv), "
        "or 'demo' for the bundled demo photo",
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
        help="inference engine (default auto: onnxruntime on the CPU when the ferkit[onnx] "
        "extra is installed, about 4x PyTorch's CPU speed, same scores to 1e-4; else torch)",
    )
    p.add_argument(
        "--detector",
        default="default",
        help="face detector: default (haar: frontal alt2 cascade, profile cascades only when it "
        "finds no face), haar-full (all three cascades on every image: group photos with "
        "profile faces), haar-fast (coarser pyramid: faster, misses more hard faces), "
        "haar-frontal, mtcnn (optional extra), or none for inputs that are "
        "already face crops",
    )
    p.add_argument(
        "--mirror",
        action="store_true",
        help="also classify each face's mirror image and average the scores (test-time "
        "augmentation: +0.9 points on FER2013 PublicTest for the shipped model; the "
        "classifier does twice the work, detection is unchanged)",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="jsonl (default), csv, or text (readable; the default with --demo)",
    )
    p.add_argument("-o", "--output", help="write records to this file instead of stdout")
    p.add_argument(
        "--save-annotated", metavar="DIR", help="write copies with boxes and labels drawn"
    )
    p.add_argument(
        "--plot", metavar="DIR", help="videos: PNG plot of each tracked face's emotions over time"
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


# ----------------------------------------------------------------------------- inputs
def demo_image() -> Path:
    return Path(__file__).resolve().parents[1] / "assets" / "astronaut.png"


def iter_inputs(items: list[str]):
    """Yield (kind, path, display name, reason) lazily: kind is image, video or skip."""
    from ferkit.data.images import is_image_file
    from ferkit.inference.video import is_video_file

    def classify(path: Path, explicit: bool, name: str):
        if is_video_file(path):
            return ("video", path, name, None)
        if is_image_file(path) or explicit:  # an explicitly named file gets a decode attempt
            return ("image", path, name, None)
        return ("skip", path, name, "not an image or video file")

    for item in items:
        if item == "demo":
            yield ("image", demo_image(), "astronaut.png", None)
            continue
        path = Path(item).expanduser()
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for f in sorted(files):
                    if f.startswith("."):
                        continue  # .DS_Store and friends are not inputs
                    p = Path(root) / f
                    yield classify(p, False, str(p))
        elif path.is_file():
            yield classify(path, True, str(path))
        elif _GLOB_CHARS & set(item):
            hits = sorted(glob.iglob(os.path.expanduser(item), recursive=True))
            files = [h for h in hits if os.path.isfile(h)]
            if not files:
                yield ("skip", path, item, "no file matches this pattern")
            for h in files:
                yield classify(Path(h), False, h)
        else:
            yield ("skip", path, item, "no such file or folder")


# ----------------------------------------------------------------------------- output
class Writer:
    """Streams records as JSON lines, CSV rows or readable text."""

    def __init__(self, fmt: str, labels: list[str], stream):
        self.fmt, self.labels, self.stream = fmt, labels, stream
        self._csv = None
        if fmt == "csv":
            cols = [
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
            self._csv = csv.DictWriter(stream, fieldnames=cols + labels, lineterminator="\n")
            self._csv.writeheader()

    def write(self, source: str, faces, frame=None, time=None):
        for i, f in enumerate(faces):
            rec = {"source": source}
            if frame is not None:
                rec.update(frame=frame, time=round(time, 3), track=f.track_id)
            rec["face"] = i
            rec.update(f.to_dict())
            rec.pop("track_id", None)
            if self.fmt == "jsonl":
                self.stream.write(json.dumps(rec) + "\n")
            elif self.fmt == "csv":
                x, y, w, h = f.box
                row = {
                    k: rec.get(k, "") for k in ("source", "frame", "time", "track", "face", "label")
                }
                row.update(x=x, y=y, w=w, h=h, confidence=f"{f.confidence:.6f}")
                row.update({k: f"{v:.6f}" for k, v in f.scores.items()})
                self._csv.writerow(row)
            else:
                where = (
                    f" frame {frame} ({time:.2f}s) track {f.track_id}" if frame is not None else ""
                )
                top = sorted(f.scores.items(), key=lambda kv: -kv[1])[1:3]
                rest = ", ".join(f"{k} {v:.0%}" for k, v in top)
                self.stream.write(
                    f"{source}{where}: face {i + 1} at {tuple(f.box)}: "
                    f"{f.label} {f.confidence:.0%} ({rest})\n"
                )
        self.stream.flush()


# ----------------------------------------------------------------------------- run
def run(args) -> int:
    from tqdm import tqdm

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
    fmt = args.format or ("text" if args.demo and not args.inputs else "jsonl")
    rec = Recognizer.from_pretrained(
        args.model, backend=args.backend, detector=args.detector, device=args.device,
        mirror=args.mirror,
    )
    out = open(args.output, "w", newline="") if args.output else sys.stdout
    stats = Counter()
    skipped: Counter = Counter()
    quiet = True if args.no_progress else None  # None: tqdm shows bars only on a terminal
    ctx = _Context(args, rec, Writer(fmt, rec.labels, out), stats, skipped, quiet)
    try:
        total = sum(1 for _ in iter_inputs(items))  # names only: cheap, gives the bar a total
        bar = tqdm(total=total, unit="file", desc="predict", disable=quiet, file=sys.stderr)
        chunk = []
        for kind, path, name, reason in iter_inputs(items):
            if kind == "image":
                chunk.append((path, name))
                if len(chunk) >= args.batch_size:
                    ctx.images(chunk, bar)
                    chunk = []
                continue
            if chunk:
                ctx.images(chunk, bar)
                chunk = []
            if kind == "video":
                ctx.video(path, name)
            else:
                ctx.skip(name, reason)
            bar.update(1)
        if chunk:
            ctx.images(chunk, bar)
        bar.close()
        if args.webcam is not None:
            ctx.video(args.webcam, f"webcam:{args.webcam}")
    except KeyboardInterrupt:
        print("ferkit: interrupted; summary so far:", file=sys.stderr)
    finally:
        if args.output:
            out.close()
    _summary(stats, skipped, rec)
    return 1 if skipped else 0


class _Context:
    def __init__(self, args, rec, writer, stats, skipped, quiet):
        self.args, self.rec, self.writer, self.stats, self.skipped, self.quiet = (
            args,
            rec,
            writer,
            stats,
            skipped,
            quiet,
        )
        self.annot = Path(args.save_annotated) if args.save_annotated else None
        if self.annot:
            self.annot.mkdir(parents=True, exist_ok=True)

    def skip(self, name, reason):
        from tqdm import tqdm

        self.skipped[reason] += 1
        tqdm.write(f"ferkit: skipped {name}: {reason}", file=sys.stderr)

    def images(self, chunk, bar):
        """Decode, detect and classify a chunk of images (one forward pass for all faces)."""
        from ferkit.data.images import ImageDecodeError

        arrays, names = [], []
        for path, name in chunk:
            try:
                arrays.append(self.rec.load_image(path))
                names.append(name)
            except ImageDecodeError as e:
                self.skip(name, _reason(str(e)))
                bar.update(1)
        for name, arr, faces in zip(names, arrays, self.rec.predict_arrays(arrays)):
            self.stats["images"] += 1
            self.stats["faces"] += len(faces)
            self.stats["no_face"] += not faces
            self.writer.write(name, faces)
            if self.annot:
                import cv2

                from ferkit.inference.video import annotate

                target = self.annot / _annotated_name(name)
                cv2.imwrite(str(target), annotate(arr, faces))
            bar.update(1)

    def video(self, source, name):
        from tqdm import tqdm

        from ferkit.errors import DataError
        from ferkit.inference.video import (
            IouTracker,
            annotate,
            frame_count,
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
        writer = None
        frames = 0
        try:
            for frame, faces in predict_video(
                self.rec, source, args.every, args.max_frames, tracker
            ):
                frames += 1
                self.stats["faces"] += len(faces)
                self.writer.write(str(name), faces, frame.index, frame.time)
                if self.annot:
                    writer = writer or _video_writer(
                        self.annot, name, frame.rgb, args.every, source
                    )
                    writer.write(annotate(frame.rgb, faces))
                bar.update(1)
        except DataError as e:
            self.skip(name, _reason(str(e)))
            return
        finally:
            bar.close()
            if writer is not None:
                writer.release()
        self.stats["videos"] += 1
        self.stats["frames"] += frames
        self.stats["tracks"] += len(tracker.all_tracks())
        if args.plot:
            stem = "webcam" if isinstance(source, int) else Path(str(name)).stem
            self.stats["plots"] += len(plot_tracks(tracker, self.rec.labels, args.plot, stem))


def _video_writer(folder: Path, name, first_rgb, every: int, source):
    import cv2

    fps = 25.0
    if not isinstance(source, int):
        cap = cv2.VideoCapture(str(source))
        fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
        cap.release()
    h, w = first_rgb.shape[:2]
    stem = "webcam" if isinstance(source, int) else Path(str(name)).stem
    return cv2.VideoWriter(
        str(folder / f"{stem}_annotated.mp4"),
        cv2.VideoWriter_fourcc(*"mp4v"),
        max(1.0, fps / every),
        (w, h),
    )


def _annotated_name(name: str) -> str:
    # Flatten the input path so same-named files from different folders do not collide.
    p = Path(name)
    parts = [x for x in p.parent.parts if x not in ("/", ".", "..")][-2:]
    suffix = p.suffix.lower() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp") else ".png"
    return "_".join([*parts, p.stem]) + suffix


def _reason(message: str) -> str:
    """Group one-line error messages into summary categories."""
    m = message.lower()
    if "webcam" in m:
        return "webcam not available"
    if "too large" in m or "decompression bomb" in m:
        return "image too large (refused)"
    if "no such" in m:
        return "no such file"
    if "video" in m or "frame" in m or "codec" in m:
        return "unreadable video"
    return "corrupt or unreadable image"


def _summary(stats: Counter, skipped: Counter, rec) -> None:
    parts = [
        f"{stats['images']} image(s)"
        + (f" ({stats['no_face']} with no face)" if stats["no_face"] else "")
    ]
    if stats["videos"]:
        parts.append(
            f"{stats['videos']} video(s) ({stats['frames']} frames analysed, {stats['tracks']} face "
            f"track(s){', %d plot(s)' % stats['plots'] if stats['plots'] else ''})"
        )
    parts.append(f"{stats['faces']} face(s)")
    line = "ferkit predict: " + ", ".join(parts)
    if skipped:
        why = ", ".join(f"{n} {r}" for r, n in sorted(skipped.items(), key=lambda kv: -kv[1]))
        line += f"; {sum(skipped.values())} input(s) skipped: {why}"
    line += f" [model {rec.version}, {rec.backend}, detector {rec.detector.name}]"
    print(line, file=sys.stderr)
