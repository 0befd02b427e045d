"""Training learns: the loss falls on a learnable toy set, the run beats chance, a resumed run
continues the same curve. (These replace checks like ``0 <= accuracy <= 1`` that cannot fail.)

The toy set is conftest's ``face_like``: a bright band whose row depends on the class, which a
small CNN separates in a few epochs. Everything runs in 32-bit on the CPU with a fixed seed.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

# Trains: the train extra (PyTorch, Lightning).
pytest.importorskip("lightning", reason="needs the train extra (PyTorch, Lightning)")
import yaml
from conftest import write_class_tree

from ferkit.cli import main

CHANCE = 1 / 7
TOY = ["--no-progress", "--device", "cpu", "--batch-size", "16", "--lr", "0.003",
       "--set", "model_kwargs.width=8", "--set", "model_kwargs.hidden=16", "--set", "input_size=32",
       "--set", "augment=none", "--set", "scheduler=none", "--set", "early_stopping_patience=null",
       "--set", "precision=32-true", "--set", "val_fraction=0.25"]


def _curve(run: Path) -> dict[int, dict[str, float]]:
    """Per-epoch train_loss / val_loss / val_acc from metrics.csv (Lightning writes them on separate rows)."""
    out: dict[int, dict[str, float]] = {}
    with open(run / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            if not row.get("epoch"):
                continue  # the learning-rate rows
            e = int(float(row["epoch"]))
            for k in ("train_loss", "val_loss", "val_acc"):
                if row.get(k):
                    out.setdefault(e, {})[k] = float(row[k])
    return out


def _train(data: Path, out: Path, epochs: int) -> Path:
    assert main(["train", "boulis-baseline", "--data", str(data), "--out", str(out), "--epochs", str(epochs),
                 *TOY]) == 0
    (run,) = out.iterdir()
    return run


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_class_tree(tmp_path_factory.mktemp("toy") / "data", n=12, splits=())


@pytest.fixture(scope="module")
def straight(toy, tmp_path_factory):
    return _train(toy, tmp_path_factory.mktemp("straight"), epochs=4)


def test_loss_falls_and_the_run_beats_chance(straight):
    curve = _curve(straight)
    assert sorted(curve) == [0, 1, 2, 3]
    train = [curve[e]["train_loss"] for e in range(4)]
    assert train[-1] < 0.7 * train[0], train
    assert curve[3]["val_loss"] < curve[0]["val_loss"], curve
    summary = json.loads((straight / "summary.json").read_text())
    assert summary["val"]["n"] == 21  # 3 of each class's 12 faces (val_fraction 0.25)
    assert summary["val"]["accuracy"] >= 3 * CHANCE, summary["val"]


def test_resumed_run_continues_the_same_curve(toy, straight, tmp_path):
    """Kill after 2 epochs (simulated), resume to 4: the same numbers as the uninterrupted run,
    epochs 3 and 4 included (weights, optimizer, scheduler and the random generators that shuffle,
    augment and drop out all come back from last.ckpt)."""
    run = _train(toy, tmp_path, epochs=2)
    assert main(["train", "--resume", str(run), "--epochs", "4", "--no-progress", "--device", "cpu"]) == 0
    a, b = _curve(straight), _curve(run)
    assert sorted(b) == [0, 1, 2, 3]
    for e in range(4):
        for k in ("train_loss", "val_loss"):
            assert b[e][k] == pytest.approx(a[e][k], rel=1e-5), (e, k, a, b)
    saved = yaml.safe_load((run / "config.yaml").read_text())["recipe"]
    assert saved["epochs"] == 4 and saved["lr"] == 0.003
