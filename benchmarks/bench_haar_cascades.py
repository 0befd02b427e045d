"""OpenCV's three frontal Haar cascades (default, alt, alt2) as ferkit's ``haar`` detector.

For each cascade (pyramid step 1.1, profile passes as fallback, 320 px side):

* recall and false positives on the real fixtures (``../shared/fixtures``): KDEF AF01
  photos and every 3rd frame of the RAVDESS clip, one roughly centred face each;
* on FER2013 PublicTest faces (``--fer-n`` drawn with seed 0, upscaled to 144 px on a
  320x240 mid-gray canvas, as in bench_haar_scale.py): faces found, the median box
  side relative to the 144 px face (crops are the square box, so this says whether the
  cascade's boxes frame a face the way the training faces are framed), and the shipped
  model's accuracy on the faces found, beside its accuracy on the same faces cropped
  exactly (the 144 px square): the cost of the detector's framing;
* time: median ``detect`` and median end-to-end ``Recognizer.predict`` (JPEG bytes,
  decode + detect + crop + classify, ONNX backend) on bench_inference's 640x480 photo,
  measured in interleaved rounds so that load changes hit every cascade alike.

Usage::

    python benchmarks/bench_haar_cascades.py [--shared ../shared] [--threads 2] [--fer-n 600]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_detectors import load_kdef, load_ravdess
from bench_haar_scale import FACE, FACE_BOX, centred, centred_hits, fer_faces
from bench_inference import hardware, photo_640x480

from ferkit.faces import FRONTAL_CASCADES, HaarDetector
from ferkit.inference.recognizer import Recognizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fer-n", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    ap.add_argument("--runs", type=int, default=30, help="timed calls per cascade per round")
    args = ap.parse_args()
    cv2.setNumThreads(args.threads)
    shared = Path(args.shared)
    print("hardware:", hardware(args.threads))
    fixtures = [im for _, im in load_kdef(shared) + load_ravdess(shared, 3)]
    fer, labels = fer_faces(shared, args.fer_n)
    names = list(FRONTAL_CASCADES)
    dets = {n: HaarDetector(profile="fallback", frontal=n) for n in names}
    recs = {n: Recognizer.from_pretrained("default", backend="onnx", threads=args.threads, detector=dets[n]) for n in names}
    ref = next(iter(recs.values()))

    exact = ref.predict_arrays(fer, [[FACE_BOX]] * len(fer))
    rows = {}
    for n in names:
        hits, extra = centred_hits(dets[n], fixtures)
        found, sides, right, right_exact = 0, [], 0, 0
        for im, lab, ex in zip(fer, labels, exact):
            boxes = [b for b in dets[n].detect(im) if centred(b, im.shape)]
            if not boxes:
                continue
            found += 1
            sides.append(max(boxes[0][2:]) / FACE)
            face = recs[n].predict_arrays([im], [[boxes[0]]])[0][0]
            right += face.label == lab
            right_exact += ex[0].label == lab
        rows[n] = {
            "hits": hits, "extra": extra, "found": found,
            "side": float(np.median(sides)) if sides else float("nan"),
            "acc": 100 * right / max(1, found), "acc_exact": 100 * right_exact / max(1, found),
        }

    photo = photo_640x480()
    jpeg = cv2.imencode(".jpg", cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))[1].tobytes()
    t_det = {n: [] for n in names}
    t_e2e = {n: [] for n in names}
    for n in names:
        assert len(recs[n].predict(jpeg)) == 1, f"{n}: the benchmark photo should give one face"
    for _ in range(args.rounds):
        for n in names:
            for _ in range(args.runs):
                t0 = time.perf_counter()
                dets[n].detect(photo)
                t_det[n].append(1000 * (time.perf_counter() - t0))
            for _ in range(args.runs):
                t0 = time.perf_counter()
                recs[n].predict(jpeg)
                t_e2e[n].append(1000 * (time.perf_counter() - t0))

    nf = len(fer)
    print(
        f"| frontal cascade | fixtures found | false positives | FER2013 faces found (of {nf}) "
        "| median box side / face | accuracy on found faces: detector crop | same faces, exact crop "
        "| photo detect ms | photo end-to-end ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for n in names:
        r = rows[n]
        print(
            f"| {n} | {r['hits']}/{len(fixtures)} | {r['extra']} | {r['found']} ({100 * r['found'] / nf:.1f}%) "
            f"| {r['side']:.2f} | {r['acc']:.1f}% | {r['acc_exact']:.1f}% "
            f"| {np.median(t_det[n]):.1f} | {np.median(t_e2e[n]):.1f} |"
        )


if __name__ == "__main__":
    main()
