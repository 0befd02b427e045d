"""tools/ship/ship_model.py: a toy run made into a shipped file with its figures in meta."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from conftest import load_script, write_class_tree

from ferkit.cli import main
from ferkit.commands.listing import model_facts

TOOL = Path(__file__).resolve().parents[1] / "tools" / "ship" / "ship_model.py"


def _tool():
    return load_script(TOOL)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ship")
    data = write_class_tree(tmp / "data", n=12)
    fast = ["--no-progress", "--device", "cpu", "--epochs", "1", "--limit-batches", "1"]
    assert main(["train", "boulis-baseline", "--data", str(data), "--out", str(tmp / "runs"), *fast]) == 0
    (run,) = (tmp / "runs").iterdir()
    return data, run


def test_ship_writes_calibrated_file_with_measured_meta(toy_run, tmp_path, capsys):
    data, run = toy_run
    out, report = tmp_path / "w" / "toy.pt", tmp_path / "report"
    argv = [str(run / "last.ckpt"), "--data", str(data), "--out", str(out), "--tta", "mirror",
            "--trained", "toy: 1 epoch", "--crops-per-s", "1234.4", "--speed-cpu", "test CPU",
            "--report", str(report), "--no-progress"]
    assert _tool().main(argv) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    file = torch.load(out, map_location="cpu", weights_only=False)
    meta, cfg = file["meta"], file["input_config"]
    assert printed["version"] == meta["version"] and meta["version"].startswith("boulis-baseline-")
    assert cfg["tta"] == "mirror" and cfg["temperature"] == pytest.approx(meta["temperature"]["value"], abs=1e-4)
    assert meta["publictest"]["n"] == 84 and meta["val"]["n"] > 0  # 12 faces x 7 classes in test/
    for part in ("publictest", "val"):
        for k in ("plain", "tta"):
            assert 0.0 <= meta[part][k] <= 1.0
    assert meta["gflop"] > 0 and meta["trained"] == "toy: 1 epoch"
    assert meta["speed"] == {"crops_per_s": 1234, "cpu": "test CPU", "threads": 2, "views": "mirror"}
    assert all(p.dtype == torch.float16 for p in file["state_dict"].values() if p.is_floating_point())
    # the figures are the ones the evaluations measured, and `ferkit models` shows them
    rep = json.loads((report / "eval_test_tta.json").read_text())
    assert meta["publictest"]["tta"] == round(rep["accuracy"], 4)
    facts = model_facts(meta, out.stat().st_size, "mirror")
    assert "1,234 crops/s (test CPU, 2 threads)" in facts
    assert (report / "reliability_val.png").is_file() and (report / "ship.json").is_file()
    assert not list(out.parent.glob("*.new"))  # written atomically


@pytest.mark.parametrize("extra, message", [
    (["--crops-per-s", "10"], "needs --speed-cpu"),
    (["--out", "x.onnx"], "slim .pt"),
])
def test_ship_usage_errors_exit_2(toy_run, tmp_path, capsys, extra, message):
    data, run = toy_run
    argv = [str(run / "last.ckpt"), "--data", str(data), "--out", str(tmp_path / "x.pt"), "--trained", "t", *extra]
    with pytest.raises(SystemExit) as e:
        _tool().main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_ship_missing_checkpoint_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        _tool().main([str(tmp_path / "none.ckpt"), "--data", str(tmp_path), "--out", str(tmp_path / "x.pt"),
                      "--trained", "t"])
    assert e.value.code == 2 and "no such checkpoint" in capsys.readouterr().err
