"""Runs stopped for now and resumed: SIGTERM, Ctrl-C and --stop-after save a resumable state
at a batch boundary, and the resumed run is the uninterrupted run, with the real recipe
features on (augmentation with random erasing, warm-up + cosine per step, EMA, label
smoothing, dropout). Also: a time budget's hard stop validates and checkpoints, redone
epochs leave one row each in metrics.csv, a failed resume leaves no parked metrics.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("lightning", reason="needs the train extra (PyTorch, Lightning)")
import torch
import yaml
from conftest import write_class_tree

from ferkit.cli import main
from ferkit.training import schedule as schedule_mod
from ferkit.training.stopping import RunStop

# 84 faces, 63 for training: 7 batches of 8 an epoch (drop_last), so "inside the first
# epoch" has room on both sides.
REAL = ["--no-progress", "--device", "cpu", "--batch-size", "8", "--lr", "0.02",
        "--set", "model_kwargs.width=8", "--set", "model_kwargs.hidden=16", "--set", "input_size=32",
        "--set", "augment=fer-vgg", "--set", "optimizer=sgd", "--set", "scheduler=cosine",
        "--set", "warmup_epochs=1", "--set", "min_lr=0.0", "--set", "ema_decay=0.9",
        "--set", "label_smoothing=0.1", "--set", "early_stopping_patience=null",
        "--set", "precision=32-true", "--set", "val_fraction=0.25"]
EPOCHS = 3


def _rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _lr_schedule(run: Path) -> list[tuple[int, float]]:
    return [(int(r["step"]), float(r["lr-SGD"])) for r in _rows(run) if r.get("lr-SGD")]


def _per_epoch(run: Path, key: str) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for r in _rows(run):
        if r.get(key) and r.get("epoch"):
            out.setdefault(int(float(r["epoch"])), []).append(float(r[key]))
    return out


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]


def _only_run(out: Path) -> Path:
    (run,) = out.iterdir()
    return run


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_class_tree(tmp_path_factory.mktemp("toy") / "data", n=12, splits=())


@pytest.fixture(scope="module")
def straight(toy, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    assert main(["train", "boulis-baseline", "--data", str(toy), "--out", str(out), "--epochs", str(EPOCHS),
                 *REAL]) == 0
    return _only_run(out)


def _assert_same_run(a: Path, b: Path, stopped_inside: set[int] = frozenset()):
    """Same learning rates, validation figures and final weights. The training loss and
    accuracy of an epoch the run stopped inside are means over the batches after the resume
    (Lightning keeps no running sums in a checkpoint), so they are compared elsewhere only."""
    # the learning rate as each epoch starts (warm-up, then the cosine), at the same steps
    la, lb = _lr_schedule(a), _lr_schedule(b)
    assert [s for s, _ in lb] == [s for s, _ in la] == [0, 7, 14], (la, lb)
    assert [lr for _, lr in lb] == pytest.approx([lr for _, lr in la], rel=1e-6), (la, lb)
    for key in ("train_loss", "val_loss", "val_acc"):
        ea, eb = _per_epoch(a, key), _per_epoch(b, key)
        assert sorted(eb) == list(range(EPOCHS)) and all(len(v) == 1 for v in eb.values()), (key, eb)
        for e in range(EPOCHS):
            if key.startswith("train") and e in stopped_inside:
                continue
            assert eb[e][0] == pytest.approx(ea[e][0], rel=1e-4, abs=1e-6), (key, e, ea, eb)
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        if wa[k].is_floating_point():
            assert torch.allclose(wa[k], wb[k], atol=1e-5), k


def test_sigterm_inside_the_first_epoch_then_resume_is_the_uninterrupted_run(toy, straight, tmp_path, monkeypatch,
                                                                             capsys):
    original = RunStop.on_train_batch_end
    sent = []

    def signal_at_batch_3(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == 0 and batch_idx == 2 and not sent:
            sent.append(1)
            os.kill(os.getpid(), signal.SIGTERM)  # handled at once by RunStop's handler
        return original(self, trainer, pl_module, outputs, batch, batch_idx)

    monkeypatch.setattr(RunStop, "on_train_batch_end", signal_at_batch_3)
    code = main(["train", "boulis-baseline", "--data", str(toy), "--out", str(tmp_path), "--epochs", str(EPOCHS),
                 *REAL])
    err = capsys.readouterr().err
    assert code == 143, err
    run = _only_run(tmp_path)
    assert "after batch 3/7" in err and f"ferkit train --resume {run}" in err
    ck = torch.load(run / "last.ckpt", map_location="cpu", weights_only=False)
    assert ck["global_step"] == 3 and ck["epoch"] == 0
    assert not (run / "summary.json").exists()  # not finished: no end-of-run report yet
    monkeypatch.setattr(RunStop, "on_train_batch_end", original)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    _assert_same_run(straight, run, stopped_inside={0})
    assert not (run / "metrics.resume.csv").exists()


def test_stop_after_stops_for_now_and_resume_takes_a_new_stop(toy, straight, tmp_path, capsys):
    # 0.0001 min: the first batch ends past it, so the run stops after batch 1 (exit 0: asked for)
    args = ["train", "boulis-baseline", "--data", str(toy), "--out", str(tmp_path), "--epochs", str(EPOCHS), *REAL]
    assert main([*args, "--stop-after", "0.0001"]) == 0
    run = _only_run(tmp_path)
    assert "stopped by stop-after in epoch 1 after batch 1/7" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--no-progress", "--stop-after", "0.0001"]) == 0
    assert torch.load(run / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] == 2
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    _assert_same_run(straight, run, stopped_inside={0})
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["recipe"]["epochs"] == EPOCHS and "stop_after" not in saved["recipe"]  # not part of the run


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_to_the_command_saves_and_exits_with_its_code(toy, tmp_path, sig, code):
    """A real process: SIGTERM (a machine going down) and Ctrl-C (SIGINT) write last.ckpt
    mid-run and exit 143 / 130 (Ctrl-C was exit 1 with nothing saved beyond the last epoch)."""
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "ferkit", "train", "boulis-baseline", "--data", str(toy), "--out", str(out),
           "--epochs", "500", *REAL]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        runs = list(out.glob("*/metrics.csv")) if out.exists() else []
        if runs and any(r.get("val_loss") for r in _rows(runs[0].parent)):
            break  # training is under way (an epoch validated)
        assert p.poll() is None, p.communicate()
        time.sleep(0.2)
    p.send_signal(sig)
    _, stderr = p.communicate(timeout=120)
    assert p.returncode == code, stderr
    run = _only_run(out)
    assert f"continue with: ferkit train --resume {run}" in stderr
    ck = torch.load(run / "last.ckpt", map_location="cpu", weights_only=False)
    assert ck["global_step"] >= 7 and ck["epoch"] < 499


def test_a_budget_hard_stop_validates_and_checkpoints_an_unscheduled_epoch(toy, tmp_path, monkeypatch):
    """Validation and last.ckpt every 2 epochs, and the budget gone inside epoch 0: the run
    ends there with a validated best.ckpt and a last.ckpt. Before, Lightning's Timer stopped
    it with neither (the GPU job's CPU smoke run on full FER2013 ended 'no checkpoint')."""
    monkeypatch.setattr(schedule_mod, "HARD_EXTRA_S", 0.0)
    assert main(["train", "boulis-baseline", "--data", str(toy), "--out", str(tmp_path), "--epochs", "50", *REAL,
                 "--max-time", "0.0003", "--set", "val_every=2", "--set", "ckpt_every=2"]) == 0
    run = _only_run(tmp_path)
    assert (run / "best.ckpt").is_file() and (run / "last.ckpt").is_file()
    assert _per_epoch(run, "val_loss").keys() == {0}
    summary = yaml.safe_load((run / "summary.json").read_text())
    assert summary["budget_hard_stop"] is True and summary["epochs_trained"] == 1
    assert summary["val"]["n"] == 21


def test_epochs_redone_after_a_kill_have_one_row_each(toy, tmp_path):
    args = ["--no-progress"]
    assert main(["train", "boulis-baseline", "--data", str(toy), "--out", str(tmp_path), "--epochs", "2", *REAL]) == 0
    run = _only_run(tmp_path)
    at_epoch_2 = (run / "last.ckpt").read_bytes()
    assert main(["train", "--resume", str(run), "--epochs", "4", *args]) == 0
    # killed after epoch 4 was logged but before its checkpoint: last.ckpt is epoch 2's
    (run / "last.ckpt").write_bytes(at_epoch_2)
    assert main(["train", "--resume", str(run), "--epochs", "4", *args]) == 0
    for key in ("train_loss", "val_loss"):
        per = _per_epoch(run, key)
        assert sorted(per) == [0, 1, 2, 3] and all(len(v) == 1 for v in per.values()), (key, per)


def test_a_failed_resume_leaves_no_parked_metrics(toy, tmp_path, monkeypatch):
    assert main(["train", "boulis-baseline", "--data", str(toy), "--out", str(tmp_path), "--epochs", "2", *REAL]) == 0
    run = _only_run(tmp_path)
    before = (run / "metrics.csv").read_text()
    import lightning as L

    def broken_fit(self, *a, **k):
        raise RuntimeError("fit failed")

    monkeypatch.setattr(L.Trainer, "fit", broken_fit)
    with pytest.raises(RuntimeError, match="fit failed"):
        main(["train", "--resume", str(run), "--epochs", "3", "--no-progress"])
    assert not (run / "metrics.resume.csv").exists()
    assert (run / "metrics.csv").read_text() == before


def test_resuming_under_another_precision_says_so(toy, tmp_path, capsys):
    assert main(["train", "boulis-baseline", "--data", str(toy), "--out", str(tmp_path), "--epochs", "2", *REAL]) == 0
    run = _only_run(tmp_path)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["precision"] == "32-true"
    cfg["precision"] = "bf16-mixed"  # as if it had trained on a CPU with fast bf16
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "3", "--no-progress"]) == 0
    assert "trained in bf16-mixed so far; this machine runs it in 32-true" in capsys.readouterr().out


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "inf", "abc"])
def test_stop_after_takes_positive_minutes(bad, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "boulis-baseline", "--data", "x", "--stop-after", bad])
    assert e.value.code == 2 and "--stop-after" in capsys.readouterr().err
