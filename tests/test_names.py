"""One name per thing: the shipped model is `default` everywhere a user meets it, detectors
are reported by their registered names, faces are numbered the same in every format."""

from __future__ import annotations

import importlib.util

import pytest
from test_recognizer import stand_in_model

from ferkit.cli import main
from ferkit.inference.faces import get_detector, list_detectors
from ferkit.inference.pretrained import list_pretrained


@pytest.mark.parametrize("name", [d for d in list_detectors() if d != "mtcnn"])
def test_detectors_are_reported_by_their_registered_name(name):
    assert get_detector(name).name == name  # 'haar-full' was reported as 'haar'


def test_predict_summary_names_the_detector_asked_for(tmp_path, capsys):
    from ferkit.inference.recognizer import Recognizer

    slim = stand_in_model(tmp_path / "tiny.pt")
    assert main(["predict", "--demo", "--model", str(slim), "--detector", "haar-full",
                 "--no-progress"]) == 0
    summary = capsys.readouterr().err.strip().splitlines()[-1]
    assert "detector haar-full]" in summary
    version = Recognizer.from_pretrained(str(slim)).version
    assert f"model {slim} (version {version})" in summary  # the name it was loaded by


@pytest.fixture(scope="module")
def shipped():
    if "default" not in list_pretrained():
        pytest.skip("the shipped model's files are not installed")
    return "default"


def test_the_shipped_model_is_called_default_everywhere(shipped, capsys):
    from ferkit.inference.recognizer import Recognizer

    rec = Recognizer.from_pretrained(shipped)
    assert (rec.name, rec.model_name) == ("default", "vgg-fer")
    assert rec.version.startswith("vgg-fer-")  # the weights' identity, not a name
    assert main(["predict", "--demo", "--no-progress"]) == 0
    assert f"[model default (version {rec.version})," in capsys.readouterr().err
    if importlib.util.find_spec("fastapi") is None:
        return
    from fastapi.testclient import TestClient

    from ferkit.serve.app import create_app

    with TestClient(create_app(rec)) as c:
        (info,) = c.get("/v1/models").json()["models"]
        assert c.get("/v1/models").json()["default"] == "default"
        assert c.get("/healthz").json()["model"] == "default"
    assert (info["name"], info["architecture"], info["version"]) == ("default", "vgg-fer", rec.version)
    assert info["detector"] == "haar"  # "default" resolved to the registered detector


def test_export_of_the_shipped_model_is_named_after_it(shipped, tmp_path, monkeypatch):
    pytest.importorskip("torch", reason="export needs the train extra")
    from ferkit.inference.export import export_model

    monkeypatch.chdir(tmp_path)
    out = export_model(shipped, "torch")
    assert out["path"] == "default.pt" and (tmp_path / "default.pt").is_file()  # was ferkit-default.pt


def test_models_lists_the_shipped_models_by_the_names_it_reports(shipped, capsys):
    from ferkit.inference.recognizer import Recognizer

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    rec = Recognizer.from_pretrained(shipped)
    assert "shipped models (--model NAME):" in out  # users could not discover 'default' before
    assert f"  default        architecture={rec.model_name:<16} version={rec.version}" in out


def test_model_facts_say_what_the_shipped_meta_records():
    from ferkit.commands.listing import model_facts

    meta = {"publictest": {"plain": 0.6512, "tta": 0.6601, "tta_mode": "ten-crop"}, "gflop": 0.172,
            "speed": {"crops_per_s": 2900.4, "cpu": "AMD EPYC", "threads": 2}}
    assert model_facts(meta, 6_600_000, "ten-crop") == (
        "FER2013 PublicTest 65.1% (66.0% ten-crop), 6.6 MB, 0.17 GFLOP/face, 2,900 crops/s (AMD EPYC, 2 threads)")
    assert model_facts({}, 9_569_373, None) == "9.6 MB"  # nothing recorded: the size alone
    # a one-view model (tta_mode none) states its one figure once, not "63.3% (63.3% none)"
    one_view = {"publictest": {"plain": 0.633, "tta": 0.633, "tta_mode": "none"}}
    assert model_facts(one_view, 146_377, None) == "FER2013 PublicTest 63.3% (one view), 0.1 MB"
