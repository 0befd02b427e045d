"""Load benchmark of ``ferkit serve`` on 127.0.0.1 (loopback only, bounded).

Starts ``python -m ferkit serve`` in a subprocess with a model (by default an
untrained ``boulis-baseline`` saved as a slim file in a temp folder: its speed
equals a trained one's), then sends ``--requests`` POST /v1/predict requests at
each concurrency level with httpx's async client and prints requests/s,
p50/p95/p99 latency, the error count and the server's resident memory before
and after each level, and the ratio of throughput at the highest concurrency
to throughput at 1 (the gain from micro-batching).

    python benchmarks/bench_serve.py                       # 2,000 requests at 1, 8, 32 clients
    nice -n 19 python benchmarks/bench_serve.py --requests 300 --detector none

Nothing leaves the machine: the server binds 127.0.0.1 and the client only
talks to it.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def rss_mb(pid: int) -> float:
    """Resident memory of a process, MB (psutil when present, else /proc)."""
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / 2**20
    except ImportError:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_model(folder: Path, name: str) -> Path:
    from ferkit.labels import FER7
    from ferkit.models.checkpoint import save_slim
    from ferkit.models.registry import create_model

    model = create_model(name, num_classes=len(FER7))
    path = folder / f"{name}.pt"
    save_slim(model, {"model": name, "labels": list(FER7), "model_kwargs": {}}, path)
    return path


def make_image(path: str | None) -> bytes:
    if path:
        return Path(path).read_bytes()
    asset = REPO / "src" / "ferkit" / "assets" / "astronaut.png"
    if asset.is_file():
        im = Image.open(asset).convert("RGB")
    else:
        # A 160x160 gray 'face': smooth oval with darker eyes and mouth.
        yy, xx = np.mgrid[:160, :160]
        a = np.full((160, 160), 200, np.float32)
        a[(yy - 80) ** 2 / 70**2 + (xx - 80) ** 2 / 52**2 < 1] = 170
        for cx in (60, 100):
            a[(yy - 65) ** 2 + (xx - cx) ** 2 < 49] = 40
        a[(yy - 112) ** 2 / 6**2 + (xx - 80) ** 2 / 22**2 < 1] = 60
        im = Image.fromarray(a.astype(np.uint8))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def start_server(model: Path, port: int, args, extra: list[str] = ()) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "ferkit", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--model", str(model), "--detector", args.detector, "--log-level", "warning",
           "--batch-window-ms", str(args.batch_window_ms), "--max-batch", str(args.max_batch),
           *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + args.start_timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read().strip()[-500:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit("server did not start in time")


async def run_level(url: str, data: bytes, n: int, clients: int, progress) -> dict:
    """``n`` requests from ``clients`` concurrent clients; each client sends one at a time."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(n))

    async def client(c: httpx.AsyncClient):
        nonlocal errors
        for _ in counter:
            t0 = time.perf_counter()
            try:
                r = await c.post(url, content=data, headers={"Content-Type": "image/jpeg"})
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - t0)
            errors += not ok
            progress.update(1)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(c) for _ in range(clients)))
        wall = time.perf_counter() - t0
    q = np.percentile(np.asarray(latencies) * 1000, [50, 95, 99])
    return {"clients": clients, "requests": n, "rps": n / wall, "p50": q[0], "p95": q[1], "p99": q[2],
            "mean": statistics.fmean(latencies) * 1000, "errors": errors}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=2000, help="requests per concurrency level (default: 2000)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32], help="client counts (default: 1 8 32)")
    p.add_argument("--model", help="checkpoint to serve (default: untrained slim --arch in a temp folder)")
    p.add_argument("--arch", default="boulis-baseline", help="registered model for the temp slim file")
    p.add_argument("--image", help="image file to send (default: astronaut asset or a drawn face, as JPEG)")
    p.add_argument("--detector", default="default", help="server face detector (default: the Recognizer's)")
    p.add_argument("--batch-window-ms", type=float, default=5)
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--warmup", type=int, default=20, help="requests before measuring (default: 20)")
    p.add_argument("--start-timeout", type=float, default=180)
    args = p.parse_args(argv)
    from tqdm import tqdm

    data = make_image(args.image)
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else make_model(Path(tmp), args.arch)
        port = free_port()
        proc = start_server(model, port, args)
        url = f"http://127.0.0.1:{port}/v1/predict"
        try:
            first = httpx.post(url, content=data, headers={"Content-Type": "image/jpeg"}, timeout=60).json()
            print(f"model {first['model']['name']} {first['model']['version']}, image "
                  f"{first['image']['width']}x{first['image']['height']} ({len(data)} bytes), "
                  f"{len(first['faces'])} face(s) per image, detector {args.detector}, "
                  f"{os.cpu_count()} CPUs", flush=True)
            with tqdm(total=args.warmup, desc="warm-up", leave=False) as bar:
                asyncio.run(run_level(url, data, args.warmup, 4, bar))
            rows = []
            for clients in args.concurrency:
                before = rss_mb(proc.pid)
                with tqdm(total=args.requests, desc=f"{clients} clients", leave=False) as bar:
                    row = asyncio.run(run_level(url, data, args.requests, clients, bar))
                row["rss_before"], row["rss_after"] = before, rss_mb(proc.pid)
                rows.append(row)
            health = httpx.get(f"http://127.0.0.1:{port}/healthz").json()
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"{'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>6} "
          f"{'RSS MB before->after':>21}")
    for r in rows:
        print(f"{r['clients']:>7} {r['rps']:>8.1f} {r['p50']:>8.1f} {r['p95']:>8.1f} {r['p99']:>8.1f} "
              f"{r['errors']:>6} {r['rss_before']:>10.0f} -> {r['rss_after']:<8.0f}")
    print(f"mean model batch {health['mean_batch']:.1f} images, largest {health['largest_batch']}")
    if len(rows) > 1:
        print(f"throughput ratio {rows[-1]['clients']} clients / {rows[0]['clients']} client: "
              f"{rows[-1]['rps'] / rows[0]['rps']:.2f}x")
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
