"""Calibrated probabilities: ECE and reliability bins, the temperature fit, the temperature
carried by model files and applied by every path that turns logits into probabilities."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ferkit.models.input_config import InputConfig


def test_input_config_carries_a_checked_temperature():
    assert InputConfig().temperature == 1.0
    cfg = InputConfig(temperature=1.5)
    assert InputConfig.from_dict(cfg.to_dict()).temperature == 1.5
    old = {k: v for k, v in cfg.to_dict().items() if k != "temperature"}  # a file from before calibration
    assert InputConfig.from_dict(old).temperature == 1.0
    for bad in (0, -1, float("nan"), float("inf"), "abc"):
        with pytest.raises(ValueError, match="temperature"):
            InputConfig(temperature=bad)


torch = pytest.importorskip("torch", reason="needs the train extra (PyTorch)")


def test_reliability_bins_and_ece_by_hand():
    from ferkit.evaluation.calibration import reliability

    # 4 faces at confidence 0.9 (3 right), 2 at 0.6 (1 right): ECE = 4/6 * |0.75 - 0.9| + 2/6 * |0.5 - 0.6|
    probs = torch.tensor([[0.9, 0.1]] * 4 + [[0.6, 0.4]] * 2)
    y = torch.tensor([0, 0, 0, 1, 0, 1])
    rel = reliability(probs, y)
    assert rel["ece"] == pytest.approx(4 / 6 * 0.15 + 2 / 6 * 0.1)
    full = [b for b in rel["bins"] if b["n"]]
    assert [(b["n"], round(b["accuracy"], 3)) for b in full] == [(2, 0.5), (4, 0.75)]
    assert len(rel["bins"]) == 15 and sum(b["n"] for b in rel["bins"]) == 6


def test_the_fit_recovers_the_temperature_that_made_logits_overconfident():
    from ferkit.evaluation.calibration import fit_temperature, summarize

    g = torch.Generator().manual_seed(0)
    true_logits = torch.randn(4000, 7, generator=g) * 1.5
    y = torch.multinomial(torch.softmax(true_logits, 1), 1, generator=g).squeeze(1)
    t = fit_temperature(true_logits * 2.5, y)  # a model 2.5x too sure of itself
    assert t == pytest.approx(2.5, rel=0.1)
    before, after = summarize((true_logits * 2.5)[None], y, 1.0), summarize((true_logits * 2.5)[None], y, t)
    assert after["ece"] < before["ece"] / 2 and after["nll"] < before["nll"]
    assert after["accuracy"] == before["accuracy"]  # the top class never moves


def test_the_fit_averages_over_views():
    from ferkit.evaluation.calibration import fit_temperature

    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3000, 7, generator=g) * 1.5
    y = torch.multinomial(torch.softmax(logits, 1), 1, generator=g).squeeze(1)
    views = torch.stack([logits * 2 + 0.3 * torch.randn(3000, 7, generator=g) for _ in range(4)])
    assert 1.2 < fit_temperature(views, y) < 2.5
    with pytest.raises(ValueError, match="every face"):
        fit_temperature(views[:, :10], y)


def test_every_probability_path_divides_by_the_temperature():
    from ferkit.evaluation.ensemble import CropTTA, member_probs
    from ferkit.models.registry import create_model

    torch.manual_seed(0)
    model = create_model("boulis-baseline", width=4, hidden=8).eval()
    x = torch.rand(5, 1, 48, 48)
    p1 = member_probs(model, x)
    model.input_config = InputConfig(**{**model.input_config.__dict__, "temperature": 3.0})
    p3 = member_probs(model, x)
    assert torch.equal(p1.argmax(1), p3.argmax(1))
    assert (p3.max(1).values < p1.max(1).values).all()  # softer
    c3 = CropTTA("mirror")(model, x)
    assert (c3.max(1).values < 0.99).all()


lightning = pytest.importorskip("lightning", reason="needs the train extra (PyTorch, Lightning)")


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    from conftest import write_class_tree

    from ferkit.cli import main

    root = tmp_path_factory.mktemp("calib")
    data = write_class_tree(root / "data", n=12, splits=())
    assert main(["train", "boulis-baseline", "--data", str(data), "--out", str(root / "runs"), "--epochs", "3",
                 "--no-progress", "--device", "cpu", "--batch-size", "8", "--set", "model_kwargs.width=8",
                 "--set", "model_kwargs.hidden=16", "--set", "val_fraction=0.25",
                 "--set", "precision=32-true", "--set", "early_stopping_patience=null"]) == 0
    (run,) = (root / "runs").iterdir()
    return data, run


def test_calibrate_command_writes_a_model_that_carries_its_temperature(toy_run, tmp_path, capsys):
    from ferkit.cli import main
    from ferkit.inference.recognizer import Recognizer
    from ferkit.models.checkpoint import load_model_any

    data, run = toy_run
    out = tmp_path / "calibrated.pt"
    assert main(["calibrate", str(run / "best.ckpt"), "--data", str(data), "--out", str(out), "--plot",
                 str(tmp_path / "plots"), "--json", "--no-progress"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    t = res["temperature"]
    assert res["fit"]["split"] == "val" and res["fit"]["n"] == 21  # the run's own carve
    assert res["fit"]["after"]["nll"] <= res["fit"]["before"]["nll"] + 1e-6
    assert res["fit"]["after"]["accuracy"] == res["fit"]["before"]["accuracy"]
    assert (tmp_path / "plots" / "reliability_val.png").stat().st_size > 1000
    model, _ = load_model_any(out)
    assert model.input_config.temperature == pytest.approx(t)
    # both inference backends apply it: the same temperature in the ONNX file's metadata
    onnx_out = tmp_path / "calibrated.onnx"
    assert main(["export", str(out), "--out", str(onnx_out)]) == 0
    faces = np.random.default_rng(0).integers(0, 255, (3, 48, 48), dtype=np.uint8)
    plain = Recognizer.from_pretrained(str(run / "best.ckpt"), detector="none", backend="torch")
    for backend, path in (("torch", out), ("onnx", onnx_out)):
        rec = Recognizer.from_pretrained(str(path), detector="none", backend=backend)
        assert rec.input_config.temperature == pytest.approx(t)
        got = rec.classify_faces(list(faces[..., None]))  # (N, K) probabilities
        ref = plain.classify_faces(list(faces[..., None]))
        assert (got.argmax(1) == ref.argmax(1)).all()
        expected = torch.softmax(torch.log(torch.from_numpy(ref)) / t, 1).numpy()  # same logits, / T
        assert np.allclose(got, expected, atol=1e-4), (backend, got, expected)


@pytest.mark.parametrize("argv, msg", [(["--half"], "--half applies to --out FILE.pt only"),
                                       (["--out", "x.txt"], "give a .pt or .onnx file name")])
def test_calibrate_usage_errors(toy_run, argv, msg, capsys):
    from ferkit.cli import main

    data, run = toy_run
    assert main(["calibrate", str(run / "best.ckpt"), "--data", str(data), *argv]) == 2
    assert msg in capsys.readouterr().err
