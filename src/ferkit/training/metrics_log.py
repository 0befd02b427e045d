"""A run's ``metrics.csv`` across attempts: parked before a resume, merged back after.

Lightning's CSVLogger deletes an existing ``metrics.csv`` when it opens a run directory, so on
``--resume`` the earlier attempts' rows are parked in ``metrics.resume.csv`` (kill-safe: a
second resume folds the interrupted attempt's rows in too) and merged back after fit, also
when fit failed, so no parked file is left behind.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path


def _read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write_rows(path: Path, rows: list[dict]) -> None:
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def park_metrics(run_dir: Path) -> None:
    """Move the rows logged so far into ``metrics.resume.csv`` (added to any parked before)."""
    parked = run_dir / "metrics.resume.csv"
    rows = _read_rows(parked) + _read_rows(run_dir / "metrics.csv")
    if rows:
        _write_rows(parked, rows)


def unpark_metrics(run_dir: Path) -> None:
    """Put the parked rows back in front of this attempt's. Rows an interrupted attempt logged
    past the checkpoint this attempt resumed from are dropped: the steps are trained again,
    and keeping both gave every redone epoch two rows."""
    parked = run_dir / "metrics.resume.csv"
    if parked.is_file():
        new = _read_rows(run_dir / "metrics.csv")
        first = min((_step(r) for r in new), default=None)
        old = [r for r in _read_rows(parked) if first is None or _step(r) < first]
        _write_rows(run_dir / "metrics.csv", old + new)
        parked.unlink()


def _step(row: dict) -> int:
    try:
        return int(float(row.get("step") or 0))
    except ValueError:
        return 0
