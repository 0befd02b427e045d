"""Does eye-line alignment (MTCNN landmarks) help the shipped model on tilted faces?

``--fer-n`` FER2013 PublicTest faces (seed 0) are upscaled to 144 px, rotated by each
angle (replicated border, so no black corners), and placed on a 400x400 mid-gray canvas.
MTCNN (``ferkit.inference.faces.MtcnnDetector``) finds the face and its eyes; the shipped
model then classifies the face cropped two ways:

* **box**: ferkit's crop (the square around the detector box), as ``Recognizer`` does;
* **aligned**: the image first rotated about the eyes' midpoint so the eye line is
  level, then the same square cut around the rotated box centre.

Accuracy is over the faces MTCNN found at that angle; "upright" is the model on the
same faces cut exactly from the unrotated canvas (the ceiling).

Usage::

    nice -n 10 python benchmarks/bench_alignment.py [--shared ../shared] [--fer-n 300]
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inference import hardware

from ferkit.faces import MtcnnDetector, crop_face
from ferkit.inference.recognizer import Recognizer

ANGLES = [0, 15, 30, -30]
SIDE, CANVAS, AT = 144, 400, 128


def aligned_crop(image, box, eyes, input_config):
    """Rotate about the eye midpoint so the eyes are level, then ferkit's square crop."""
    (lx, ly), (rx, ry) = eyes
    angle = np.degrees(np.arctan2(ry - ly, rx - lx))
    centre = ((lx + rx) / 2, (ly + ry) / 2)
    m = cv2.getRotationMatrix2D(centre, angle, 1.0)
    rot = cv2.warpAffine(image, m, image.shape[1::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    x, y, w, h = box
    cx, cy = m @ np.array([x + w / 2, y + h / 2, 1.0])
    return crop_face(rot, (cx - w / 2, cy - h / 2, w, h), input_config)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--fer-n", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    cv2.setNumThreads(args.threads)
    print("hardware:", hardware(args.threads))
    files = sorted((Path(args.shared) / "datasets/fer2013/test").glob("*/*.jpg"))
    random.Random(0).shuffle(files)
    files = files[: args.fer_n]
    rec = Recognizer.from_pretrained("default", threads=args.threads)
    det = MtcnnDetector(min_face=0, max_side=400)
    cfg = rec.input_config
    labels = np.array([f.parent.name for f in files])
    print("| angle | faces found | box crop | aligned crop | upright exact crop (same faces) |")
    print("|---|---|---|---|---|")
    for angle in ANGLES:
        box_crops, al_crops, exact, keep = [], [], [], []
        for k, f in enumerate(files):
            g = cv2.resize(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE), (SIDE, SIDE), interpolation=cv2.INTER_CUBIC)
            canvas = np.full((CANVAS, CANVAS), 128, np.uint8)
            canvas[AT : AT + SIDE, AT : AT + SIDE] = g
            m = cv2.getRotationMatrix2D((AT + SIDE / 2, AT + SIDE / 2), angle, 1.0)
            tilted = cv2.warpAffine(canvas, m, (CANVAS, CANVAS), borderMode=cv2.BORDER_REPLICATE)
            rgb = np.repeat(tilted[:, :, None], 3, 2)
            boxes, marks = det.detect_with_landmarks(rgb)
            if not len(boxes):
                continue
            x, y, w, h = (float(v) for v in boxes[0, :4])
            box_crops.append(crop_face(rgb, (x, y, w, h), cfg))
            al_crops.append(aligned_crop(rgb, (x, y, w, h), marks[0, :2], cfg))
            exact.append(crop_face(np.repeat(canvas[:, :, None], 3, 2), (AT, AT, SIDE, SIDE), cfg))
            keep.append(k)
        y = labels[keep]
        acc = [
            100 * np.mean(np.array(rec.labels)[rec.classify_faces(c).argmax(1)] == y) if c else float("nan")
            for c in (box_crops, al_crops, exact)
        ]
        print(f"| {angle} | {len(keep)}/{len(files)} | {acc[0]:.1f}% | {acc[1]:.1f}% | {acc[2]:.1f}% |", flush=True)


if __name__ == "__main__":
    main()
