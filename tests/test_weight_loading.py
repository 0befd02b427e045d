"""The one weight loader (models/checkpoint.load_weights) and loading saved models from disk."""

from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="needs the train extra (PyTorch)")
import torch
from torch import nn

from ferkit.errors import FerkitError
from ferkit.evaluation.ensemble import Ensemble
from ferkit.models.checkpoint import load_checkpoint, load_model_any, load_weights, save_slim
from ferkit.models.registry import create_model

LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))


def test_report_names_what_was_loaded_and_what_was_not():
    torch.manual_seed(0)
    src, dst = _net(), _net()
    state = {f"model.{k}": v for k, v in src.state_dict().items()}
    state["model.3.weight"] = torch.zeros(5, 4)  # same name, other shape
    del state["model.1.running_var"]
    state["model.extra.weight"] = torch.zeros(1)
    state["class_w"] = torch.ones(7)  # a Lightning module's own buffer: no "model." prefix
    before = dst[3].weight.detach().clone()
    rep = load_weights(dst, {"state_dict": state})
    assert rep.mismatched == ["3.weight"] and rep.missing == ["1.running_var"]
    assert sorted(rep.unexpected) == ["class_w", "extra.weight"]
    assert len(rep.loaded) == len(dst.state_dict()) - 2 and str(rep) == f"{len(rep.loaded)}/{rep.total} tensors"
    assert torch.equal(dst[0].weight, src[0].weight) and torch.equal(dst[3].bias, src[3].bias)
    assert torch.equal(dst[3].weight, before)  # a misshaped tensor leaves the model's own


def test_within_takes_one_subtree_and_only_limits_the_model_side():
    torch.manual_seed(0)
    inner, other = _net(), _net()
    state = {**{f"model.dae.{k}": v for k, v in inner.state_dict().items()},
             **{f"model.vgg.{k}": v for k, v in other.state_dict().items()}}
    dst = _net()
    rep = load_weights(dst, state, within=("dae.",), require="exact")
    assert rep.unexpected == [] and torch.equal(dst[0].weight, inner[0].weight)
    dst = _net()
    rep = load_weights(dst, state, within=("vgg.",), only="0.")
    assert rep.loaded == ["0.weight", "0.bias"] and torch.equal(dst[0].weight, other[0].weight)
    assert not torch.equal(dst[3].weight, other[3].weight)


def test_require_levels_raise_one_line_errors():
    src = _net().state_dict()
    with pytest.raises(FerkitError, match=r"init_checkpoint x: no tensor fits Sequential.*unexpected"):
        load_weights(_net(), {"a.b": torch.zeros(1)}, what="init_checkpoint x")
    partial = {k: v for k, v in src.items() if not k.startswith("3.")}
    with pytest.raises(FerkitError, match=r"do not fit Sequential \(2 missing, e.g. \['3.weight', '3.bias'\]"):
        load_weights(_net(), partial, require="all")
    assert load_weights(_net(), partial, require="all", optional=("3.*",)).missing == ["3.weight", "3.bias"]
    # A file of other things under the model's names is refused, not an AttributeError.
    with pytest.raises(FerkitError, match="2 misshaped"):
        load_weights(_net(), {**src, "3.weight": "text", "3.bias": 3}, require="all")
    with pytest.raises(FerkitError, match="1 unexpected.*; is it ours"):
        load_weights(_net(), {**src, "z": torch.zeros(1)}, require="exact", hint="is it ours?")


def _slim(tmp_path, name="boulis-baseline"):
    m = create_model(name).eval()
    path = tmp_path / "m.pt"
    save_slim(m, {"model": name, "labels": LABELS}, path)
    return m, path


def test_misshaped_weights_in_a_model_file_are_a_ferkit_error(tmp_path):
    # Before the shared loader a same-name, other-shape tensor escaped as torch's RuntimeError.
    _, path = _slim(tmp_path)
    ck = torch.load(path, weights_only=False)
    key = next(k for k, v in ck["state_dict"].items() if v.dim() == 4)
    ck["state_dict"][key] = torch.zeros(1, 1, 1, 1)
    torch.save(ck, path)
    with pytest.raises(FerkitError, match=rf"m.pt: weights do not fit boulis-baseline \(1 misshaped.*{key}"):
        load_checkpoint(path)
    ens = Ensemble([create_model("boulis-baseline")], LABELS)
    ens.save(tmp_path / "ens.pt")
    ck = torch.load(tmp_path / "ens.pt", weights_only=False)
    ck["members"][0]["state_dict"][key] = torch.zeros(1, 1, 1, 1)
    torch.save(ck, tmp_path / "ens.pt")
    with pytest.raises(FerkitError, match=r"member 0 \(boulis-baseline\): weights do not fit"):
        load_model_any(tmp_path / "ens.pt")


