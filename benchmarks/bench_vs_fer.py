"""ferkit beside the ``fer`` package, measured in one run on this machine, with the ratios.

The peer users compare ferkit with is the ``fer`` package (pip install fer: a Keras
mini-Xception on 64x64 gray faces, TensorFlow, OpenCV's Haar cascade). It cannot share a
process or an environment with ferkit (TensorFlow and its own PyTorch), so it runs from its
own virtual environment (``--fer-python``, e.g. ``python3.11 -m venv /work/venv-fer &&
/work/venv-fer/bin/pip install fer tensorflow-cpu "setuptools<81"``: fer
imports pkg_resources, which setuptools 81 dropped) and every measurement, of either side,
runs in a fresh subprocess of its own with the same thread count:

(a) batched classification of pre-cropped 48x48 gray faces, batch 256, for ``--seconds``:
    faces/s, preprocessing included (ferkit: ``Recognizer.classify_faces`` with the model's
    own test-time views and with none; fer: resize to 64x64, scale, its Keras model);
(b) one 640x480 JPEG with one face, in process: decode + detect + classify, median and p95
    of ``--runs`` after a warm-up (ferkit: ``Recognizer.predict``; fer: ``FER().detect_emotions``);
(c) a one-photo command from a cold start: wall time and peak RSS (``ferkit predict PHOTO``
    against ``python -c "from fer import FER; ..."`` on the same photo), median of ``--commands``.

Usage::

    python benchmarks/bench_vs_fer.py --fer-python /work/venv-fer/bin/python [--threads 2] [--model default]

Prints the CPU, its flags and the load average before and after; a run whose load exceeded
the threads is marked NOISY.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ASSET = REPO / "src" / "ferkit" / "assets" / "astronaut.png"

_COMMON = """
import json, os, sys, time
import numpy as np
THREADS = int(os.environ["BENCH_THREADS"])
def crops():
    return np.random.default_rng(0).integers(0, 256, (256, 48, 48), dtype=np.uint8)
def rate(fn, seconds):
    fn()  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 256
    return n / (time.perf_counter() - t0)
def latency(fn, runs):
    fn(); fn()  # warm-up
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(1000 * (time.perf_counter() - t0))
    return out
"""

FERKIT_WORKER = _COMMON + """
from ferkit.inference.recognizer import Recognizer
what, arg, model = sys.argv[1], float(sys.argv[2]), sys.argv[3]
if what == "crops":
    res = {}
    for tta in (None, "none"):
        rec = Recognizer.from_pretrained(model, detector="none", threads=THREADS, tta=tta)
        c = crops()
        res[rec.tta] = rate(lambda: rec.classify_faces(c), arg)
    print(json.dumps(res))
else:
    rec = Recognizer.from_pretrained(model, threads=THREADS)
    jpeg = open(sys.argv[4], "rb").read()
    assert len(rec.predict(jpeg)) == 1, "the benchmark photo should have exactly one face"
    print(json.dumps({"ms": latency(lambda: rec.predict(jpeg), int(arg)), "tta": rec.tta}))
"""

FER_WORKER = _COMMON + """
import cv2
cv2.setNumThreads(THREADS)
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(THREADS)
tf.config.threading.set_inter_op_parallelism_threads(1)
from fer.fer import FER
det = FER()
what, arg = sys.argv[1], float(sys.argv[2])
if what == "crops":
    c = crops()
    def classify():
        faces = np.array([cv2.resize(x, (64, 64)) for x in c], dtype="float32")
        return np.asarray(det._classify_emotions((faces / 255.0 - 0.5) * 2.0))
    print(json.dumps({"fer": rate(classify, arg)}))
else:
    img = cv2.imdecode(np.frombuffer(open(sys.argv[4], "rb").read(), np.uint8), cv2.IMREAD_COLOR)
    assert len(det.detect_emotions(img)) == 1, "the benchmark photo should have exactly one face"
    def once():
        im = cv2.imdecode(np.frombuffer(open(sys.argv[4], "rb").read(), np.uint8), cv2.IMREAD_COLOR)
        return det.detect_emotions(im)
    print(json.dumps({"ms": latency(once, int(arg))}))
