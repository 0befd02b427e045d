"""An ensemble file (``ferkit ensemble``) is a model wherever a command or the API takes one:
predict (torch and onnxruntime), export (ONNX and slim torch), calibrate, robustness, serve
and as a distillation teacher. Before, ``evaluate`` and ``compare`` read it and everything
that loaded with ``load_checkpoint`` refused it ("not a ferkit checkpoint (no model spec
inside)"), so a shipped ensemble could not have been used outside evaluation."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch", reason="needs the train extra (PyTorch)")
import torch
from conftest import write_class_tree
from PIL import Image

from ferkit.cli import main
from ferkit.labels import FER7
from ferkit.models.checkpoint import load_model_any, save_slim
from ferkit.models.ensemble import Ensemble
from ferkit.models.registry import create_model


@pytest.fixture(scope="module")
def ens_file(tmp_path_factory):
    """Two small members of other sizes (48x48 gray, 40-from-48 crops of vgg-fer), saved as
    slim files and combined by the command users run."""
    d = tmp_path_factory.mktemp("ens")
    torch.manual_seed(0)
    files = []
    for i, (name, kw) in enumerate([("boulis-baseline", {"width": 8, "hidden": 16}),
                                    ("vgg-fer", {"width": 8, "hidden": 16})]):
        m = create_model(name, **kw).eval()
        f = d / f"m{i}.pt"
        save_slim(m, {"model": name, "labels": FER7, "model_kwargs": kw}, f)
        files.append(str(f))
    out = d / "ens.pt"
    assert main(["ensemble", *files, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    return write_class_tree(tmp_path_factory.mktemp("faces") / "data", n=4)


def _photo(tmp_path):
    path = tmp_path / "face.png"
    Image.fromarray((np.random.default_rng(0).random((48, 48)) * 255).astype(np.uint8)).save(path)
    return path


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_predict_runs_an_ensemble_file_on_both_backends(ens_file, tmp_path, backend, capsys):
    from ferkit.inference.recognizer import Recognizer

    rec = Recognizer.from_pretrained(ens_file, backend=backend, detector="none")
    probs = rec.classify_faces([np.asarray(Image.open(_photo(tmp_path)))])
    assert probs.shape == (1, 7) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert rec.model_name == "ensemble"
    code = main(["predict", str(_photo(tmp_path)), "--model", str(ens_file), "--backend", backend,
                 "--detector", "none", "--json"])
    assert code == 0, capsys.readouterr().err


def test_export_an_ensemble_to_onnx_and_slim_torch_keeps_views_and_temperature(ens_file, tmp_path, capsys):
    onnx_out, pt_out = tmp_path / "ens.onnx", tmp_path / "ens-half.pt"
    assert main(["export", str(ens_file), "--out", str(onnx_out)]) == 0
    assert "ok" in capsys.readouterr().err  # onnxruntime agrees with PyTorch to 1e-4
    assert main(["export", str(ens_file), "--format", "torch", "--half", "--out", str(pt_out),
                 "--tta", "mirror"]) == 0
    capsys.readouterr()
    ens, spec = load_model_any(pt_out)
    assert isinstance(ens, Ensemble) and len(ens) == 2 and spec["model"] == "ensemble"
    assert ens.input_config.tta == "mirror"
    assert pt_out.stat().st_size < 0.6 * ens_file.stat().st_size  # fp16 members


def test_calibrate_an_ensemble_stores_its_temperature(ens_file, faces, tmp_path, capsys):
    out = tmp_path / "ens-cal.pt"
    assert main(["calibrate", str(ens_file), "--data", str(faces), "--split", "train", "--out", str(out),
                 "--no-progress"]) == 0, capsys.readouterr().err
    ens, _ = load_model_any(out)
    t = ens.input_config.temperature
    assert t != 1.0 and 0.05 <= t <= 20
    # evaluation applies it: the ensemble's averaged probabilities at temperature t
    from ferkit.evaluation.evaluate import evaluate_checkpoints

    rep = evaluate_checkpoints([str(out)], faces, "test", progress=False)
    rep1 = evaluate_checkpoints([str(ens_file)], faces, "test", progress=False)
    assert rep["accuracy"] == rep1["accuracy"] and rep["loss"] != pytest.approx(rep1["loss"])


def test_robustness_and_serve_take_an_ensemble(ens_file, faces, tmp_path):
    from ferkit.evaluation.robustness import robustness_sweep

    rep = robustness_sweep(str(ens_file), faces, split="test", distortions=["random-gray"], severities=[1],
                           progress=False)
    assert 0 <= rep["clean"] <= 1
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from ferkit.serve.app import create_app

    client = TestClient(create_app(model=str(ens_file), detector="none"))
    with client:
        r = client.post("/v1/predict", files={"file": ("f.png", _photo(tmp_path).read_bytes(), "image/png")})
    assert r.status_code == 200, r.text
    assert r.json()["model"]["name"] == str(ens_file)


def test_an_ensemble_teaches_a_student(ens_file, faces, tmp_path):
    from ferkit.training.train import train

    run = train("boulis-baseline", faces, str(tmp_path), overrides={
        "epochs": 1, "model_kwargs": {"width": 8, "hidden": 16}, "teacher": str(ens_file),
        "batch_size": 8}, device="cpu", progress=False)
    assert (run / "best.ckpt").is_file()


def test_an_ensemble_file_loads_without_the_evaluation_layer(ens_file):
    code = ("import sys; from ferkit.models.checkpoint import load_model_any; "
            f"m, s = load_model_any({str(ens_file)!r}); "
            "print(s['model'], any(k.startswith('ferkit.evaluation') for k in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert r.stdout.split() == ["ensemble", "False"], r.stderr[-800:]


def test_an_ensemble_too_big_for_one_file_is_written_as_several(ens_file, tmp_path, capsys):
    """--max-file-mb: the shipped `accurate` ensemble must have no file over 16 MiB; here a limit
    of 0.2 MiB on two small members. ONNX weights go to OUT.dataK beside the graph, the torch
    form to one file per member; both load and predict like the single file."""
    from ferkit.inference.recognizer import Recognizer

    limit = int(0.2 * 2**20)
    onnx_out = tmp_path / "onnx" / "ens.onnx"
    assert main(["export", str(ens_file), "--out", str(onnx_out), "--max-file-mb", "0.2"]) == 0
    assert "ok" in capsys.readouterr().err  # parity through the external data files
    files = sorted(onnx_out.parent.iterdir())
    assert len(files) >= 3 and all(f.stat().st_size <= limit for f in files)
    face = [np.asarray(Image.open(_photo(tmp_path)))]
    want = Recognizer.from_pretrained(ens_file, backend="torch", detector="none").classify_faces(face)
    got = Recognizer.from_pretrained(onnx_out, detector="none").classify_faces(face)
    np.testing.assert_allclose(got, want, atol=1e-4)

    pt_out = tmp_path / "torch" / "ens.pt"
    assert main(["export", str(ens_file), "--format", "torch", "--out", str(pt_out), "--max-file-mb", "0.2",
                 "--half"]) == 0
    assert "in 3 files" in capsys.readouterr().out
    assert sorted(f.name for f in pt_out.parent.iterdir()) == ["ens.m0.pt", "ens.m1.pt", "ens.pt"]
    got = Recognizer.from_pretrained(pt_out, backend="torch", detector="none").classify_faces(face)
    np.testing.assert_allclose(got, want, atol=2e-3)  # fp16 members
    (pt_out.parent / "ens.m1.pt").unlink()
    assert main(["predict", str(_photo(tmp_path)), "--model", str(pt_out), "--detector", "none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "member 1 (vgg-fer): its file" in err[0] and "ens.m1.pt is missing" in err[0]


def test_max_file_mb_is_checked(ens_file, tmp_path, capsys):
    for bad in ("0", "-1", "nan", "x"):
        with pytest.raises(SystemExit) as e:
            main(["export", str(ens_file), "--out", str(tmp_path / "e.onnx"), "--max-file-mb", bad])
        assert e.value.code == 2
    capsys.readouterr()
    # one member alone over the limit: a one-line error, not a file silently too big
    assert main(["export", str(ens_file), "--format", "torch", "--out", str(tmp_path / "e.pt"),
                 "--max-file-mb", "0.001"]) == 2
    assert "MiB, over --max-file-mb 0.001; try --half" in capsys.readouterr().err
