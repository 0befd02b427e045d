"""Haar pyramid step (``haar`` 1.1 vs ``haar-fast`` 1.15 vs 1.2): recall and detection time.

Recall on two sets:

* the real fixtures (``../shared/fixtures``): KDEF AF01 photos and every 3rd frame of the
  RAVDESS clip, one roughly centred face each (a hit = a box centred in the middle 80%);
* FER2013 PublicTest faces (``../shared/datasets/fer2013/test``), ``--fer-n`` drawn with
  seed 0, upscaled to 144 px and placed on a 320x240 mid-gray canvas: hard, tightly
  cropped faces.

Time: median detection time of the 640x480 benchmark photo (bench_inference's), 60 runs.

Usage::

    python benchmarks/bench_haar_scale.py [--shared ../shared] [--threads 2] [--fer-n 600]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_detectors import load_kdef, load_ravdess
from bench_inference import hardware, photo_640x480

from ferkit.faces import HaarDetector

FACE = 144  # FER2013 faces are upscaled to this side ...
FACE_BOX = (88, 48, FACE, FACE)  # ... and placed here on a 320x240 mid-gray canvas (x, y, w, h)


def fer_faces(shared: Path, n: int) -> tuple[list[np.ndarray], list[str]]:
    """``n`` PublicTest faces (seed 0) on 320x240 RGB canvases, and their class names."""
    files = sorted((shared / "datasets" / "fer2013" / "test").glob("*/*.jpg"))
    random.Random(0).shuffle(files)
    images, labels = [], []
    x, y = FACE_BOX[:2]
    for f in files[:n]:
        g = cv2.resize(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE), (FACE, FACE), interpolation=cv2.INTER_CUBIC)
        canvas = np.full((240, 320), 128, np.uint8)
        canvas[y : y + FACE, x : x + FACE] = g
        images.append(np.repeat(canvas[:, :, None], 3, 2))
        labels.append(f.parent.name)
    return images, labels


def centred(box, shape) -> bool:
    """A plausible hit on a one-face image: the box centre lies in the middle 80%."""
    h, w = shape[:2]
    return 0.1 * w < box[0] + box[2] / 2 < 0.9 * w and 0.1 * h < box[1] + box[3] / 2 < 0.9 * h


def centred_hits(det, images) -> tuple[int, int]:
    hits = extra = 0
    for im in images:
        boxes = det.detect(im)
        ok = [b for b in boxes if centred(b, im.shape)]
        hits += bool(ok)
        extra += len(boxes) - (1 if ok else 0)
    return hits, extra


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fer-n", type=int, default=600)
    args = ap.parse_args()
    cv2.setNumThreads(args.threads)
    shared = Path(args.shared)
    print("hardware:", hardware(args.threads))
    fixtures = [im for _, im in load_kdef(shared) + load_ravdess(shared, 3)]
    fer, _ = fer_faces(shared, args.fer_n)
    photo = photo_640x480()
    print("| pyramid step | fixtures found | false positives | FER2013 faces found | photo detect median ms |")
    print("|---|---|---|---|---|")
    for sf in (1.1, 1.15, 1.2):
        det = HaarDetector(profile="fallback", scale_factor=sf)
        hits, extra = centred_hits(det, fixtures)
        n_fer = sum(bool(det.detect(im)) for im in fer)
        det.detect(photo)
        times = []
        for _ in range(60):
            t0 = time.perf_counter()
            det.detect(photo)
            times.append(1000 * (time.perf_counter() - t0))
        fer_txt = f"{n_fer}/{len(fer)} ({100 * n_fer / max(1, len(fer)):.1f}%)"
        print(f"| {sf} | {hits}/{len(fixtures)} | {extra} | {fer_txt} | {np.median(times):.1f} |")


if __name__ == "__main__":
    main()
