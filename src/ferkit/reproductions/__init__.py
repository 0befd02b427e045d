"""``ferkit reproduce PAPER``: run a paper's experiments and put its table beside ours.

Each paper is data (``papers/<name>.yaml``): the corpus it needs, and its rows. A row is one
``ferkit train`` run of a shipped recipe (with overrides, which may name another row's
``best.ckpt`` as ``{row:ID}``), a soft-voting ensemble of other rows, or an experiment that
cannot run here (``needs``: ImageNet weights, say), kept in the table with its reason. Each
row lists the measurements the paper reports (plain, test-time augmentation, distorted
faces) with the paper's figure.

:func:`reproduce` trains the rows in order, each in ``OUT/PAPER/ROW/`` (an ordinary run
folder), evaluates them on the paper's split the paper's way, and writes
``OUT/PAPER/README.md`` (the table: paper, ours, gap, epochs, training time, CPU) and
``table.json``. Run it again and it resumes: finished rows are not trained again, a row that
was stopped (``--stop-after``, SIGTERM, Ctrl-C) continues from its ``last.ckpt`` with its
schedule intact, and finished evaluations are read back. ``budget_min`` splits a time budget
over the rows still to train, in proportion to each row's ``cost``, and each run fits itself
into its share (``ferkit train --max-time``).

``scale="toy"`` runs every row for 2 epochs of 2 batches in fp32 (no precision probe; plus each
row's ``toy`` overrides):
a check that the whole pipeline works, on fixtures or a small subset, in seconds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ferkit.errors import FerkitError
from ferkit.reproductions.report import markdown, publish, write_report  # noqa: F401 - markdown, publish: re-exported
from ferkit.reproductions.restore import (
    _refs,
    _state,
    keep_model,
    needed_rows,
    restore_rows,
    row_model,
    save_measures,
    stored_measure,
)

PAPERS_DIR = Path(__file__).resolve().parent / "papers"
TOY = {"epochs": 2, "early_stopping_patience": None, "warmup_epochs": 0.0, "precision": "32-true"}
TOY_BATCHES = 2
MIN_ROW_MIN = 0.5  # with less than this left of --stop-after, a row is not started


@dataclass
class Measure:
    """One figure of a row: accuracy on the paper's split, optionally with test-time
    augmentation (``tta``: K copies, ``mirror``/``ten-crop``) or distorted faces, or on
    another split (``split: train``, the run's own training faces in eval mode: a row that
    scores there about what it scores on the test split under-fits, one far above it
    over-fits, which is how a gap to the paper is explained by measurement)."""

    name: str
    tta: int | str | None = None
    distortion: str | None = None
    paper: float | None = None  # the paper's figure, percent
    split: str | None = None  # default: the paper's split


@dataclass
class Row:
    """One experiment of a paper (see the module docstring)."""

    id: str
    label: str
    recipe: str | None = None
    sets: dict = field(default_factory=dict)
    cost: float = 1.0
    measures: list[Measure] = field(default_factory=list)
    ensemble: list[str] = field(default_factory=list)
    model: str | None = None  # evaluate this model as it is (e.g. the shipped "default"), no training
    needs: str | None = None
    toy: dict = field(default_factory=dict)
    note: str = ""


@dataclass
class Paper:
    name: str
    title: str
    corpus: list[str]
    needs: str
    split: str = "test"
    note: str = ""
    rows: list[Row] = field(default_factory=list)


def list_papers() -> list[str]:
    """Names of the papers ``ferkit reproduce`` knows."""
    return sorted(p.stem for p in PAPERS_DIR.glob("*.yaml"))


def load_paper(name: str) -> Paper:
    """The paper ``name`` (``papers/<name>.yaml``), checked.

    Raises:
        FerkitError: an unknown paper, or a malformed file (naming the row and field).
    """
    path = PAPERS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise FerkitError(f"unknown paper {name!r}; choose from {', '.join(list_papers())}")
    d = yaml.safe_load(path.read_text())
    try:
        rows = []
        for r in d.pop("rows"):
            measures = [Measure(**m) for m in r.pop("measures", [])]
            rows.append(Row(**r, measures=measures))
        corpus = d.pop("corpus")
        paper = Paper(**d, corpus=[corpus] if isinstance(corpus, str) else list(corpus), rows=rows)
    except (TypeError, KeyError) as e:
        raise FerkitError(f"{path}: {e}") from None
    ids = [r.id for r in paper.rows]
    for r in paper.rows:
        for ref in [*r.ensemble, *_refs(r.sets)]:
            if ref not in ids[: ids.index(r.id)]:
                raise FerkitError(f"{path}: row {r.id} refers to {ref!r}, which is not an earlier row")
        if not (r.recipe or r.ensemble or r.needs or r.model):
            raise FerkitError(f"{path}: row {r.id} has no recipe, ensemble, model or needs")
    return paper


def check_corpus(paper: Paper, data) -> str:
    """The dataset layout of ``data`` when it is one the paper uses.

    Raises:
        FerkitError: a missing path or another layout, in one line naming what to download
            and the layout expected.
    """
    from ferkit.data.sources import detect_source

    p = Path(os.fspath(data)).expanduser()
    if not p.exists():
        raise FerkitError(f"{paper.name} needs {paper.needs}; --data {data} does not exist")
    try:
        found = detect_source(p).name
    except FerkitError as e:
        raise FerkitError(f"{paper.name} needs {paper.needs}; {data}: {e}") from None
    if found not in paper.corpus:
        raise FerkitError(f"{paper.name} needs {paper.needs}; {data} looks like {found!r}, not "
                          f"{' or '.join(repr(c) for c in paper.corpus)}")
    return found


def plan(paper: Paper, folder: Path, budget_min: float | None) -> list[dict]:
    """Per row: its state (done, stopped, new, ensemble, needs) and, for rows to train, its
    share of ``budget_min`` (proportional to ``cost``; rows already started keep theirs)."""
    rows = []
    for r in paper.rows:
        kind = "needs" if r.needs else "ensemble" if r.ensemble else "model" if r.model else "train"
        state = _state(folder / r.id) if kind == "train" else kind
        rows.append({"row": r.id, "recipe": r.recipe, "kind": kind, "state": state, "cost": r.cost,
                     "budget_min": None})
    new = [x for x in rows if x["state"] == "new"]
    if budget_min and new:
        total = sum(x["cost"] for x in new)
        for x in new:
            x["budget_min"] = round(budget_min * x["cost"] / total, 2)
    return rows


def format_plan(paper: Paper, rows: list[dict], budget_min: float | None) -> str:
    lines = [f"ferkit reproduce {paper.name}: {paper.title}"]
    if budget_min:
        lines.append(f"time budget {budget_min:g} min over the {sum(r['state'] == 'new' for r in rows)} row(s) "
                     "not started (each run fits its epochs into its share)")
    for r in rows:
        what = {"done": "done (kept)", "stopped": "stopped: resumes from its last.ckpt", "ensemble": "ensemble",
                "needs": "cannot run here", "model": "evaluated as shipped"}.get(r["state"], "to train")
        budget = f", {r['budget_min']:g} min" if r["budget_min"] else ""
        recipe = f" ({r['recipe']})" if r["recipe"] else ""
        lines.append(f"  {r['row']}{recipe}: {what}{budget}")
    return "\n".join(lines)


def _overrides(row: Row, folder: Path, scale: str, budget_min: float | None) -> dict:
    sets = {}
    for k, v in row.sets.items():
        if isinstance(v, str) and v.startswith("{row:"):
            ref, rest = v[5:].split("}", 1)
            # a row restored from a published page has its network as model.pt
            v = str(row_model(folder, ref)) if rest == "/best.ckpt" else str(folder / ref) + rest
        sets[k] = v
    if scale == "toy":
        sets = {**sets, **TOY, **row.toy}
    if budget_min:
        sets["max_time"] = budget_min
    return sets


def train_row(row: Row, data, folder: Path, *, scale: str, budget_min: float | None, stop_after: float | None,
              device: str, progress: bool) -> Path:
    """Train (or resume) one row into ``folder/ROW``; returns the run folder.

    Raises:
        RunStopped: the run was stopped for now (re-running ``reproduce`` resumes it).
    """
    from ferkit.training.train import train

    run_dir = folder / row.id
    limit = TOY_BATCHES if scale == "toy" else None
    if _state(run_dir) == "stopped":
        print(f"== {row.id}: resuming {run_dir}", flush=True)
        train(None, data, resume=str(run_dir), device=device, stop_after=stop_after, progress=progress,
              limit_train_batches=limit, limit_val_batches=limit)
        return run_dir
    if run_dir.exists():
        shutil.rmtree(run_dir)  # ours, and it never got as far as a checkpoint
    print(f"== {row.id}: ferkit train {row.recipe}", flush=True)
    train(row.recipe, data, str(folder), overrides=_overrides(row, folder, scale, budget_min), device=device,
          stop_after=stop_after, progress=progress, run_name=row.id, limit_train_batches=limit,
          limit_val_batches=limit)
    return run_dir


def measure_row(row: Row, paper: Paper, data, folder: Path, *, device: str, progress: bool) -> dict:
    """Each of the row's measurements (accuracy in percent, macro-F1, n), cached in
    ``ROW/reproduce.json`` beside the run so a re-run does not evaluate again."""
    from ferkit.evaluation.evaluate import evaluate_checkpoints
    from ferkit.models.pretrained import resolve_pretrained

    if row.model:
        members = [resolve_pretrained(row.model)]
    else:
        members = [row_model(folder, m) for m in row.ensemble or [row.id]]
    cache_file = folder / row.id / "reproduce.json"
    cache = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    have = all(p.is_file() for p in members)  # a restored row may have its measurements only
    stamp = [os.path.getmtime(m) for m in members] if have else None
    out = {}
    for m in row.measures:
        split = m.split or paper.split
        if not have:
            if (got := stored_measure(folder / row.id, m, paper.split)) is not None:
                out[m.name] = got
            continue
        key = json.dumps([m.name, m.tta, m.distortion, split, stamp])
        if key not in cache:
            rep = evaluate_checkpoints([str(p) for p in members], data, split, tta=m.tta,
                                       distortion=m.distortion, device=device, progress=progress)
            cache[key] = {"accuracy": round(100 * rep["accuracy"], 2), "macro_f1": round(rep["macro_f1"], 4),
                          "n": rep["n"], "per_class": {k: v["accuracy"] for k, v in rep["per_class"].items()}}
        out[m.name] = cache[key]
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    cache_file.write_text(json.dumps(cache, indent=1))
    save_measures(row, out, folder / row.id, paper.split)
    return out


def _run_facts(run_dir: Path) -> dict:
    s = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else {}
    return {k: s.get(k) for k in ("epochs_trained", "planned_epochs", "wall_time_s", "training_time_s",
                                  "precision", "cpu", "cpu_flags", "load_average_start", "load_average_end",
                                  "train_images_per_s")}


def reproduce(name: str, data, out="reproductions", *, budget_min: float | None = None,
              stop_after: float | None = None, scale: str = "full", device: str = "auto",
              progress: bool = True, report_only: bool = False, restore=None) -> dict:
    """Run paper ``name``'s rows (see the module docstring); returns the table as a dict.

    ``report_only``: train nothing; measure the finished rows and write the table.
    ``restore``: a folder a page was published into (``--publish``): the rows finished
    there and missing from ``out`` are copied back and not trained again
    (:mod:`ferkit.reproductions.restore`).

    Raises:
        FerkitError: unknown paper, missing or wrong corpus (one line), bad values.
        RunStopped: a row was stopped for now; the table so far is written first.
    """
    from ferkit.training.stopping import RunStopped

    if scale not in ("full", "toy"):
        raise FerkitError(f"scale must be 'full' or 'toy', not {scale!r}")
    paper = load_paper(name)
    layout = check_corpus(paper, data)
    folder = Path(out) / paper.name
    folder.mkdir(parents=True, exist_ok=True)
    if restore is not None and (got := restore_rows(paper, folder, Path(restore))):
        print(f"restored from {restore}: {', '.join(got)} (finished on an earlier machine)", flush=True)
    rows = plan(paper, folder, budget_min)
    print(format_plan(paper, rows, budget_min), flush=True)
    started = time.strftime("%Y-%m-%d %H:%M")
    deadline = None if stop_after is None else time.monotonic() + 60 * stop_after
    results, needed = [], needed_rows(paper)
    try:
        for row, p in zip(paper.rows, rows):
            res = {"row": row.id, "label": row.label, "recipe": row.recipe, "note": row.note,
                   "measures": [dataclasses.asdict(m) for m in row.measures]}
            results.append(res)
            if row.needs:
                res["status"] = f"needs {row.needs}"
                continue
            trained = not (row.ensemble or row.model)
            waits = [m for m in row.ensemble or [] if _state(folder / m) != "done"]
            if report_only and ((trained and p["state"] != "done") or waits):
                res["status"] = (f"waits for {', '.join(waits)}" if waits
                                 else "stopped" if p["state"] == "stopped" else "not started")
                continue
            if trained and p["state"] != "done":
                left = None if deadline is None else (deadline - time.monotonic()) / 60
                if left is not None and left < MIN_ROW_MIN:
                    raise RunStopped("stop-after", 0, 0, 0, folder / row.id / "last.ckpt",
                                     message=f"--stop-after {stop_after:g} min reached before row {row.id!r}")
                train_row(row, data, folder, scale=scale, budget_min=p["budget_min"], stop_after=left,
                          device=device, progress=progress)
            if trained and row.id in needed:
                keep_model(folder, row)  # small enough: the page keeps it for later machines
            res["status"] = "done"
            res["run"] = _run_facts(folder / row.id) if trained else None
            res["ours"] = measure_row(row, paper, data, folder, device=device, progress=progress)
    except RunStopped:
        results[-1]["status"] = "stopped" if (folder / results[-1]["row"]).exists() else "not started"
        write_report(paper, results, folder, data=data, layout=layout, scale=scale, started=started)
        raise
    return write_report(paper, results, folder, data=data, layout=layout, scale=scale, started=started)
