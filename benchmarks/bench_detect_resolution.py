"""Detection-resolution variants of the default ``haar`` detector: 640x480 photo time and recall.

The one-face photo's latency goal (#24: under 25 ms end to end) is mostly detection time.
This prints, for the shipped ``haar`` settings and four cheaper variants (native 20-px
window, detection scale 0.5 from a 48-px ``min_face``, pyramid step 1.15), the median
detection time of bench_vs_fer's photo (60 runs) and the hits on bench_small_faces' sets
(KDEF faces at 40 and 120 px on large canvases, 200 FER2013 faces at 48/96/144 px).

Usage: ``python benchmarks/bench_detect_resolution.py`` (needs ``../shared``; 2 OpenCV threads).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_small_faces as B
from bench_vs_fer import photo

from ferkit.faces import HaarDetector


def variants():
    """(name, detector, min_face): the shipped haar settings first, then cheaper ones."""
    yield "shipped (window 24, min_face 40)", HaarDetector(profile="fallback"), 40
    narrow = HaarDetector(profile="fallback")
    narrow.min_window = 20  # detection scale from a 20-px window, cascade min_size still 24
    yield "scale from 20-px window, min_size 24", narrow, 40
    yield "min_size 20 (cascade's native window)", HaarDetector(profile="fallback", min_size=20), 40
    yield "min_face 48", HaarDetector(profile="fallback"), 48
    yield "pyramid step 1.15", HaarDetector(profile="fallback", scale_factor=1.15), 40


def main() -> None:
    cv2.setNumThreads(2)
    shared = Path(__file__).resolve().parents[2] / "shared"
    print("load average before:", os.getloadavg())
    with tempfile.TemporaryDirectory() as scratch:
        path = photo(Path(scratch) / "photo640x480.jpg")
        img = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    sets = {k: v for k, v in B.canvas_set(shared, 3).items() if k[1] in (40, 120)}
    sets.update(B.fer_set(shared, 200))
    for name, det, min_face in variants():
        for _ in range(5):
            det.detect(img, min_face)
        ms = []
        for _ in range(60):
            t0 = time.perf_counter()
            det.detect(img, min_face)
            ms.append(1e3 * (time.perf_counter() - t0))
        out = [f"{name}: photo {statistics.median(ms):.1f} ms (scale {det.detection_scale(480, 640, min_face):.2f})"]
        for key, items in sets.items():
            hits, wall, _, extra, _ = B.run(det, min_face, items)
            out.append(f"{key[0]} @{key[1]}px {hits}/{len(items)} (fp {extra}, {wall:.0f} ms)")
        print(" | ".join(out), flush=True)
    print("load average after:", os.getloadavg())


if __name__ == "__main__":
    main()
