"""Inference speed and memory: classification throughput, photo latency, video fps, predict RSS.

(a) batched classification of pre-cropped 48x48 faces, batch 256, N threads:
    faces/s for PyTorch and onnxruntime, and their ratio;
(b) end-to-end latency of one 640x480 photo with one face (decode + detect +
    crop + classify): median and p95 ms;
(c) video throughput at 640x480 (frames/s, every frame analysed, tracking on);
(d) peak RSS of ``ferkit predict`` on a generated 1,000-image folder vs a
    100-image folder (streaming: the two should be about equal).

Usage::

    nice -n 19 python benchmarks/bench_inference.py [--model default|PATH] [--threads 2] [--skip-rss]

Without ``--model`` the shipped default model is used; when it is not
installed yet, an untrained model of the same architecture (boulis-baseline)
is built: speed depends on the architecture, not on the weight values.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ASSET = REPO / "src" / "ferkit" / "assets" / "astronaut.png"


def hardware(threads: int) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpu}; {os.cpu_count()} CPUs visible, {threads} threads used; load average {load:.1f} at start"


def model_path(arg: str | None, tmp: Path) -> tuple[str, str]:
    from ferkit.errors import FerkitError
    from ferkit.inference.pretrained import resolve_pretrained

    try:
        return str(resolve_pretrained(arg or "default")), arg or "default"
    except FerkitError:
        if arg:
            raise
    import torch

    from ferkit.labels import FER7
    from ferkit.models import create_model
    from ferkit.models.checkpoint import save_slim

    torch.manual_seed(0)
    m = create_model("boulis-baseline").eval()
    p = tmp / "stand-in.pt"
    save_slim(m, {"model": "boulis-baseline", "labels": list(FER7), "model_kwargs": {}}, p)
    return str(p), "untrained boulis-baseline stand-in (default.pt not installed)"


def photo_640x480() -> np.ndarray:
    """The demo portrait placed on a 640x480 canvas: one face, like a webcam photo."""
    from PIL import Image

    face = Image.open(ASSET).convert("RGB").resize((360, 360))
    canvas = Image.new("RGB", (640, 480), (200, 200, 205))
    canvas.paste(face, (140, 60))
    return np.asarray(canvas)


def bench_classify(path: str, threads: int, batch: int, seconds: float) -> None:
    import torch

    from ferkit.inference.recognizer import Recognizer

    torch.set_num_threads(threads)
    crops = np.random.default_rng(0).integers(0, 256, (batch, 48, 48), dtype=np.uint8)
    rates = {}
    for backend in ("torch", "onnx"):
        rec = Recognizer.from_pretrained(path, backend=backend, threads=threads)
        rec.classify_faces(crops)  # warm-up
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            rec.classify_faces(crops)
            n += batch
        rates[backend] = n / (time.perf_counter() - t0)
        print(
            f"(a) {backend:5s}: {rates[backend]:8.0f} faces/s (batch {batch}, {threads} threads, "
            "preprocessing of the uint8 crops included)"
        )
    print(f"(a) onnxruntime / PyTorch = {rates['onnx'] / rates['torch']:.2f}x")


def bench_latency(path: str, threads: int, n: int, detectors=("default",)) -> None:
    import cv2
    import torch

    from ferkit.inference.recognizer import Recognizer

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    jpeg = cv2.imencode(".jpg", cv2.cvtColor(photo_640x480(), cv2.COLOR_RGB2BGR))[1].tobytes()
    for backend, detector in [(b, d) for d in detectors for b in ("torch", "onnx")]:
        rec = Recognizer.from_pretrained(path, backend=backend, threads=threads, detector=detector)
        assert len(rec.predict(jpeg)) == 1, "benchmark photo should have exactly one face"
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            rec.predict(jpeg)
            times.append(1000 * (time.perf_counter() - t0))
        med, p95 = np.percentile(times, [50, 95])
        print(
            f"(b) {backend:5s}: 640x480 JPEG, 1 face, decode+detect+classify: median {med:.1f} ms, "
            f"p95 {p95:.1f} ms ({n} runs, detector {detector})"
        )


def bench_video(path: str, threads: int, frames: int, tmp: Path) -> None:
    import cv2
    import torch

    from ferkit.inference.recognizer import Recognizer
    from ferkit.inference.video import predict_video

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    base = cv2.cvtColor(photo_640x480(), cv2.COLOR_RGB2BGR)
    vid = tmp / "bench.mp4"
    w = cv2.VideoWriter(str(vid), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (640, 480))
    for i in range(frames):
        # The face drifts a little per frame, as in real footage (tracker + detector both work).
        m = np.float32([[1, 0, 20 * np.sin(i / 10)], [0, 1, 10 * np.cos(i / 10)]])
        w.write(cv2.warpAffine(base, m, (640, 480), borderMode=cv2.BORDER_REPLICATE))
    w.release()
    rec = Recognizer.from_pretrained(path, backend="onnx", threads=threads)
    t0 = time.perf_counter()
    n = faces = 0
    for _, fs in predict_video(rec, vid, every=1):
        n += 1
        faces += len(fs)
    dt = time.perf_counter() - t0
    print(
        f"(c) video 640x480 mp4: {n / dt:.1f} frames/s (every frame analysed, {faces} faces in {n} "
        "frames, onnx backend, video decoding included)"
    )


def bench_rss(path: str, tmp: Path) -> None:
    from PIL import Image

    src = Image.open(ASSET).convert("RGB").resize((320, 320))
    results = {}
    for n in (100, 1000):
        folder = tmp / f"folder{n}"
        folder.mkdir()
        for i in range(n):
            # Distinct files (a pixel differs) so nothing can be deduplicated.
            im = src.copy()
            im.putpixel((0, 0), (i % 256, i // 256, 0))
            im.save(folder / f"img{i:05d}.jpg", quality=90)
        code = (
            "import resource, sys\n"
            "from ferkit.cli import main\n"
            f"rc = main(['predict', {str(folder)!r}, '--model', {path!r}, '--no-progress', "
            f"'-o', {str(tmp / f'out{n}.jsonl')!r}])\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
        )
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
        dt = time.perf_counter() - t0
        rss_mb = int(r.stderr.strip().splitlines()[-1]) / 1024
        results[n] = rss_mb
        summary = [ln for ln in r.stderr.splitlines() if ln.startswith("ferkit predict:")]
        print(
            f"(d) ferkit predict on {n:5d} images (320x320 JPEG): peak RSS {rss_mb:.0f} MB, "
            f"{dt:.1f} s wall; {summary[0] if summary else r.stderr[-200:]}"
        )
    print(
        f"(d) RSS ratio 1000 vs 100 images: {results[1000] / results[100]:.2f}x (flat = streaming)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="'default' or a checkpoint (default: default, else a stand-in)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=5.0, help="(a) time per backend")
    ap.add_argument("--runs", type=int, default=50, help="(b) timed runs")
    ap.add_argument("--frames", type=int, default=120, help="(c) video length")
    ap.add_argument("--detectors", default="default,haar-fast", help="(b) comma-separated detector names")
    ap.add_argument("--skip-rss", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    print("hardware:", hardware(args.threads))
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        path, what = model_path(args.model, tmp)
        print("model:", what)
        bench_classify(path, args.threads, args.batch, args.seconds)
        bench_latency(path, args.threads, args.runs, args.detectors.split(","))
        bench_video(path, args.threads, args.frames, tmp)
        if not args.skip_rss:
            bench_rss(path, tmp)


if __name__ == "__main__":
    main()