def test_load_model_any_reads_each_file_once(tmp_path, monkeypatch):
    m, path = _slim(tmp_path)
    ens = Ensemble([m], LABELS).eval()
    ens.save(tmp_path / "ens.pt")
    calls = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    x = torch.rand(2, 1, 48, 48)
    for f, saved in ((path, m), (tmp_path / "ens.pt", ens)):
        calls.clear()
        model, spec = load_model_any(f)
        assert len(calls) == 1, f"{f.name} read {len(calls)} times"
        assert torch.allclose(model(x), saved(x), atol=1e-6)
    assert spec["model"] == "ensemble" and spec["members"] == ["boulis-baseline"]


def test_load_model_any_takes_a_run_folder_and_names_unknown_formats(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _, path = _slim(tmp_path)
    path.rename(run / "best.ckpt")
    assert load_model_any(run)[1]["model"] == "boulis-baseline"
    torch.save({"format": "ferkit-video"}, tmp_path / "v.pt")
    with pytest.raises(FerkitError, match="'ferkit-video' file, not a ferkit model"):
        load_model_any(tmp_path / "v.pt")


def test_awei_takes_torchvisions_full_vgg16_layout(tmp_path):
    # torchvision's VGG16 state dict holds classifier.0.weight beside features.0.weight; the
    # old "last two parts of the name" matching let the classifier's tensor shadow conv 0.
    from torchvision.models import vgg as tv_vgg

    torch.manual_seed(3)
    feats = tv_vgg.make_layers(tv_vgg.cfgs["D"])
    state = {f"features.{k}": v for k, v in feats.state_dict().items()}
    state.update({"classifier.0.weight": torch.zeros(8, 4), "classifier.0.bias": torch.zeros(8)})
    torch.save(state, tmp_path / "vgg16.pth")
    m = create_model("awei", input_size=64, weights=str(tmp_path / "vgg16.pth"))
    assert torch.equal(m.vgg[0].weight, feats[0].weight) and torch.equal(m.vgg[28].bias, feats[28].bias)
    # A trained awei (model.vgg.* beside its own model.features.*) gives its guide to a new one.
    torch.save({"state_dict": {f"model.{k}": v for k, v in m.state_dict().items()}}, tmp_path / "awei.ckpt")
    m2 = create_model("awei", input_size=64, weights=str(tmp_path / "awei.ckpt"))
    assert torch.equal(m2.vgg[0].weight, feats[0].weight)


def test_autoencoders_are_refused_where_class_scores_are_needed(tmp_path, capsys):
    # `ferkit evaluate DAE.pt` used to fail deep inside with a tensor-shape RuntimeError.
    from conftest import write_class_tree

    from ferkit.cli import main

    save_slim(create_model("li-dae"), {"model": "li-dae", "labels": LABELS}, tmp_path / "dae.pt")
    _, clf = _slim(tmp_path)
    data = write_class_tree(tmp_path / "data", n=1)
    assert main(["evaluate", str(tmp_path / "dae.pt"), "--data", str(data), "--no-progress"]) == 2
    assert "reconstructs images" in capsys.readouterr().err
    assert main(["compare", str(clf), str(tmp_path / "dae.pt"), "--data", str(data), "--no-progress"]) == 2
    assert "denoise-preview" in capsys.readouterr().err
    with pytest.raises(FerkitError, match="li-dae model reconstructs images"):
        Ensemble.from_checkpoints([clf, tmp_path / "dae.pt"])


def test_evaluate_warns_about_a_framing_mismatch(tmp_path, monkeypatch, capsys):
    # The warning's module was not imported: a mismatch ended `ferkit evaluate` with a NameError.
    from conftest import write_class_tree

    from ferkit.cli import main
    from ferkit.evaluation import evaluate

    _, clf = _slim(tmp_path)
    data = write_class_tree(tmp_path / "data", n=1)
    monkeypatch.setattr(evaluate, "framing_mismatch", lambda index, cfg: "faces cut with another margin")
    assert main(["evaluate", str(clf), "--data", str(data), "--no-progress", "--json"]) == 0
    assert "faces cut with another margin" in capsys.readouterr().err
