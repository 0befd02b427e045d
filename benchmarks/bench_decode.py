"""Decode speed of the dataset cache: one thread vs the thread pool ``decode_index`` uses.

    python benchmarks/bench_decode.py [--data ../shared/datasets/fer2013] [--split publictest]

Prints images/s of both and their ratio, measured in the same run, without reading or
writing the decode cache.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from unittest import mock

from ferkit.data import cache
from ferkit.data.dataset import load_index


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/datasets/fer2013"))
    p.add_argument("--split", default="publictest")
    a = p.parse_args(argv)
    idx = load_index(a.data, a.split)
    rates = {}
    for label, cpus in (("1 thread", 1), (f"{min(8, os.cpu_count() or 1)} threads", os.cpu_count())):
        with mock.patch.object(cache.os, "cpu_count", return_value=cpus):
            t = time.perf_counter()
            _, kept, _ = cache.decode_index(idx, 48, 1, use_cache=False, progress=False)
            rates[label] = len(kept) / (time.perf_counter() - t)
        print(f"{label:>10}: {rates[label]:8.0f} images/s ({len(kept)} faces of {a.data} [{a.split}])")
    one, many = rates.values()
    print(f"ratio: {many / one:.2f}x on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
