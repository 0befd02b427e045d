"""Soft-voting ensembles, TTA, the ensemble artefact, `ferkit ensemble/evaluate/compare`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("torch", reason="needs the train extra (PyTorch)")
import torch

from ferkit.data.dataset import build_dataset
from ferkit.errors import FerkitError
from ferkit.evaluation.compare import misclassification_table
from ferkit.evaluation.ensemble import (
    Ensemble,
    ensemble_log_probs,
    is_ensemble_file,
    load_ensemble,
    make_tta,
)
from ferkit.evaluation.metrics import classification_report, predict_log_probs
from ferkit.labels import FER7
from ferkit.models.checkpoint import load_checkpoint, save_slim
from ferkit.models.registry import create_model


def _members():
    torch.manual_seed(0)
    a = create_model("boulis-baseline", width=8, hidden=16).eval()  # 48x48 gray
    b = create_model("resnet50", input_size=32, hidden=(8,)).eval()  # 32x32 RGB, ImageNet norm
    return a, b


def _specs():
    return [{"model_kwargs": {"width": 8, "hidden": 16}}, {"model_kwargs": {"hidden": [8]}}]


def test_tta_shapes_and_probabilities():
    a, _ = _members()
    x = torch.rand(5, 1, 48, 48)
    tta = make_tta(3)
    assert len(tta.views(x)) == 5  # original + flip + 3 copies
    p = tta(a, x)
    assert p.shape == (5, 7) and torch.allclose(p.sum(1), torch.ones(5), atol=1e-5)
    torch.testing.assert_close(p, make_tta(3)(a, x))  # seeded: repeatable
    p0 = make_tta(0)(a, x)  # flip only: the mean of the two single-view predictions
    single = torch.softmax(a((x - 0.5) / 0.5), 1)
    flipped = torch.softmax(a((x.flip(-1) - 0.5) / 0.5), 1)
    torch.testing.assert_close(p0, (single + flipped) / 2)
    with pytest.raises(FerkitError):
        make_tta(-1)


def test_ensemble_of_different_sizes_is_weighted_mean():
    a, b = _members()
    ens = Ensemble([a, b], FER7, weights=[3, 1], specs=_specs())
    assert ens.input_config.size == 48 and ens.input_config.channels == 3
    x = torch.rand(4, 1, 48, 48)
    pa = torch.softmax(a((x - 0.5) / 0.5), 1)
    from ferkit.data.transforms import prepare_batch

    pb = torch.softmax(b(prepare_batch(x, b.input_config)), 1)
    with torch.no_grad():
        p = ens.predict_proba(x)
        torch.testing.assert_close(p, 0.75 * pa + 0.25 * pb)
        torch.testing.assert_close(ens(x).exp(), p)  # forward: log-probabilities
    pt = ens.predict_proba(x, make_tta(2))
    assert torch.allclose(pt.sum(1), torch.ones(4), atol=1e-5)
    with pytest.raises(FerkitError):
        Ensemble([a, b], FER7, weights=[1])
    # nan and inf weights made every prediction NaN (ferkit ensemble --weights=nan,1 wrote it, exit 0)
    for bad in ([float("nan"), 1], [float("inf"), 1], [-1, 1], [0, 0]):
        with pytest.raises(FerkitError, match="finite non-negative values"):
            Ensemble([a, b], FER7, weights=bad)


def test_ensemble_predict_log_probs_matches_metrics_api(tiny_tree):
    a, b = _members()
    ens = Ensemble([a, b], FER7, specs=_specs())
    ds = build_dataset(tiny_tree, "test", a.input_config, progress=False)
    logp, y = ens.predict_log_probs(ds, batch_size=16, progress=False)
    assert logp.shape == (len(ds), 7) and torch.equal(y, torch.as_tensor(ds.targets))
    assert torch.allclose(logp.exp().sum(1), torch.ones(len(ds)), atol=1e-5)
    # The ensemble is a model too: the generic predict_log_probs gives the same numbers.
    logp2, _ = predict_log_probs(ens, ds, batch_size=16, progress=False)
    torch.testing.assert_close(logp2, logp, atol=1e-5, rtol=1e-4)
    logp_t, _ = ensemble_log_probs(ens, ds, batch_size=16, progress=False, tta_copies=2)
    assert logp_t.shape == logp.shape and not torch.allclose(logp_t, logp)


def test_ensemble_tta_equals_member_tta(tiny_tree):
    """TTA inside an ensemble is each member's TTA, averaged: a model ensembled with
    itself scores exactly like the model alone with the same TTA (the check behind the
    ensemble + TTA row of docs/transfer.md)."""
    a, b = _members()
    ds = build_dataset(tiny_tree, "test", a.input_config, progress=False)
    single, _ = predict_log_probs(a, ds, batch_size=16, progress=False, tta=make_tta(3))
    twice, _ = ensemble_log_probs(Ensemble([a, a], FER7), ds, batch_size=16, progress=False, tta_copies=3)
    torch.testing.assert_close(twice, single, atol=1e-5, rtol=1e-4)
    # Two different members: the mean of their own TTA probabilities.
    pb, _ = predict_log_probs(b, ds, batch_size=16, progress=False, tta=make_tta(3))
    both, _ = ensemble_log_probs(Ensemble([a, b], FER7, specs=_specs()), ds, batch_size=16, progress=False,
                                 tta_copies=3)
    torch.testing.assert_close(both.exp(), (single.exp() + pb.exp()) / 2, atol=1e-5, rtol=1e-4)


def test_saved_ensemble_reloads_identically(tmp_path):
    a, b = _members()
    ens = Ensemble([a, b], FER7, weights=[1, 2], specs=_specs())
    path = tmp_path / "ens.pt"
    ens.save(path)
    assert is_ensemble_file(path)
    back = load_ensemble(path)
    assert [m.model_name for m in back.members] == ["boulis-baseline", "resnet50"]
    assert back.members[1].input_config == b.input_config
    x = torch.rand(3, 1, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(back.predict_proba(x), ens.predict_proba(x), atol=0, rtol=0)
    tta = make_tta(2)
    torch.testing.assert_close(
        back.predict_proba(x, tta), ens.predict_proba(x, tta), atol=0, rtol=0
    )
    # load_checkpoint is not responsible for ensembles: it says so instead of mis-loading
    with pytest.raises(FerkitError):
        load_checkpoint(path)
    with pytest.raises(FerkitError, match="not a ferkit ensemble"):
        slim = tmp_path / "one.pt"
        save_slim(
            a,
            {
                "model": "boulis-baseline",
                "labels": list(FER7),
                "model_kwargs": {"width": 8, "hidden": 16},
            },
            slim,
        )
        load_ensemble(slim)


def test_from_loaded_flattens_and_checks_labels(tmp_path):
    a, b = _members()
    Ensemble([a, b], FER7, specs=_specs()).save(tmp_path / "ab.pt")
    slim = tmp_path / "a.pt"
    save_slim(
        a,
        {
            "model": "boulis-baseline",
            "labels": list(FER7),
            "model_kwargs": {"width": 8, "hidden": 16},
        },
        slim,
    )
    ens = Ensemble.from_checkpoints([str(tmp_path / "ab.pt"), str(slim)], weights=[2, 1])
    assert len(ens) == 3
    torch.testing.assert_close(ens.weights, torch.tensor([1 / 3, 1 / 3, 1 / 3]))
    other = tmp_path / "six.pt"
    c = create_model("boulis-baseline", num_classes=6, width=8, hidden=16)
    save_slim(
        c,
        {
            "model": "boulis-baseline",
            "labels": list(FER7[:6]),
            "model_kwargs": {"width": 8, "hidden": 16},
        },
        other,
    )
    with pytest.raises(FerkitError, match="share one label set"):
        Ensemble.from_checkpoints([str(slim), str(other)])


def _cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "ferkit", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
        timeout=300,
    )


@pytest.mark.slow  # five CLI subprocesses (torch import each): ~30 s on a free 2-core CPU
def test_cli_ensemble_evaluate_and_compare(tmp_path, tiny_tree):
    a, b = _members()
    pa, pb = tmp_path / "a.pt", tmp_path / "b.pt"
    save_slim(
        a,
        {
            "model": "boulis-baseline",
            "labels": list(FER7),
            "model_kwargs": {"width": 8, "hidden": 16},
        },
        pa,
    )
    save_slim(b, {"model": "resnet50", "labels": list(FER7), "model_kwargs": {"hidden": [8]}}, pb)
    out = tmp_path / "ens.pt"
    r = _cli("ensemble", str(pa), str(pb), "--out", str(out), "--weights", "1,1")
    assert r.returncode == 0, r.stderr
    assert "2 member(s)" in r.stderr
    r = _cli("ensemble", str(pa), str(pb), "--out", str(out), "--weights", "1")
    assert r.returncode == 2 and "--weights" in r.stderr
    # evaluating the one file == evaluating the two checkpoints together
    r1 = _cli(
        "evaluate", str(out), "--data", str(tiny_tree), "--json", "--no-progress", "--tta", "1"
    )
    r2 = _cli(
        "evaluate",
        str(pa),
        str(pb),
        "--data",
        str(tiny_tree),
        "--json",
        "--no-progress",
        "--tta",
        "1",
    )
    assert r1.returncode == 0, r1.stderr
    assert r2.returncode == 0, r2.stderr
    j1, j2 = json.loads(r1.stdout), json.loads(r2.stdout)
    assert j1["confusion"] == j2["confusion"] and j1["loss"] == pytest.approx(j2["loss"], abs=1e-6)
    r = _cli("compare", str(pa), str(out), "--data", str(tiny_tree), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "disgust" in r.stdout and "accuracy" in r.stdout and "d(2-1)" in r.stdout


def test_misclassification_table_side_by_side():
    labels = ["a", "b"]
    y = torch.tensor([0, 0, 1, 1])
    good = torch.log(torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.2, 0.8]]))
    bad = torch.log(torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.9, 0.1], [0.2, 0.8]]))
    table = misclassification_table(
        {
            "ref": classification_report(bad, y, labels),
            "new": classification_report(good, y, labels),
        }
    )
    lines = table.splitlines()
    row_a = next(line for line in lines if line.startswith("a "))
    assert "50.0%" in row_a and "0.0%" in row_a and "-50.0" in row_a
    acc = next(line for line in lines if line.startswith("accuracy"))
    assert "50.00%" in acc and "100.00%" in acc and "+50.00" in acc


def test_evaluate_tta_mirror_only_and_preset(tmp_path, tiny_tree, capsys):
    """`--tta 0` averages the image and its mirror; `--tta-preset` picks the copies' warps."""
    from ferkit.cli import main

    a, _ = _members()
    pa = tmp_path / "a.pt"
    spec = {"model": "boulis-baseline", "labels": list(FER7), "model_kwargs": {"width": 8, "hidden": 16}}
    save_slim(a, spec, pa)
    ds = build_dataset(tiny_tree, "test", a.input_config, progress=False)

    def run(*extra):
        argv = ["evaluate", str(pa), "--data", str(tiny_tree), "--json", "--no-progress", *extra]
        assert main(argv) == 0
        return json.loads(capsys.readouterr().out)

    plain, mirror = run(), run("--tta", "0")
    assert plain["tta"] is None and mirror["tta"] == {"copies": 0, "preset": "boulis"}
    want, _ = predict_log_probs(a, ds, batch_size=256, progress=False, tta=make_tta(0))
    ref = classification_report(want, torch.as_tensor(ds.targets), list(FER7))
    assert mirror["loss"] == pytest.approx(ref["loss"], abs=1e-5) and mirror["loss"] != plain["loss"]
    light = run("--tta", "2", "--tta-preset", "light")
    boulis = run("--tta", "2")
    assert light["tta"]["preset"] == "light" and light["loss"] != boulis["loss"]
    with pytest.raises(SystemExit) as e:  # refused when parsed, whatever the --tta mode
        main(["evaluate", str(pa), "--data", str(tiny_tree), "--tta", "1", "--tta-preset", "nope"])
    assert e.value.code == 2 and "unknown preset 'nope'" in capsys.readouterr().err
