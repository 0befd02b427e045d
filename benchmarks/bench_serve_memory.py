"""Server memory under concurrent uploads of large, well-compressed images.

Starts ``python -m ferkit serve`` on 127.0.0.1 (same model and start-up as
``bench_serve.py``), then sends ``--clients`` concurrent POST /v1/predict
uploads of a ``--mpix``-megapixel PNG (one flat colour, so under 100 KB on
the wire but ``mpix`` million pixels once decoded; palette mode by default,
whose conversion to RGB costs the most memory), ``--rounds`` times. The server's
resident memory (RSS, MB) is sampled every 10 ms: printed are the RSS before
the first round, the peak during each round, the RSS 3 s after each round, and
the status codes returned.

    python benchmarks/bench_serve_memory.py                       # 4 x 49 MP, 3 rounds
    python benchmarks/bench_serve_memory.py --src /tmp/old/src    # the same against other code

``--src`` puts another checkout's ``src`` first on the server's PYTHONPATH, so
two versions of the service are compared with one command each on the same machine.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import free_port, make_model, rss_mb, start_server


def big_png(mpix: float, mode: str) -> tuple[bytes, int, int]:
    side = int((mpix * 1e6) ** 0.5)
    buf = io.BytesIO()
    im = Image.new("L", (side, side), 128)
    (im if mode == "L" else im.convert(mode)).save(buf, "PNG", optimize=True)
    return buf.getvalue(), side, side


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--mpix", type=float, default=49.0, help="megapixels per image (default 49)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--mode", default="P", choices=["P", "L", "RGB"],
                   help="PNG colour mode: P (palette, default: the costliest to decode), L, RGB")
    p.add_argument("--model", help="checkpoint to serve (default: untrained slim boulis-baseline)")
    p.add_argument("--src", help="a ferkit src folder to run the server from (default: this checkout)")
    p.add_argument("--min-face", type=int, help="the server's --min-face (default: its own)")
    p.add_argument("--start-timeout", type=float, default=180)
    args = p.parse_args(argv)
    data, w, h = big_png(args.mpix, args.mode)
    srv = argparse.Namespace(detector="default", batch_window_ms=5, max_batch=64,
                             start_timeout=args.start_timeout)
    env_before = os.environ.get("PYTHONPATH")
    if args.src:
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [args.src, env_before]))
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else make_model(Path(tmp), "boulis-baseline")
        port = free_port()
        extra = ["--min-face", str(args.min_face)] if args.min_face is not None else []
        proc = start_server(model, port, srv, extra)
        url = f"http://127.0.0.1:{port}/v1/predict"
        try:
            small = io.BytesIO()
            Image.new("RGB", (320, 240), 90).save(small, "PNG")
            httpx.post(url, content=small.getvalue(), headers={"Content-Type": "image/png"}, timeout=60)
            time.sleep(1)
            base = rss_mb(proc.pid)
            print(f"{args.clients} concurrent uploads of a {w}x{h} PNG ({w * h / 1e6:.1f} MP, "
                  f"{len(data) / 1024:.0f} KB, mode {args.mode}), {os.cpu_count()} CPUs, server code "
                  f"{args.src or 'this checkout'}"
                  + (f", --min-face {args.min_face}" if args.min_face is not None else ""))
            print(f"RSS before: {base:.0f} MB")
            for r in range(1, args.rounds + 1):
                peak, stop = [base], threading.Event()

                def sample(peak=peak, stop=stop):
                    while not stop.is_set():
                        peak[0] = max(peak[0], rss_mb(proc.pid))
                        time.sleep(0.01)

                t = threading.Thread(target=sample, daemon=True)
                t.start()

                def send(_):
                    try:
                        return httpx.post(url, content=data, headers={"Content-Type": "image/png"},
                                          timeout=600).status_code
                    except httpx.HTTPError as e:
                        return type(e).__name__

                t0 = time.perf_counter()
                with ThreadPoolExecutor(args.clients) as ex:
                    codes = Counter(ex.map(send, range(args.clients)))
                wall = time.perf_counter() - t0
                time.sleep(3)
                stop.set()
                t.join()
                print(f"round {r}: peak {peak[0]:.0f} MB (+{peak[0] - base:.0f}), 3 s after "
                      f"{rss_mb(proc.pid):.0f} MB, {wall:.1f} s, status {dict(codes)}", flush=True)
        finally:
            proc.terminate()
            proc.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
