"""Train -> evaluate through the CLI, resume, atomic checkpoints, user errors (exit 2)."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="needs the train extra (PyTorch)")
import torch
from conftest import write_class_tree

from ferkit.cli import main
from ferkit.training.train import AtomicCheckpointIO

FAST = ["--no-progress", "--device", "cpu", "--batch-size", "16"]


def _epochs_logged(run: Path) -> list[int]:
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return sorted({int(float(r["epoch"])) for r in rows if r.get("val_loss")})


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    data = write_class_tree(root / "data", n=6)
    assert main(["train", "boulis-baseline", "--data", str(data), "--out", str(root / "runs"),
                 "--epochs", "1", *FAST]) == 0
    (run,) = (root / "runs").iterdir()
    return data, run


def test_run_directory_contents(trained_run):
    _, run = trained_run
    for f in ("config.yaml", "metrics.csv", "best.ckpt", "last.ckpt", "curves.png", "confusion_val.png",
              "summary.json"):
        assert (run / f).is_file(), f
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs_trained"] == 1 and _epochs_logged(run) == [0]
    # validation = one face of each class (6 per class, val_fraction 0.1 rounds up to 1),
    # and the summary's accuracy is best.ckpt's on exactly those faces
    val = summary["val"]
    assert val["n"] == 7 and all(c["n"] == 1 for c in val["per_class"].values())
    assert val["accuracy"] == pytest.approx(sum(c["accuracy"] for c in val["per_class"].values()) / 7)


def test_evaluate_json(trained_run, capsys):
    data, run = trained_run
    assert main(["evaluate", str(run / "best.ckpt"), "--data", str(data), "--split", "test", "--json",
                 "--no-progress"]) == 0
    rep = json.loads(capsys.readouterr().out)
    for k in ("accuracy", "loss", "macro_f1", "n", "labels", "per_class", "confusion"):
        assert k in rep
    assert rep["n"] == 42 and len(rep["confusion"]) == 7
    assert sum(map(sum, rep["confusion"])) == 42
    assert set(rep["per_class"]["happy"]) >= {"accuracy", "misclassification", "n"}


def test_evaluate_text_and_report_files(trained_run, capsys, tmp_path):
    data, run = trained_run
    assert main(["evaluate", str(run / "best.ckpt"), "--data", str(data), "--out", str(tmp_path / "rep"),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "accuracy=" in out and "disgust" in out
    assert (tmp_path / "rep" / "confusion.png").is_file() and (tmp_path / "rep" / "per_class.png").is_file()


def test_evaluate_foreign_folder_with_synonyms(trained_run, tmp_path, capsys):
    _, run = trained_run
    ck = write_class_tree(tmp_path / "ckplus", classes=("anger", "contempt", "disgust", "fear", "happy",
                                                      "sadness", "surprise"), n=2, splits=())
    assert main(["evaluate", str(run / "best.ckpt"), "--data", str(ck), "--json", "--no-progress"]) == 0
    captured = capsys.readouterr()
    rep = json.loads(captured.out)
    assert rep["n"] == 12 and rep["skipped"]["class outside the label set"] == 2
    assert "contempt (2)" in captured.err


def test_resume_continues(trained_run, tmp_path):
    _, run = trained_run
    assert main(["train", "--resume", str(run), "--epochs", "2", *FAST]) == 0
    assert _epochs_logged(run) == [0, 1]
    assert json.loads((run / "summary.json").read_text())["epochs_trained"] == 2


def test_atomic_checkpoint_keeps_old_file_on_failure(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    target = tmp_path / "best.ckpt"
    io.save_checkpoint({"a": torch.ones(2)}, target)

    def killed_mid_write(self, checkpoint, path, storage_options=None):
        Path(path).write_bytes(b"partial")  # the inner writer got half-way
        raise KeyboardInterrupt("killed mid-write")

    from lightning.pytorch.plugins.io import TorchCheckpointIO

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"a": torch.zeros(2)}, target)
    monkeypatch.undo()
    assert torch.equal(torch.load(target)["a"], torch.ones(2))


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["train", "boulis-baseline", "--data", "/no/such/path"], "no such file"),
        (["train", "no-such-recipe", "--data", "."], "unknown recipe"),
        (["evaluate", "/no/such.ckpt", "--data", "."], "no such model file"),
        (["train", "--resume", "/tmp"], "not a run directory"),
        (["train", "boulis-baseline", "--data", ".", "--set", "nonsense"], "key=value"),
    ],
)
def test_user_errors_exit_2_one_line(argv, msg, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ferkit: error:") and msg in err[0]


def test_evaluate_corrupt_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"garbage")
    assert main(["evaluate", str(bad), "--data", str(tmp_path)]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err


def test_help_for_every_command():
    from ferkit.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"train", "evaluate", "recipes", "models"} <= set(sub.choices)
    for name, p in sub.choices.items():
        assert p.description, f"{name} has no description"


def test_recipes_and_models_listing(capsys):
    assert main(["recipes"]) == 0
    assert "boulis-baseline" in capsys.readouterr().out
    assert main(["models"]) == 0
    assert "boulis-baseline" in capsys.readouterr().out


@pytest.mark.slow
def test_end_to_end_on_real_fer2013_subset(fer2013_dir, tmp_path, capsys):
    """train -> evaluate on a small subset of the real data (symlinks, nothing copied)."""
    sub = tmp_path / "fer"
    for split, n in (("train", 60), ("test", 20)):
        for cls_dir in sorted((fer2013_dir / split).iterdir()):
            d = sub / split / cls_dir.name
            d.mkdir(parents=True)
            for f in sorted(cls_dir.iterdir())[:n]:
                os.symlink(f, d / f.name)
    assert main(["train", "boulis-baseline", "--data", str(sub), "--out", str(tmp_path / "runs"),
                 "--epochs", "2", *FAST]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    capsys.readouterr()
    assert main(["evaluate", str(run / "best.ckpt"), "--data", str(sub), "--split", "publictest",
                 "--json", "--no-progress"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["n"] == 140 and sum(map(sum, rep["confusion"])) == 140
    assert rep["accuracy"] == pytest.approx(sum(rep["confusion"][i][i] for i in range(7)) / 140)
    # it learned something from 420 real faces in 2 epochs: the training loss fell
    with open(run / "metrics.csv", newline="") as f:
        train_loss = [float(r["train_loss"]) for r in csv.DictReader(f) if r.get("train_loss")]
    assert len(train_loss) == 2 and train_loss[1] < train_loss[0], train_loss


@pytest.mark.slow
def test_ddp_two_processes_cpu(tmp_path):
    """2-process DDP (gloo) smoke run: one tiny epoch, one run directory, a loadable best.ckpt."""
    data = write_class_tree(tmp_path / "data", n=4)
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", OMP_NUM_THREADS="1")
    env.pop("FERKIT_RUN_DIR", None)
    r = subprocess.run(
        [sys.executable, "-m", "ferkit", "train", "boulis-baseline", "--data", str(data), "--out",
         str(tmp_path / "runs"), "--epochs", "1", "--devices", "2", *FAST],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1, runs
    assert (runs[0] / "best.ckpt").is_file() and (runs[0] / "summary.json").is_file()


def test_failed_train_leaves_no_run_directory(tmp_path):
    """A wrong or empty data path is a usage error that writes nothing under --out."""
    (tmp_path / "empty").mkdir()
    for data in (tmp_path / "nope", tmp_path / "empty"):
        assert main(["train", "boulis-baseline", "--data", str(data), "--out", str(tmp_path / "runs"),
                     *FAST]) == 2
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize(
    ("model_kwargs", "msg"),
    [("{nonsense: 2}", "unexpected keyword argument 'nonsense'"),
     ("{block_dropout: 2, width: 0.125, hidden: 16}", "dropout probability")],
)
def test_bad_model_kwargs_are_one_line_usage_errors(tmp_path, capsys, model_kwargs, msg):
    data = write_class_tree(tmp_path / "data", n=2)
    argv = ["train", "li-vgg-short", "--data", str(data), "--out", str(tmp_path / "runs"),
            "--set", f"model_kwargs={model_kwargs}", "--limit-batches", "1", *FAST]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ferkit: error: model 'li-vgg' rejects model_kwargs") and msg in err[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_two_trainings_in_one_process_get_two_run_directories(tmp_path):
    """Regression: the DDP run-dir hand-over variable must not leak into the next train()."""
    data = write_class_tree(tmp_path / "data", n=4)
    for _ in range(2):
        assert main(["train", "boulis-baseline", "--data", str(data), "--out", str(tmp_path / "runs"),
                     "--epochs", "1", "--limit-batches", "2", *FAST]) == 0
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2 and all((r / "best.ckpt").is_file() for r in runs)
    assert "FERKIT_RUN_DIR" not in os.environ


def test_concurrent_run_directories_are_distinct(tmp_path, monkeypatch):
    """Regression: two trainings started in the same second shared one folder (and one
    metrics.csv) because the name was checked long before the folder was made."""
    from concurrent.futures import ThreadPoolExecutor

    import ferkit.training.train as train_mod

    monkeypatch.setattr(train_mod.time, "strftime", lambda fmt: "20260101-000000")
    with ThreadPoolExecutor(8) as pool:
        dirs = list(pool.map(lambda _: train_mod._new_run_dir(tmp_path / "runs", "r"), range(8)))
    assert len(set(dirs)) == 8 and all(d.is_dir() for d in dirs)
    assert sorted(d.name for d in dirs)[:2] == ["r-20260101-000000", "r-20260101-000000-1"]


def test_curves_plot_has_one_panel_per_logged_metric(tmp_path):
    import warnings

    from ferkit.evaluation.plots import plot_curves

    clf = tmp_path / "clf.csv"
    clf.write_text("epoch,step,train_loss,train_acc,val_loss,val_acc\n0,1,1.0,0.3,1.1,0.3\n1,2,0.9,0.4,1.0,0.35\n")
    rec = tmp_path / "rec.csv"  # an autoencoder run: losses only
    rec.write_text("epoch,step,train_loss,val_loss\n0,1,0.02,0.03\n1,2,0.01,0.02\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "No artists with labels" legend warning
        assert plot_curves(clf, tmp_path / "clf.png") and plot_curves(rec, tmp_path / "rec.png")
    from PIL import Image

    w_clf, w_rec = Image.open(tmp_path / "clf.png").width, Image.open(tmp_path / "rec.png").width
    assert w_rec < 0.7 * w_clf  # one panel instead of two
    empty = tmp_path / "empty.csv"
    empty.write_text("epoch,step,train_loss\n")
    assert plot_curves(empty, tmp_path / "none.png") is False


def test_trainer_start_prints_no_litlogger_advert(tmp_path, caplog):
    # every 'ferkit train' printed Lightning's "💡 Tip: For seamless cloud logging ... try
    # installing litlogger" line; Lightning's useful start lines stay
    import logging

    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    import ferkit.training.train  # noqa: F401  (installs the filter)

    caplog.set_level(logging.INFO, logger="lightning.pytorch")
    L.Trainer(logger=CSVLogger(tmp_path), accelerator="cpu", devices=1, enable_progress_bar=False)
    assert "GPU available" in caplog.text and "litlogger" not in caplog.text and "Tip" not in caplog.text