"""

FER_COMMAND = "import cv2, sys; from fer.fer import FER; print(FER().detect_emotions(cv2.imread(sys.argv[1])))"


def photo(path: Path) -> Path:
    """The demo portrait on a 640x480 canvas (one face, like a webcam photo), as a JPEG."""
    from PIL import Image

    face = Image.open(ASSET).convert("RGB").resize((360, 360))
    canvas = Image.new("RGB", (640, 480), (200, 200, 205))
    canvas.paste(face, (140, 60))
    canvas.save(path, quality=92)
    return path


def _env(threads: int) -> dict:
    env = dict(os.environ, BENCH_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="1")
    env.pop("PYTHONPATH", None)
    return env


def _worker(python: str, code: str, args: list[str], threads: int) -> dict:
    r = subprocess.run([python, "-c", code, *args], capture_output=True, text=True, env=_env(threads), check=False)
    if r.returncode != 0:
        raise SystemExit(f"benchmark worker failed ({python}):\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


TIME = "/usr/bin/time"  # GNU time: the peak RSS of the command itself


def _command(argv: list[str], threads: int) -> tuple[float, float | None]:
    """Wall seconds and peak RSS (MB) of one command run from a cold start.

    The RSS comes from GNU time, which forks the command from its own small process: a
    child forked from this (large) Python process keeps the parent's size in its
    ``ru_maxrss`` even after exec, so ``os.wait4`` here reported this benchmark's own size.
    """
    import time

    timed = Path(TIME).is_file()
    full = [TIME, "-f", "%M", *argv] if timed else argv
    t0 = time.perf_counter()
    r = subprocess.run(full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env(threads),
                       check=False)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {r.stderr[-1000:]}")
    return wall, int(r.stderr.strip().splitlines()[-1]) / 1024 if timed else None


def _load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=textwrap.dedent(__doc__.split("Usage::")[0].split("\n", 2)[2]))
    ap.add_argument("--fer-python", required=True, help="the python of a virtual environment with fer installed")
    ap.add_argument("--model", default="default", help="ferkit model (default: the shipped default)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=5.0, help="(a) seconds per side")
    ap.add_argument("--runs", type=int, default=30, help="(b) timed photos per side")
    ap.add_argument("--commands", type=int, default=3, help="(c) cold starts per side")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    if not Path(args.fer_python).is_file():
        ap.error(f"--fer-python {args.fer_python}: no such file")
    ferkit_bin = str(Path(sys.executable).with_name("ferkit"))
    from ferkit.training.precision import cpu_flags, cpu_model

    load_before = _load()
    with tempfile.TemporaryDirectory() as tmp:
        jpeg = str(photo(Path(tmp) / "photo640x480.jpg"))
        crops_k = _worker(sys.executable, FERKIT_WORKER, ["crops", str(args.seconds), args.model], args.threads)
        crops_f = _worker(args.fer_python, FER_WORKER, ["crops", str(args.seconds)], args.threads)
        lat_k = _worker(sys.executable, FERKIT_WORKER, ["photo", str(args.runs), args.model, jpeg], args.threads)
        lat_f = _worker(args.fer_python, FER_WORKER, ["photo", str(args.runs), "-", jpeg], args.threads)
        cmd_k = [_command([ferkit_bin, "predict", jpeg, "--model", args.model, "--no-progress"], args.threads)
                 for _ in range(args.commands)]
        cmd_f = [_command([args.fer_python, "-c", FER_COMMAND, jpeg], args.threads) for _ in range(args.commands)]
    load_after = _load()
    tta = lat_k["tta"]
    res = {
        "cpu": cpu_model(), "cpu_flags": cpu_flags(), "threads": args.threads, "model": args.model,
        "load_average_before": round(load_before, 2), "load_average_after": round(load_after, 2),
        "noisy": max(load_before, load_after) > args.threads,
        "crops_per_s": {"ferkit": crops_k, "fer": crops_f["fer"]},
        "photo_ms": {"ferkit": statistics.median(lat_k["ms"]), "fer": statistics.median(lat_f["ms"]),
                     "ferkit_p95": sorted(lat_k["ms"])[int(0.95 * len(lat_k["ms"])) - 1],
                     "fer_p95": sorted(lat_f["ms"])[int(0.95 * len(lat_f["ms"])) - 1]},
        "command": {"ferkit_s": statistics.median(w for w, _ in cmd_k), "fer_s": statistics.median(w for w, _ in cmd_f),
                    "ferkit_mb": statistics.median(m or 0 for _, m in cmd_k),
                    "fer_mb": statistics.median(m or 0 for _, m in cmd_f)},
    }
    if args.json:
        print(json.dumps(res))
        return res
    print(f"{res['cpu']} [{' '.join(res['cpu_flags'])}], {args.threads} threads each side; load average "
          f"{load_before:.2f} before, {load_after:.2f} after; ferkit model {args.model!r} (test-time views: {tta})")
    if res["noisy"]:
        print("NOISY: the load average exceeded the threads used: something else was running")
    fer_rate = crops_f["fer"]
    for mode, r in crops_k.items():
        print(f"(a) 48x48 crops, batch 256: ferkit ({mode}) {r:,.0f}/s, fer {fer_rate:,.0f}/s -> {r / fer_rate:.2f}x")
    p = res["photo_ms"]
    print(f"(b) 640x480 photo, one face, in process: ferkit median {p['ferkit']:.1f} ms (p95 {p['ferkit_p95']:.1f}), "
          f"fer {p['fer']:.1f} ms (p95 {p['fer_p95']:.1f}) -> fer / ferkit {p['fer'] / p['ferkit']:.2f}x")
    c = res["command"]
    print(f"(c) one-photo command, cold: ferkit {c['ferkit_s']:.2f} s, {c['ferkit_mb']:.0f} MB peak; fer "
          f"{c['fer_s']:.2f} s, {c['fer_mb']:.0f} MB -> {c['fer_s'] / c['ferkit_s']:.1f}x faster, "
          f"{c['fer_mb'] / c['ferkit_mb']:.1f}x less memory")
    return res


if __name__ == "__main__":
    main()
