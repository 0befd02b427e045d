"""Carrying a reproduction from one machine to the next through its published page.

A paper's rows take CPU hours, more than one machine may stay up, and a run folder does not
outlive its machine. What does is the page ``--publish DIR`` writes into the repository:
``DIR/PAPER/runs/ROW/`` keeps each finished row's ``summary.json``, ``metrics.csv``,
``config.yaml``, its measurements (``measures.json``) and, for a row whose network a later
row builds on (the DAE of Li's hybrid A, the CAE of Wiranata's fine-tuning, the members of
an ensemble), that network as a slim fp16 ``model.pt`` when it is small
(:data:`KEEP_MODEL_MIB`).

:func:`restore_rows` copies those rows back into ``OUT/PAPER/ROW/`` on a fresh machine, so
``reproduce`` counts them as done and trains only the rest. A finished row is not restored
when a row still to run needs its network and the page has none (too big to keep): it is
trained again.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from ferkit.reproductions.layout import FIGURES_DIR, MEASURES_FILE, MODEL_FILE, RUN_FILES, RUNS_DIR

if TYPE_CHECKING:
    from ferkit.reproductions import Paper, Row

#: A row's network is kept on the page (``model.pt``, fp16) when a later row needs it and
#: its file is at most this many MiB.
KEEP_MODEL_MIB = 4.0
RESTORED_FILES = (*RUN_FILES, MEASURES_FILE)


def _refs(sets: dict) -> list[str]:
    return [v[5:].split("}", 1)[0] for v in sets.values() if isinstance(v, str) and v.startswith("{row:")]


def _state(run_dir: Path) -> str:
    if (run_dir / "summary.json").is_file():
        return "done"
    if (run_dir / "last.ckpt").is_file():
        return "stopped"
    return "new"


def needed_rows(paper: Paper) -> dict[str, list[str]]:
    """Row id -> the later rows that use its network (ensemble members, ``{row:ID}`` references)."""
    out: dict[str, list[str]] = {}
    for r in paper.rows:
        for ref in [*r.ensemble, *_refs(r.sets)]:
            out.setdefault(ref, []).append(r.id)
    return out


def row_model(folder: Path, row_id: str) -> Path:
    """The row's network: its run's ``best.ckpt``, else the kept ``model.pt`` (a restored
    row), else the ``best.ckpt`` path (missing)."""
    run = folder / row_id
    best = run / "best.ckpt"
    if not best.is_file() and (run / MODEL_FILE).is_file():
        return run / MODEL_FILE
    return best


def keep_model(folder: Path, row: Row) -> Path | None:
    """Write ``ROW/model.pt`` (fp16 slim) from the row's ``best.ckpt`` when it is at most
    :data:`KEEP_MODEL_MIB`; returns its path, or None (no checkpoint, or too big)."""
    from ferkit.models.checkpoint import load_checkpoint, save_slim

    run = folder / row.id
    out = run / MODEL_FILE
    if out.is_file():
        return out
    if not (run / "best.ckpt").is_file():
        return None
    model, spec = load_checkpoint(run / "best.ckpt")
    save_slim(model, spec, out, half=True, meta={"reproduction_row": row.id})
    if out.stat().st_size > KEEP_MODEL_MIB * 2**20:
        out.unlink()
        return None
    return out


def save_measures(row: Row, ours: dict, run_dir: Path, split: str) -> None:
    """``measures.json``: each measurement with what defines it (views, distortion, split)."""
    spec = {m.name: {"tta": m.tta, "distortion": m.distortion, "split": m.split or split} for m in row.measures}
    data = {name: {**spec.get(name, {}), **res} for name, res in ours.items()}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / MEASURES_FILE).write_text(json.dumps(data, indent=1))


def stored_measure(run_dir: Path, m, split: str) -> dict | None:
    """A measurement read back from ``measures.json`` when it was taken the same way."""
    try:
        got = json.loads((run_dir / MEASURES_FILE).read_text()).get(m.name)
    except (OSError, ValueError, AttributeError):  # missing, unreadable or not a JSON object
        return None
    if not got or (got.get("tta"), got.get("distortion"), got.get("split")) != (m.tta, m.distortion, m.split or split):
        return None
    return {k: v for k, v in got.items() if k not in ("tta", "distortion", "split")}


def restore_rows(paper: Paper, folder: Path, published: Path) -> list[str]:
    """Copy finished rows from a published page (``published/PAPER/runs/ROW``, with the
    curves from ``published/PAPER/figures``) into ``folder`` (``OUT/PAPER``) where ``folder``
    has nothing of them. Returns the ids restored (see the module docstring for the rule)."""

    src_root = Path(published) / paper.name
    needs = needed_rows(paper)
    restored: list[str] = []
    for r in paper.rows:
        src, dst = src_root / RUNS_DIR / r.id, folder / r.id
        if not (src / MEASURES_FILE).is_file():
            continue
        if r.ensemble or r.model or r.needs:  # nothing trained: the measurements only
            if not (dst / MEASURES_FILE).is_file():
                dst.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src / MEASURES_FILE, dst / MEASURES_FILE)
            continue
        if not (src / "summary.json").is_file() or (dst.exists() and _state(dst) != "new"):
            continue
        users = [u for u in needs.get(r.id, []) if not (src_root / RUNS_DIR / u / MEASURES_FILE).is_file()]
        if users and not (src / MODEL_FILE).is_file():
            print(f"== {r.id}: finished on the page, but {', '.join(users)} needs its network, which was "
                  f"too big to keep: training it again", flush=True)
            continue
        if dst.exists():
            shutil.rmtree(dst)  # ours, and it never got as far as a checkpoint
        dst.mkdir(parents=True)
        for name in RESTORED_FILES:
            if (src / name).is_file():
                shutil.copy2(src / name, dst / name)
        curves = src_root / FIGURES_DIR / f"{r.id}-curves.png"
        if curves.is_file():
            shutil.copy2(curves, dst / "curves.png")
        restored.append(r.id)
    return restored
