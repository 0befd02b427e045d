"""Small faces in large photos: recall and detection time per detector and ``min_face``.

Two sets (``../shared``, research-licensed, not redistributed):

* **Canvases**: one real KDEF face (``AF01ANS`` frontal and ``AF01AFHL`` half profile,
  cut with context around the Haar box) pasted with its face box at 400, 300, 200, 120
  and 40 px onto mid-gray 4000x3000 and 1000x750 canvases, at ``--positions`` places
  drawn with seed 0. A hit = a box with IoU >= 0.3 with the pasted face box.
* **FER2013**: ``--fer-n`` PublicTest faces (seed 0) upscaled from 48 px to 48, 96 and
  144 px and placed at a random spot on a 1280x960 mid-gray frame (bench_haar_scale's
  faces, in a larger frame). Same hit rule. With ``--accuracy``, also the shipped
  model's accuracy on the faces found, cropped from the detector's box (what users get)
  and cropped exactly (the pasted square): the cost of each detector's framing.

* **Group photo** (``--group``): a 4000x3000 grid of 8x4 KDEF AF01 portraits (all four
  angles, 500x750 each; faces 200-300 px), textured everywhere, unlike the canvases.
  Found = faces matched by a box (IoU >= 0.3; truth from ``haar-full`` on each portrait).

* **Photo** (``--photo``): bench_inference's 640x480 photo with one face, 30 detections
  per detector and ``min_face``, median wall ms and mean CPU ms.

Time: median wall ms of ``detector.detect`` per image (detection only) and the
process CPU ms (all OpenCV threads summed; steadier on a shared machine).

Usage::

    nice -n 10 python benchmarks/bench_small_faces.py [--shared ../shared] [--threads 2]
        [--positions 3] [--fer-n 200] [--detectors haar,haar-fast,mtcnn] [--min-faces 0,40]
        [--accuracy] [--only-fer | --skip-fer | --group | --photo]
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
from bench_inference import hardware

from ferkit.faces import HaarDetector, get_detector, iou

CANVASES = [(4000, 3000), (1000, 750)]
FACE_SIDES = [400, 300, 200, 120, 40]
FER_SIDES = [48, 96, 144]
LABELS: dict = {}  # FER set key -> the class name of each item


def kdef_faces(shared: Path) -> list[tuple[np.ndarray, tuple[int, int, int, int]]]:
    """(RGB crop with context, face box inside it) for the frontal and half-profile KDEF photos."""
    out = []
    det = HaarDetector(profile=True, min_face=0, max_side=800)
    for name in ("AF01ANS.JPG", "AF01AFHL.JPG"):
        rgb = cv2.cvtColor(cv2.imread(str(shared / "fixtures/kdef/AF01" / name)), cv2.COLOR_BGR2RGB)
        x, y, w, h = det.detect(rgb)[0]
        side = int(max(w, h) * 1.8)  # hair, neck and shoulders around the face box
        x0, y0 = x + w // 2 - side // 2, y + h // 2 - side // 2
        pad = side
        big = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        crop = big[y0 + pad : y0 + pad + side, x0 + pad : x0 + pad + side]
        out.append((crop, (x - x0, y - y0, w, h)))
    return out


def paste(canvas: np.ndarray, crop: np.ndarray, box, face_px: int, rng: random.Random):
    """Paste ``crop`` scaled so its face box is ``face_px`` wide; return the face box on the canvas."""
    f = face_px / box[2]
    side = max(1, round(crop.shape[0] * f))
    interp = cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC
    small = cv2.resize(crop, (side, side), interpolation=interp)
    H, W = canvas.shape[:2]
    side = min(side, H, W)
    small = small[:side, :side]
    cx, cy = rng.randrange(0, W - side + 1), rng.randrange(0, H - side + 1)
    canvas[cy : cy + side, cx : cx + side] = small
    return (cx + round(box[0] * f), cy + round(box[1] * f), round(box[2] * f), round(box[3] * f))


def canvas_set(shared: Path, positions: int):
    faces = kdef_faces(shared)
    rng = random.Random(0)
    sets = {}
    for W, H in CANVASES:
        for px in FACE_SIDES:
            items = []
            for crop, box in faces:
                for _ in range(positions):
                    canvas = np.full((H, W, 3), 128, np.uint8)
                    items.append((canvas, paste(canvas, crop, box, px, rng)))
            sets[(f"{W}x{H}", px)] = items
    return sets


def fer_set(shared: Path, n: int):
    files = sorted((shared / "datasets/fer2013/test").glob("*/*.jpg"))
    random.Random(0).shuffle(files)
    rng = random.Random(1)
    sets = {}
    for px in FER_SIDES:
        items, labels = [], []
        for f in files[:n]:
            labels.append(f.parent.name)
            g = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
            g = cv2.resize(g, (px, px), interpolation=cv2.INTER_CUBIC) if px != 48 else g
            canvas = np.full((960, 1280), 128, np.uint8)
            x, y = rng.randrange(0, 1280 - px), rng.randrange(0, 960 - px)
            canvas[y : y + px, x : x + px] = g
            items.append((np.repeat(canvas[:, :, None], 3, 2), (x, y, px, px)))
        sets[("FER 1280x960", px)] = items
        LABELS[("FER 1280x960", px)] = labels
    return sets


def group_photo(shared: Path):
    """The 4000x3000 grid of 32 KDEF portraits and the face box of each (from haar-full)."""
    det = HaarDetector(profile=True, min_face=0, max_side=800)
    tiles, boxes = [], []
    for p in sorted((shared / "fixtures/kdef/AF01").glob("*.JPG")):
        rgb = cv2.resize(cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB), (500, 750), interpolation=cv2.INTER_AREA)
        tiles.append((rgb, det.detect(rgb)[0]))
    grid = np.zeros((3000, 4000, 3), np.uint8)
    for k in range(32):
        rgb, (x, y, w, h) = tiles[k % len(tiles)]
        r, c = divmod(k, 8)
        grid[r * 750 : (r + 1) * 750, c * 500 : (c + 1) * 500] = rgb
        boxes.append((c * 500 + x, r * 750 + y, w, h))
    return grid, boxes


def run_group(det, min_face: int, grid, truth, repeat: int = 2) -> str:
    cpu0 = time.process_time()
    for _ in range(repeat):
        boxes = det.detect(grid, min_face)
    cpu = 1000 * (time.process_time() - cpu0) / repeat
    hits = sum(any(iou(b, t) >= 0.3 for b in boxes) for t in truth)
    extra = sum(not any(iou(b, t) >= 0.3 for t in truth) for b in boxes)
    return f"{hits}/{len(truth)} | {extra} | - | {cpu:.0f} |"


def run(det, min_face: int, items):
    """Hits, median wall ms, mean CPU ms per image, false positives, best hit box per item."""
    hits = extra = 0
    walls, cpu, found = [], 0.0, []
    for im, truth in items:
        c0, t0 = time.process_time(), time.perf_counter()
        boxes = det.detect(im, min_face)
        walls.append(1000 * (time.perf_counter() - t0))
        cpu += 1000 * (time.process_time() - c0)
        best = max(boxes, key=lambda b: iou(b, truth), default=None)
        ok = best is not None and iou(best, truth) >= 0.3
        found.append(best if ok else None)
        hits += ok
        extra += len(boxes) - ok
    return hits, float(np.median(walls)), cpu / max(1, len(items)), extra, found


def accuracy(rec, items, labels, found) -> str:
    """Shipped model's accuracy on the faces found: detector crop / exact crop."""
    pairs = [(im, b, t, y) for (im, t), y, b in zip(items, labels, found) if b is not None]
    if not pairs:
        return "- / -"
    det = rec.predict_arrays([p[0] for p in pairs], boxes=[[p[1]] for p in pairs])
    exact = rec.predict_arrays([p[0] for p in pairs], boxes=[[p[2]] for p in pairs])
    a = np.mean([f[0].label == p[3] for f, p in zip(det, pairs)])
    b = np.mean([f[0].label == p[3] for f, p in zip(exact, pairs)])
    return f"{100 * a:.1f}% / {100 * b:.1f}%"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--positions", type=int, default=3)
    ap.add_argument("--fer-n", type=int, default=200)
    ap.add_argument("--detectors", default="haar,haar-fast,mtcnn")
    ap.add_argument("--min-faces", default="0,40")
    ap.add_argument("--skip-fer", action="store_true")
    ap.add_argument("--only-fer", action="store_true")
    ap.add_argument("--group", action="store_true", help="only the 4000x3000 group photo")
    ap.add_argument("--photo", action="store_true", help="only the 640x480 photo (detection time)")
    ap.add_argument("--accuracy", action="store_true", help="FER sets: the shipped model's accuracy")
    args = ap.parse_args()
    cv2.setNumThreads(args.threads)
    shared = Path(args.shared)
    print("hardware:", hardware(args.threads))
    if args.photo:
        from bench_inference import photo_640x480

        photo = photo_640x480()
        print("| detector | min_face | 640x480 photo: faces | median ms | CPU ms |")
        print("|---|---|---|---|---|")
        for name in args.detectors.split(","):
            det = get_detector(name)
            for mf in (int(v) for v in args.min_faces.split(",")):
                n = len(det.detect(photo, mf))
                walls, c0 = [], time.process_time()
                for _ in range(30):
                    t0 = time.perf_counter()
                    det.detect(photo, mf)
                    walls.append(1000 * (time.perf_counter() - t0))
                cpu = 1000 * (time.process_time() - c0) / 30
                print(f"| {name} | {mf} | {n} | {np.median(walls):.1f} | {cpu:.1f} |", flush=True)
        return
    if args.group:
        grid, truth = group_photo(shared)
        print("| detector | min_face | set | faces found | false pos. | median ms | CPU ms |")
        print("|---|---|---|---|---|---|---|")
        for name in args.detectors.split(","):
            det = get_detector(name)
            for mf in (int(v) for v in args.min_faces.split(",")):
                det.detect(grid[:300, :400], mf)  # load the detector's objects first
                print(f"| {name} | {mf} | group 4000x3000 | {run_group(det, mf, grid, truth)}", flush=True)
        return
    sets = canvas_set(shared, args.positions)
    if not args.skip_fer:
        sets.update(fer_set(shared, args.fer_n))
    if args.only_fer:
        sets = {k: v for k, v in sets.items() if k[0].startswith("FER")}
    rec = None
    if args.accuracy:
        from ferkit.inference.recognizer import Recognizer

        rec = Recognizer.from_pretrained("default", threads=args.threads)
    acc_col = " accuracy: detector crop / exact crop |" if rec else ""
    print(f"| detector | min_face | set | face px | found | false pos. | median ms | CPU ms |{acc_col}")
    print("|---|---|---|---|---|---|---|---|" + ("---|" if rec else ""))
    for name in args.detectors.split(","):
        try:
            det = get_detector(name)
        except Exception as e:  # noqa: BLE001 - an optional detector that is not installed
            print(f"| {name} | - | - | - | skipped: {e} | | | |")
            continue
        for mf in (int(v) for v in args.min_faces.split(",")):
            for (what, px), items in sets.items():
                hits, wall, cpu, extra, found = run(det, mf, items)
                acc = ""
                if rec is not None:
                    acc = f" {accuracy(rec, items, LABELS[(what, px)], found)} |" if (what, px) in LABELS else " |"
                print(
                    f"| {name} | {mf} | {what} | {px} | {hits}/{len(items)} | {extra} | "
                    f"{wall:.1f} | {cpu:.1f} |{acc}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
