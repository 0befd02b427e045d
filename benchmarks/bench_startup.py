"""Cold-start cost of ``ferkit predict`` on one photo: light install vs full install.

For each install (a virtual environment with ferkit in it), runs its ``ferkit
predict PHOTO`` command as a fresh process several times and reports the median
wall time and the median peak RSS (``ru_maxrss`` of the child, from ``os.wait4``).
Rows:

* light: ``pip install "ferkit[serve]"`` (no PyTorch; the shipped ONNX model);
* full: the development install (PyTorch, Lightning, ...), backend auto (also
  ONNX on the CPU: with this change it no longer imports torch either);
* full, ``--backend torch``: what every predict cost before this change (torch
  imported, the .pt loaded into PyTorch);
* the ``fer`` package (TensorFlow) on the same photo, when it is installed in
  one of the environments; otherwise a note says it was skipped;
* a floor: importing numpy + OpenCV + onnxruntime + Pillow in the light install.

It also prints the light environment's size on disk (allocated blocks, as
``du`` counts) and its largest packages. Goals (issue 18): one-photo command
<= 0.6 s and <= 250 MB peak on 2 cores; light environment <= 300 MB.

Usage::

    python benchmarks/bench_startup.py [--light /work/venv-light] [--full /work/venv]
                                       [--photo PATH] [--runs 5]

Timings on a shared machine are noisy: the first run of each row (cold file
cache) is discarded and the median of the rest is shown.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ASSET = REPO / "src" / "ferkit" / "assets" / "astronaut.png"


def run_once(argv: list[str], env: dict) -> tuple[float, float, float, int, str]:
    """(wall s, CPU s = user + system, peak RSS MB, exit code, stderr tail) of one process."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # wait4 gives this child's own rusage (ru_maxrss in KiB on Linux).
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    out, err = p.stdout.read(), p.stderr.read()
    p.stdout.close()
    p.stderr.close()
    p.returncode = os.waitstatus_to_exitcode(status)
    del out
    cpu = usage.ru_utime + usage.ru_stime
    return wall, cpu, usage.ru_maxrss / 1024, p.returncode, err.decode(errors="replace")[-300:]


def measure(argv: list[str], runs: int, env: dict) -> dict | None:
    results = []
    for i in range(runs + 1):
        wall, cpu, rss, rc, err = run_once(argv, env)
        if rc != 0:
            print(f"  failed (exit {rc}): {' '.join(argv)}\n  {err.strip()}", file=sys.stderr)
            return None
        if i:  # the first run warms the file cache
            results.append((wall, cpu, rss))
    return {
        "wall": statistics.median(r[0] for r in results),
        "wall_min": min(r[0] for r in results),
        "cpu": statistics.median(r[1] for r in results),
        "rss": statistics.median(r[2] for r in results),
    }


def disk_size(root: Path) -> tuple[int, dict[str, int]]:
    """Bytes allocated under root (like ``du``), and per top-level site-packages entry."""
    total, per = 0, {}
    seen = set()
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            size = st.st_blocks * 512
            total += size
            parts = Path(p).relative_to(root).parts
            if "site-packages" in parts:
                i = parts.index("site-packages")
                if len(parts) > i + 1:
                    key = parts[i + 1].split("-")[0].removesuffix(".libs")
                    per[key] = per.get(key, 0) + size
    return total, per


def has_module(python: Path, module: str) -> bool:
    r = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True, check=False)
    return r.returncode == 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--light", type=Path, default=Path(os.environ.get("FERKIT_LIGHT_VENV", "/work/venv-light")))
    ap.add_argument("--full", type=Path, default=Path(sys.prefix))
    ap.add_argument("--photo", type=Path, default=ASSET)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONDONTWRITEBYTECODE"] = "0"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"hardware: {cpu}, {os.cpu_count()} CPUs visible; load average {os.getloadavg()[0]:.1f}")
    print(f"photo: {args.photo} ; median of {args.runs} runs after one warm-up run\n")

    light_py, full_py = args.light / "bin" / "python", args.full / "bin" / "python"
    rows = []
    if light_py.exists():
        rows.append(("light install, ferkit predict", [str(args.light / "bin" / "ferkit"), "predict", str(args.photo)]))
        rows.append(("light install, import numpy+cv2+onnxruntime+PIL (floor)",
                     [str(light_py), "-c", "import numpy, cv2, onnxruntime, PIL.Image"]))
    else:
        print(f"note: no light environment at {args.light} (python3.11 -m venv DIR; DIR/bin/pip install '.[serve]')")
    rows.append(("full install, ferkit predict (auto: ONNX)", [str(args.full / "bin" / "ferkit"), "predict", str(args.photo)]))
    rows.append(("full install, ferkit predict --backend torch (before)",
                 [str(args.full / "bin" / "ferkit"), "predict", str(args.photo), "--backend", "torch"]))
    fer_py = next((py for py in (light_py, full_py) if py.exists() and has_module(py, "fer")), None)
    if fer_py is not None:
        code = ("import cv2; from fer import FER; "
                f"print(FER().detect_emotions(cv2.imread({str(args.photo)!r})))")
        rows.append((f"fer package ({fer_py.parent.parent.name})", [str(fer_py), "-c", code]))
    else:
        print("note: the `fer` package is not installed in either environment: its row is skipped\n")

    results = {}
    # CPU time (user + system) is printed too: on a shared, loaded machine it moves
    # much less than wall time, which includes waiting for a core.
    print(f"{'what':58s} {'wall s':>7s} {'min s':>6s} {'CPU s':>6s} {'peak MB':>8s}")
    for name, argv in rows:
        r = measure(argv, args.runs, env)
        results[name] = r
        if r:
            print(f"{name:58s} {r['wall']:7.2f} {r['wall_min']:6.2f} {r['cpu']:6.2f} {r['rss']:8.0f}")
    light = results.get("light install, ferkit predict")
    before = results.get("full install, ferkit predict --backend torch (before)")
    if light and before:
        print(f"\nlight vs full --backend torch: {before['wall'] / light['wall']:.2f}x less wall time, "
              f"{before['cpu'] / light['cpu']:.2f}x less CPU time, "
              f"{before['rss'] / light['rss']:.2f}x less peak memory")
    if light:
        ok = light["wall"] <= 0.6 and light["rss"] <= 250
        print(f"goal one photo <= 0.6 s and <= 250 MB: {'met' if ok else 'NOT met'}")

    for label, root in (("light", args.light), ("full", args.full)):
        if not root.exists():
            continue
        total, per = disk_size(root)
        print(f"\n{label} environment {root}: {total / 1e6:.0f} MB on disk")
        if label == "light":
            top = sorted(per.items(), key=lambda kv: -kv[1])[:10]
            print("  largest: " + ", ".join(f"{k} {v / 1e6:.0f}" for k, v in top))
            print(f"goal light environment <= 300 MB: {'met' if total <= 300e6 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
