"""Empty, truncated or foreign checkpoints: one line naming the file and what to do."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

# Trains or loads checkpoints: the train extra (PyTorch, Lightning).
pytest.importorskip("lightning", reason="needs the train extra (PyTorch, Lightning)")
from conftest import write_class_tree

from ferkit.cli import main
from ferkit.errors import FerkitError

FAST = ["--no-progress", "--device", "cpu", "--batch-size", "16"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("corrupt")
    data = write_class_tree(root / "data", n=4)
    assert main(["train", "boulis-baseline", "--data", str(data), "--out", str(root / "runs"), "--epochs", "1",
                 "--limit-batches", "1", *FAST]) == 0
    (run,) = (root / "runs").iterdir()
    return run


def _copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / run.name
    shutil.copytree(run, dst)
    return dst


def _damage(path: Path, how: str) -> None:
    raw = path.read_bytes()
    path.write_bytes(b"" if how == "empty" else raw[: len(raw) // 2])


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    err = [e for e in err if not e.startswith("ferkit: warning:")]
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("how", ["empty", "truncated"])
def test_resume_from_damaged_last_ckpt_says_what_to_do(run, tmp_path, capsys, how):
    """Was a 50-line traceback from inside Trainer.fit."""
    r = _copy(run, tmp_path)
    _damage(r / "last.ckpt", how)
    assert main(["train", "--resume", str(r), "--epochs", "2", *FAST]) == 2
    line = _error_line(capsys)
    assert line.startswith(f"ferkit: error: {r / 'last.ckpt'}: ")
    assert ("empty file" if how == "empty" else "truncated or damaged") in line
    assert f"cp {r / 'best.ckpt'} {r / 'last.ckpt'}" in line and "start the run over" in line


def test_resume_when_best_is_damaged_too_offers_a_fresh_start(run, tmp_path, capsys):
    r = _copy(run, tmp_path)
    _damage(r / "last.ckpt", "truncated")
    _damage(r / "best.ckpt", "empty")
    assert main(["train", "--resume", str(r), *FAST]) == 2
    line = _error_line(capsys)
    assert f"delete {r / 'last.ckpt'} to start the run over" in line and "cp " not in line


def test_resume_from_a_slim_export_is_refused(run, tmp_path, capsys):
    r = _copy(run, tmp_path)
    assert main(["export", str(r / "best.ckpt"), "--format", "torch", "--out", str(r / "slim.pt")]) == 0
    shutil.copy(r / "slim.pt", r / "last.ckpt")
    capsys.readouterr()
    assert main(["train", "--resume", str(r), *FAST]) == 2
    assert "not a checkpoint written by 'ferkit train'" in _error_line(capsys)


def test_resume_after_following_the_advice_works(run, tmp_path, capsys):
    r = _copy(run, tmp_path)
    _damage(r / "last.ckpt", "truncated")
    shutil.copy(r / "best.ckpt", r / "last.ckpt")
    assert main(["train", "--resume", str(r), "--epochs", "2", "--limit-batches", "1", *FAST]) == 0


@pytest.mark.parametrize("how", ["empty", "truncated"])
@pytest.mark.parametrize("argv", [
    ["evaluate", "{ck}", "--data", "{data}", "--no-progress"],
    ["ensemble", "{ck}", "{good}", "--out", "{tmp}/ens.pt"],
    ["export", "{ck}", "--format", "torch", "--out", "{tmp}/x.pt"],
    ["predict", "{img}", "--model", "{ck}"],
])
def test_commands_refuse_damaged_checkpoints_in_one_line(run, tmp_path, capsys, how, argv):
    bad = tmp_path / "bad.ckpt"
    shutil.copy(run / "best.ckpt", bad)
    _damage(bad, how)
    data = write_class_tree(tmp_path / "d", n=1)
    img = next(data.rglob("*.png"))
    argv = [a.format(ck=bad, good=run / "best.ckpt", data=data, tmp=tmp_path, img=img) for a in argv]
    assert main(argv) == 2
    line = _error_line(capsys)
    assert str(bad) in line and "not a readable checkpoint" in line and "copy or export it again" in line


@pytest.mark.parametrize("how", ["empty", "truncated"])
def test_recognizer_refuses_damaged_checkpoint(run, tmp_path, how):
    from ferkit.inference.recognizer import Recognizer

    bad = tmp_path / "bad.ckpt"
    shutil.copy(run / "best.ckpt", bad)
    _damage(bad, how)
    with pytest.raises(FerkitError) as e:
        Recognizer.from_pretrained(bad, backend="torch")
    assert "\n" not in str(e.value) and "not a readable checkpoint" in str(e.value)


def test_evaluate_warns_when_the_runs_config_is_damaged(run, tmp_path, capsys):
    """A damaged config.yaml beside best.ckpt silently switched evaluation to the default split."""
    r = _copy(run, tmp_path)
    (r / "config.yaml").write_text("recipe: [unterminated\n")
    data = write_class_tree(tmp_path / "d", n=2)
    assert main(["evaluate", str(r / "best.ckpt"), "--data", str(data), "--split", "test", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert f"{r / 'config.yaml'}: unreadable run config (" in err and "not necessarily the run's" in err


@pytest.mark.parametrize(("edit", "msg"), [
    # A hand-edited batch limit was a TypeError / MisconfigurationException traceback.
    ({"limit_train_batches": "abc"}, "limit_train_batches must be a fraction in (0, 1), a whole batch count"),
    ({"limit_val_batches": -3}, "limit_val_batches must be a fraction in (0, 1)"),
    ({"limit_val_batches": 2.5}, "got 2.5"),
    # Another network than the checkpoint's was a 'size mismatch' RuntimeError traceback.
    ({"recipe": {"model_kwargs": {"hidden": 8}}}, "model_kwargs {'hidden': 8} (checkpoint: {}) differ from last.ckpt"),
    ({"recipe": {"labels": list("abcdefg")}}, "labels ['a', 'b'"),
    # Another validation split resumed in silence (best.ckpt compares val_loss across epochs).
    ({"recipe": {"val_fraction": 0.3}}, "val_fraction 0.3 (checkpoint: 0.1) differ"),
])
def test_resume_refuses_a_config_edited_away_from_its_checkpoint(run, tmp_path, capsys, edit, msg):
    import yaml

    run = _copy(run, tmp_path)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    for k, v in edit.items():
        cfg[k] = {**cfg[k], **v} if isinstance(v, dict) else v
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", "--resume", str(run), *FAST]) == 2
    line = _error_line(capsys)
    assert str(run / "config.yaml") in line and msg in line, line


def test_resume_takes_hand_edits_that_keep_network_and_split(run, tmp_path):
    import yaml

    run = _copy(run, tmp_path)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["recipe"]["epochs"] = 2  # a longer run: fine
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", "--resume", str(run), *FAST]) == 0
