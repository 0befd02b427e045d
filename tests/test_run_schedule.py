"""Run scheduling (warm-up + cosine, validation/checkpoint cadence, time budget) and run data
(device-resident batches, one data path for training and evaluation)."""

from __future__ import annotations

import csv
import itertools
import json
import math

import pytest
import torch
from conftest import write_class_tree

from ferkit.cli import main
from ferkit.training.datamodule import DeviceBatches
from ferkit.training.schedule import warmup_cosine

FAST = ["--no-progress", "--device", "cpu", "--batch-size", "16"]


def _rows(run):
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _epochs_with(rows, key):
    return sorted({int(r["epoch"]) for r in rows if r.get(key) not in (None, "")})


def test_warmup_cosine_factor():
    total = [110]
    f = warmup_cosine(lambda: total[0], warmup_steps=10, floor=0.1)
    assert [round(f(s), 3) for s in (0, 4, 9)] == [0.1, 0.5, 1.0]  # linear warm-up to 1
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way down the cosine
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)  # ends on the floor
    total[0] = 60  # the run was shortened: the same step is now further along
    assert f(35) == pytest.approx(0.1 + 0.9 * 0.5)


def test_device_batches_cover_every_face_once_per_epoch():
    x = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1)
    y = torch.arange(10)
    dl = DeviceBatches(x, y, batch_size=4, shuffle=True)
    assert len(dl) == 3
    for _ in range(2):
        seen = torch.cat([yb for _, yb in dl])
        assert sorted(seen.tolist()) == list(range(10))
        assert all(torch.equal(xb.view(-1).long(), yb) for xb, yb in dl)  # images stay with labels
    dl = DeviceBatches(x, y, batch_size=4, shuffle=False, drop_last=True)
    assert len(dl) == 2 and [b[1].tolist() for b in dl] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_validation_and_last_checkpoint_every_n_epochs_and_after_the_last(tmp_path):
    data = write_class_tree(tmp_path / "data", n=4)
    assert main(["train", "boulis-baseline", "--data", str(data), "--out", str(tmp_path / "runs"), *FAST,
                 "--epochs", "5", "--set", "val_every=2", "--set", "early_stopping_patience=null"]) == 0
    run = next((tmp_path / "runs").iterdir())
    rows = _rows(run)
    assert _epochs_with(rows, "val_loss") == [1, 3, 4]  # every 2nd epoch, and the final one
    assert _epochs_with(rows, "train_loss") == [0, 1, 2, 3, 4]
    last = torch.load(run / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["epoch"] == 4
    summary = json.loads((run / "summary.json").read_text())
    assert summary["data_on_device"] == "cpu"  # one process: batches are gathers, no DataLoader


def test_time_budget_shortens_the_run_and_finishes_the_cosine(tmp_path):
    data = write_class_tree(tmp_path / "data", n=6)
    budget_min = 0.2  # 12 s: far fewer than the 1,000 epochs asked for (7 s planned only 2 epochs
    # when the parallel test suite slowed the first epoch past half the budget)
    assert main(["train", "boulis-baseline", "--data", str(data), "--out", str(tmp_path / "runs"), *FAST,
                 "--epochs", "1000", "--max-time", str(budget_min), "--set", "scheduler=cosine",
                 "--set", "model_kwargs={hidden: 16}", "--set", "ckpt_every=1000",
                 "--lr", "0.01", "--set", "min_lr=0.0001", "--set", "warmup_epochs=1",
                 "--set", "val_every=5", "--set", "early_stopping_patience=null"]) == 0
    run = next((tmp_path / "runs").iterdir())
    summary = json.loads((run / "summary.json").read_text())
    planned = summary["planned_epochs"]
    assert planned is not None and 3 <= planned < 1000
    assert summary["epochs_trained"] == planned
    rows = _rows(run)
    assert max(_epochs_with(rows, "val_loss")) == planned - 1  # the final epoch was validated
    last = torch.load(run / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["epoch"] == planned - 1
    # The cosine, sized to the shortened run, ends on its floor after the last step.
    assert last["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.0001, rel=0.05)
    # Training itself stays inside the budget (plus the not-timed first epoch's slack).
    assert summary["wall_time_s"] < budget_min * 60 * 1.15 + 30
    assert math.isfinite(summary["epoch_seconds"])


def test_evaluate_sees_exactly_the_faces_the_run_validated_on(tmp_path):
    """A run with its own val fraction and seed: `evaluate RUN/best.ckpt --split val` must
    reproduce the end-of-run validation report (same faces, same model)."""
    data = write_class_tree(tmp_path / "data", n=10)
    assert main(["train", "boulis-baseline", "--data", str(data), "--out", str(tmp_path / "runs"), *FAST,
                 "--epochs", "2", "--seed", "5", "--set", "val_fraction=0.3"]) == 0
    run = next((tmp_path / "runs").iterdir())
    val = json.loads((run / "summary.json").read_text())["val"]
    out = tmp_path / "eval"
    assert main(["evaluate", str(run / "best.ckpt"), "--data", str(data), "--split", "val", "--no-progress",
                 "--out", str(out)]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["n"] == val["n"] == 21  # 30% of 10 per class, 7 classes
    assert rep["accuracy"] == pytest.approx(val["accuracy"])
    assert rep["loss"] == pytest.approx(val["loss"], rel=1e-4)
    # The same checkpoint copied out of its run folder (no config.yaml beside it) reads the data
    # recipe saved inside it: before, its 'val' was another 10% carved with seed 0.
    lone = tmp_path / "elsewhere" / "model.ckpt"
    lone.parent.mkdir()
    lone.write_bytes((run / "best.ckpt").read_bytes())
    assert main(["evaluate", str(lone), "--data", str(data), "--split", "val", "--no-progress",
                 "--out", str(tmp_path / "eval2")]) == 0
    rep2 = json.loads((tmp_path / "eval2" / "report.json").read_text())
    assert rep2["n"] == 21 and rep2["loss"] == pytest.approx(val["loss"], rel=1e-4)


def test_robustness_and_compare_use_the_runs_validation_split(tmp_path):
    """Siblings of evaluate: robustness carved 20% (not the run's fraction), compare ignored the
    run's grouping; all three now read the run's data recipe."""
    from ferkit.evaluation.compare import evaluate_model
    from ferkit.evaluation.robustness import robustness_sweep

    data = write_class_tree(tmp_path / "data", n=10)
    assert main(["train", "boulis-baseline", "--data", str(data), "--out", str(tmp_path / "runs"), *FAST,
                 "--epochs", "1", "--seed", "3", "--set", "val_fraction=0.3"]) == 0
    run = next((tmp_path / "runs").iterdir())
    val = json.loads((run / "summary.json").read_text())["val"]
    rob = robustness_sweep(run / "best.ckpt", data, split="val", distortions=["random-gray"], severities=[1],
                           progress=False)
    assert rob["n"] == val["n"] == 21
    assert rob["clean"] == pytest.approx(val["accuracy"])
    rep, ds = evaluate_model(run / "best.ckpt", data, "val", progress=False)
    assert len(ds) == 21 and rep["accuracy"] == pytest.approx(val["accuracy"])


def test_resume_keeps_the_runs_batch_limit(tmp_path):
    """--limit-batches is saved in config.yaml: a resumed smoke run keeps its size."""
    data = write_class_tree(tmp_path / "data", n=10)
    assert main(["train", "boulis-baseline", "--data", str(data), "--out", str(tmp_path / "runs"), *FAST,
                 "--epochs", "1", "--limit-batches", "1"]) == 0
    run = next((tmp_path / "runs").iterdir())
    assert torch.load(run / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] == 1
    assert main(["train", "--resume", str(run), "--epochs", "3", "--no-progress", "--device", "cpu"]) == 0
    # 1 batch per epoch for all three epochs (4 batches per epoch without the limit).
    assert torch.load(run / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] == 3


class _Killed(Exception):
    pass


def test_resumed_budget_run_keeps_its_plan_and_its_cosine(tmp_path, monkeypatch):
    """A time-budget run cut to 4 of its 40 epochs is killed after epoch 2 and resumed: the
    resumed run must end at epoch 4 with the cosine continuing down to its floor. Before, the
    new process sized the cosine to all 40 epochs (the lr jumped back near its peak) and planned
    afresh."""
    from ferkit.training.schedule import RunSchedule

    data = write_class_tree(tmp_path / "data", n=4)
    orig = RunSchedule.on_train_epoch_start

    def budget_then_kill(self, trainer, pl_module):
        if trainer.current_epoch == 0:
            self.shorten(trainer, pl_module, 4)  # what the budget decides on a slow machine
        if trainer.current_epoch == 2:
            raise _Killed
        orig(self, trainer, pl_module)

    monkeypatch.setattr(RunSchedule, "on_train_epoch_start", budget_then_kill)
    with pytest.raises(_Killed):
        main(["train", "boulis-baseline", "--data", str(data), "--out", str(tmp_path / "runs"), *FAST,
              "--epochs", "40", "--lr", "0.01", "--set", "scheduler=cosine", "--set", "min_lr=0.0001",
              "--set", "model_kwargs={hidden: 16}", "--set", "early_stopping_patience=null"])
    monkeypatch.setattr(RunSchedule, "on_train_epoch_start", orig)
    run = next((tmp_path / "runs").iterdir())
    killed = torch.load(run / "last.ckpt", map_location="cpu", weights_only=False)
    assert killed["epoch"] == 1
    lr_killed = killed["optimizer_states"][0]["param_groups"][0]["lr"]
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert json.loads((run / "summary.json").read_text())["epochs_trained"] == 4
    # the learning rate logged at the start of each resumed epoch: on down the curve, never back up
    resumed = [float(r["lr-Adam"]) for r in _rows(run) if r.get("lr-Adam") and int(r["step"]) > killed["global_step"]]
    assert resumed and all(lr < lr_killed for lr in resumed), (lr_killed, resumed)
    last = torch.load(run / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["epoch"] == 3
    assert last["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.0001, rel=0.05)


def test_a_budget_spent_by_the_first_epoch_ends_the_run_after_the_second(tmp_path):
    data = write_class_tree(tmp_path / "data", n=4)
    assert main(["train", "boulis-baseline", "--data", str(data), "--out", str(tmp_path / "runs"), *FAST,
                 "--epochs", "50", "--max-time", "0.0005", "--set", "model_kwargs={hidden: 16}"]) == 0
    run = next((tmp_path / "runs").iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs_trained"] == summary["planned_epochs"] == 2  # 3 before: the first epoch is not timed
    assert max(_epochs_with(_rows(run), "val_loss")) == 1  # and the last one was validated


def test_a_misspelt_tta_preset_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "default", "--data", ".", "--tta", "2", "--tta-preset", "nope"])
    assert e.value.code == 2 and "unknown preset 'nope'" in capsys.readouterr().err


class _FakeTrainer:
    """What RunSchedule reads and writes of a Lightning Trainer."""

    def __init__(self, epochs):
        from types import SimpleNamespace

        self.fit_loop = SimpleNamespace(max_epochs=epochs)
        self.current_epoch = 0
        self.check_val_every_n_epoch = 1

    @property
    def max_epochs(self):
        return self.fit_loop.max_epochs


def _plans(epoch_seconds, budget_s, epochs=50, steps_per_epoch=10, monkeypatch=None):
    """Drive RunSchedule through epochs of the given lengths; the plan at each epoch's start."""
    from types import SimpleNamespace

    from ferkit.training import schedule

    clock = [1000.0]
    monkeypatch.setattr(schedule.time, "monotonic", lambda: clock[0])
    sched = schedule.RunSchedule(budget_s=budget_s, margin=0.0)
    trainer, module = _FakeTrainer(epochs), SimpleNamespace(schedule_steps=epochs * steps_per_epoch)
    plans = []
    for e, secs in enumerate(epoch_seconds):
        if e >= trainer.max_epochs:
            break
        trainer.current_epoch = e
        sched.on_train_epoch_start(trainer, module)
        plans.append((trainer.max_epochs, module.schedule_steps))
        clock[0] += secs
    return plans


def test_a_plan_shrunk_by_slow_epochs_grows_back_when_they_pass(monkeypatch):
    # Epochs 2-3 slowed 3x by a job beside the run, then the machine is quiet again. The
    # 3,000 s budget fits 26 epochs that way; the mean since the start shrank the plan to 10
    # and kept it there (a session's run lost 7 epochs of 46 so).
    secs = [100, 300, 300] + [100] * 60
    plans = _plans(secs, budget_s=3000, epochs=50, monkeypatch=monkeypatch)
    assert min(p for p, _ in plans) <= 10  # shrunk while slow
    final, steps = plans[-1]
    assert final >= 24  # grew back
    assert steps == final * 10  # the cosine follows the plan
    assert sum(secs[:final]) <= 3000 * 1.15  # and the run still ends inside its budget


def test_a_plan_does_not_grow_past_half_way_or_the_recipe(monkeypatch):
    # Slow from the start then much faster late: no growth after half of the plan.
    secs = [100] + [200] * 6 + [20] * 40
    plans = _plans(secs, budget_s=1400, epochs=50, monkeypatch=monkeypatch)
    grown = [(i, a, b) for i, ((a, _), (b, _)) in enumerate(itertools.pairwise(plans)) if b > a]
    assert all(i + 1 < 0.5 * a for i, a, _ in grown), grown
    assert max(p for p, _ in plans) <= 50
