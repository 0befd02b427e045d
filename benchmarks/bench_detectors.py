"""Compare the face detectors on real photos and video frames: recall and ms per image.

Data (from ../shared/fixtures, research-licensed, not redistributed):

* KDEF ``AF01/*.JPG``: 4 photos of one sitter, 562x762 colour, frontal (S),
  half profile (HL) and full profile (FL), one face each;
* RAVDESS ``Actor_19/*.mp4``: every ``--every``-th frame of a 720x720 clip,
  one face per frame.

Every image holds exactly one face, so recall = images with at least one box /
images, and every box beyond the first is a false positive. A box also has
to be plausible: its centre must fall inside the central 80% of the image
(all faces in these fixtures are roughly centred), otherwise it counts as a
false positive and not as a hit.

Usage::

    nice -n 19 python benchmarks/bench_detectors.py [--shared ../shared] [--every 3] [--repeat 3]

Prints a markdown table (the one in docs/face-detection.md) and the hardware.
Wall time suffers from whatever else runs on the machine; CPU time (process
time, all OpenCV threads summed) is the steadier figure on a busy machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import cv2
import numpy as np

from ferkit.faces import FaceDetector, HaarDetector, MtcnnDetector

REPO = Path(__file__).resolve().parents[1]


def load_kdef(shared: Path) -> list[tuple[str, np.ndarray]]:
    out = []
    for p in sorted((shared / "fixtures" / "kdef").glob("*/*.JPG")):
        bgr = cv2.imread(str(p))
        out.append((p.name, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
    return out


def load_ravdess(shared: Path, every: int) -> list[tuple[str, np.ndarray]]:
    out = []
    for p in sorted((shared / "fixtures" / "ravdess").glob("*/*.mp4")):
        cap = cv2.VideoCapture(str(p))
        i = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if i % every == 0:
                out.append((f"{p.name}#{i}", cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)))
            i += 1
        cap.release()
    return out


def plausible(box, shape) -> bool:
    h, w = shape[:2]
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    return 0.1 * w <= cx <= 0.9 * w and 0.1 * h <= cy <= 0.9 * h


def run(det: FaceDetector, images, repeat: int) -> dict:
    hits = fp = 0
    times, cpu = [], []
    misses = []
    for name, img in images:
        det.detect(img)  # warm-up (first call allocates the pyramid buffers)
        t, c = [], []
        for _ in range(repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            boxes = det.detect(img)
            t.append(time.perf_counter() - t0)
            c.append(time.process_time() - c0)
        times.append(min(t))
        cpu.append(min(c))
        good = [b for b in boxes if plausible(b, img.shape)]
        hits += bool(good)
        fp += len(boxes) - min(1, len(good))
        if not good:
            misses.append(name)
    return {
        "hits": hits,
        "n": len(images),
        "fp": fp,
        "ms": 1000 * float(np.median(times)),
        "cpu_ms": 1000 * float(np.median(cpu)),
        "misses": misses,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(REPO.parent / "shared"))
    ap.add_argument("--every", type=int, default=3, help="RAVDESS: use every N-th frame")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per image (min is kept)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    cv2.setNumThreads(args.threads)
    shared = Path(args.shared)
    sets = {
        "KDEF AF01 (4 photos)": load_kdef(shared),
        "RAVDESS clip frames": load_ravdess(shared, args.every),
    }
    if not any(sets.values()):
        raise SystemExit(f"no fixtures under {shared}/fixtures")
    configs = [
        ("haar-frontal", lambda s: HaarDetector(profile=False, max_side=s)),
        ("haar (frontal, profile fallback)", lambda s: HaarDetector(profile="fallback", max_side=s)),
        ("haar-full (frontal+profile)", lambda s: HaarDetector(profile=True, max_side=s)),
        ("mtcnn", lambda s: MtcnnDetector(max_side=s)),
    ]
    print(
        f"hardware: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
        f"OpenCV {cv2.__version__} with {args.threads} threads"
    )
    print(
        "| detector | detection side | data | recall | false pos. | wall ms/image | CPU ms/image | missed |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for label, make in configs:
        for side in (640, 320):
            try:
                det = make(side)
            except Exception as e:  # noqa: BLE001 - optional detector absent: say so, go on
                print(f"| {label} | {side} | - | not available: {e} | | | | |")
                break
            for set_name, images in sets.items():
                if not images:
                    continue
                r = run(det, images, args.repeat)
                missed = ", ".join(r["misses"][:4]) + (" ..." if len(r["misses"]) > 4 else "")
                print(
                    f"| {label} | {side} | {set_name} | {r['hits']}/{r['n']} | {r['fp']} | "
                    f"{r['ms']:.1f} | {r['cpu_ms']:.1f} | {missed} |"
                )


if __name__ == "__main__":
    main()
