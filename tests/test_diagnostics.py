"""tools/diagnostics/class_weighted_nll.py on two toy runs (one class-weighted)."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from conftest import load_script, write_class_tree

from ferkit.cli import main

TOOL = Path(__file__).resolve().parents[1] / "tools" / "diagnostics" / "class_weighted_nll.py"
FAST = ["--no-progress", "--device", "cpu", "--epochs", "1", "--limit-batches", "1"]


def _tool():
    return load_script(TOOL)


def _run(data: Path, out: Path, recipe: str) -> Path:
    assert main(["train", recipe, "--data", str(data), "--out", str(out), *FAST]) == 0
    (run,) = out.iterdir()
    return run


def test_weighted_and_plain_nll_of_two_runs(tmp_path, capsys):
    data = write_class_tree(tmp_path / "data", n=12)
    plain = _run(data, tmp_path / "plain", "boulis-baseline")
    weighted = _run(data, tmp_path / "weighted", "boulis-baseline-weighted")
    tool = _tool()
    capsys.readouterr()
    assert tool.main([str(plain), str(weighted), "--data", str(data), "--weights-from", str(weighted)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("class weights: ") and len(out[0].split(",")) == 7
    assert [line.split(":")[0] for line in out[1:]] == [str(plain), str(weighted)]
    r = tool.weighted_nll(weighted, str(data), torch.ones(7))
    # with every weight 1 the weighted loss is the plain loss
    assert r["weighted_nll"] == pytest.approx(r["nll"], rel=1e-5) and r["n"] > 0


def test_an_unweighted_run_as_the_weight_source_is_a_one_line_error(tmp_path, capsys):
    data = write_class_tree(tmp_path / "data", n=12)
    plain = _run(data, tmp_path / "plain", "boulis-baseline")
    capsys.readouterr()
    assert _tool().main([str(plain), "--data", str(data), "--weights-from", str(plain)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no class_weights" in err[0]


def test_a_bad_run_is_skipped_and_counted_and_the_others_are_measured(tmp_path, capsys):
    data = write_class_tree(tmp_path / "data", n=12)
    weighted = _run(data, tmp_path / "weighted", "boulis-baseline-weighted")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "best.ckpt").write_text("not a checkpoint")
    capsys.readouterr()
    rc = _tool().main([str(broken), str(weighted), "--data", str(data), "--weights-from", str(weighted)])
    cap = capsys.readouterr()
    assert rc == 2
    assert any(line.startswith(f"{weighted}: weighted NLL") for line in cap.out.splitlines())
    err = cap.err.strip().splitlines()
    assert str(broken) in err[0] and err[-1].endswith("1 of 2 runs skipped")
