"""ferkit predict INPUT... : emotions of the faces in images, folders, globs, videos, a webcam."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from pathlib import Path

from ferkit.commands._args import BACKEND_HELP, MODEL_HELP, non_negative_int, positive_int, weight

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
    p.add_argument("--webcam", type=non_negative_int, metavar="N", help="read camera N (0 = first camera)")
    p.add_argument(
        "--model",
        default="default",
        help=MODEL_HELP,
    )
    p.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "torch", "onnx"],
        help=BACKEND_HELP,
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
    p.add_argument(
        "--json",
        dest="format",
        action="store_const",
        const="jsonl",
        help="same as --format jsonl: one JSON object per face and line (the --json of "
        "evaluate, export and cache)",
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
    p.add_argument("--max-frames", type=positive_int, metavar="N", help="videos/webcam: stop after N frames")
    p.add_argument(
        "--smoothing",
        type=weight,
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
    from ferkit.inference.batch import predict_inputs

    report = predict_inputs(
        rec, items, out, fmt=fmt, aliases=aliases, batch_size=args.batch_size, every=args.every,
        max_frames=args.max_frames, smoothing=args.smoothing, webcam=args.webcam,
        annotated_dir=args.save_annotated, plot_dir=args.plot,  # both created by run()
        progress=False if args.no_progress else None,
    )
    if report.interrupted:
        print("ferkit: interrupted; summary so far:", file=sys.stderr)
    if report.stats["crop_like"] and rec.detector.name != "none":
        print(
            f"ferkit: hint: {report.stats['crop_like']} image(s) with no face found look like face "
            "crops (small and square): if they are cropped faces, use --detector none to "
            "classify each whole image",
            file=sys.stderr,
        )
    print(report.summary(rec, bool(args.save_annotated), bool(args.plot)), file=sys.stderr)
    return report.exit_code
