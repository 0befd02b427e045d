"""The shipped ONNX files: self-describing, in step with their ``.pt``, and equal to it.

The metadata and staleness checks need only onnxruntime (they run in the light CI
install); the parity and re-export checks need PyTorch and skip without it.
"""

from __future__ import annotations

import numpy as np
import pytest

from ferkit.inference import pretrained
from ferkit.inference.onnx_runtime import onnx_session
from ferkit.labels import FER7
from ferkit.models.input_config import InputConfig

ASTRONAUT = pretrained.WEIGHTS_DIR.parent / "assets" / "astronaut.png"
SHIPPED = [n for n in pretrained.PRETRAINED if pretrained.shipped_path(n, "torch").is_file()]
#: Every shipped ONNX file, with the .pt it is made from (int8 models: their source's).
ONNX_SHIPPED = {
    n: pretrained.shipped_path(pretrained.QUANTIZED.get(n, n), "torch")
    for n in pretrained.PRETRAINED
    if pretrained.shipped_path(pretrained.QUANTIZED.get(n, n), "torch").is_file()
}

pytestmark = pytest.mark.skipif(not SHIPPED, reason="shipped weights not installed")

#: What each shipped float model is: architecture, input side, the face side it is cropped
#: from (None: the whole face), and the test-time views its file asks for.
EXPECTED = {
    "default": ("vgg-fer", 40, 48, "mirror"),
    "fast": ("mini-xception", 48, None, None),
}


def _sha256(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", sorted(ONNX_SHIPPED))
def test_every_shipped_pt_has_an_onnx_exported_from_it(name):
    onnx_path = pretrained.shipped_path(name, "onnx")
    assert onnx_path.is_file(), f"run 'ferkit export --shipped' to create {onnx_path}"
    sess, meta = onnx_session(onnx_path)
    raw = sess.get_modelmeta().custom_metadata_map
    # The .onnx records the hash of the .pt it came from: a replaced .pt without a
    # re-export fails here, in every install, torch or not.
    assert raw["ferkit.source_sha256"] == _sha256(ONNX_SHIPPED[name]), (
        f"{onnx_path} is stale: run 'ferkit export --shipped'"
    )
    assert meta["labels"] == list(FER7)
    cfg = InputConfig.from_dict(meta["input_config"])
    arch, size, crop_from, tta = EXPECTED[pretrained.QUANTIZED.get(name, name)]
    assert (cfg.size, cfg.crop_from, cfg.channels) == (size, crop_from, 1)
    assert (cfg.mean, cfg.std) == ((0.5,), (0.5,))
    assert cfg.tta == tta and cfg.temperature != 1.0  # the recorded views and calibration travel too
    assert meta["model"] == arch
    suffix = "-int8" if name in pretrained.QUANTIZED else ""
    assert meta["version"] == meta["meta"]["version"] + suffix
    assert ("ferkit.quantization" in raw) == bool(suffix)
    # measured figures belong to the float model: the int8 file does not claim them
    assert ("publictest" in meta["meta"]) == (not suffix)
    # The batch axis is dynamic and the output is one logit per label.
    for n in (1, 5):
        assert sess.run(None, {"input": np.zeros((n, 1, cfg.size, cfg.size), np.float32)})[0].shape == (n, 7)


def test_every_shipped_model_is_described_here():
    """A new shipped model gets its line in EXPECTED (and so its checks above)."""
    assert set(pretrained.PRETRAINED) - set(pretrained.QUANTIZED) <= set(EXPECTED)


def test_default_resolves_to_onnx_for_inference_and_pt_for_torch():
    assert pretrained.resolve_pretrained("default", prefer="onnx").suffix == ".onnx"
    assert pretrained.resolve_pretrained("default").suffix == ".pt"  # training, evaluation


def test_resolve_falls_back_to_the_installed_file(monkeypatch, tmp_path):
    (tmp_path / "default.pt").write_bytes(b"x")
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path)
    assert pretrained.resolve_pretrained("default", prefer="onnx") == tmp_path / "default.pt"
    (tmp_path / "default.pt").unlink()
    (tmp_path / "default.onnx").write_bytes(b"x")
    assert pretrained.resolve_pretrained("default", prefer="torch") == tmp_path / "default.onnx"
    assert pretrained.list_pretrained() == ["default"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_onnx_matches_the_pt_within_1e4(name):
    pytest.importorskip("torch", reason="parity needs the train extra (PyTorch)")
    from ferkit.inference.recognizer import Recognizer

    rt = Recognizer.from_pretrained(name, backend="torch")
    ro = Recognizer.from_pretrained(name)  # auto on the CPU: the shipped .onnx
    assert (rt.backend, ro.backend) == ("torch", "onnx")
    assert ro.labels == rt.labels and ro.version == rt.version
    assert ro.input_config == rt.input_config
    crops = np.random.default_rng(0).integers(0, 256, (64, 48, 48), dtype=np.uint8)
    pt, po = rt.classify_faces(crops), ro.classify_faces(crops)
    assert np.abs(pt - po).max() <= 1e-4
    assert pt.max(1).mean() > 0.3  # a trained model, not near-uniform outputs
    ft, fo = rt.predict(ASTRONAUT), ro.predict(ASTRONAUT)
    assert [f.box for f in ft] == [f.box for f in fo] and len(ft) == 1
    assert max(abs(ft[0].scores[k] - fo[0].scores[k]) for k in FER7) <= 1e-4


def test_int8_model_is_smaller_and_agrees_with_the_float_model():
    if "default-int8" not in ONNX_SHIPPED:
        pytest.skip("default-int8 not shipped")
    from ferkit.inference.recognizer import Recognizer

    f32, i8 = Recognizer.from_pretrained("default"), Recognizer.from_pretrained("default-int8")
    assert (f32.backend, i8.backend) == ("onnx", "onnx") and i8.version.endswith("-int8")
    size = pretrained.shipped_path("default-int8", "onnx").stat().st_size
    # only the fully connected weights become int8 (0.76x the file for vgg-fer width 32,
    # whose convolutions stay float; 0.51x for the boulis-baseline shipped before)
    assert size < 0.85 * pretrained.shipped_path("default", "onnx").stat().st_size
    (a,), (b,) = f32.predict(ASTRONAUT), i8.predict(ASTRONAUT)
    assert a.box == b.box and a.label == b.label == "happy"
    assert max(abs(a.scores[k] - b.scores[k]) for k in FER7) < 0.02
    crops = np.random.default_rng(0).integers(0, 256, (256, 48, 48), dtype=np.uint8)
    pa, pb = f32.classify_faces(crops), i8.classify_faces(crops)
    assert (pa.argmax(1) == pb.argmax(1)).mean() >= 0.95
    assert np.abs(pa - pb).mean() < 0.01


@pytest.mark.slow
def test_int8_model_keeps_publictest_accuracy(fer2013_dir):
    """Every 5th PublicTest face: int8 within 0.3 points of the float model (issue 18's rule)."""
    if "default-int8" not in ONNX_SHIPPED:
        pytest.skip("default-int8 not shipped")
    from PIL import Image

    from ferkit.inference.recognizer import Recognizer

    f32, i8 = Recognizer.from_pretrained("default"), Recognizer.from_pretrained("default-int8")
    xs, ys = [], []
    for k, lab in enumerate(f32.labels):
        for f in sorted((fer2013_dir / "test" / lab).glob("PublicTest_*"))[::5]:
            xs.append(np.asarray(Image.open(f).convert("L")))
            ys.append(k)
    x, y = np.stack(xs), np.asarray(ys)
    acc32 = (f32.classify_faces(x).argmax(1) == y).mean()
    acc8 = (i8.classify_faces(x).argmax(1) == y).mean()
    assert len(y) > 700 and acc32 > 0.5
    assert acc8 >= acc32 - 0.003, (acc32, acc8)


def test_export_shipped_regenerates_a_model_the_same_way(monkeypatch, tmp_path, capsys):
    pytest.importorskip("torch", reason="exporting needs the train extra")
    pytest.importorskip("onnx", reason="exporting needs the train extra")
    from test_recognizer import make_slim

    from ferkit.cli import main

    make_slim(tmp_path / "default.pt", seed=3)
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path)
    assert main(["export", "--shipped"]) == 0
    assert "max |probability difference|" in capsys.readouterr().out
    # The int8 variant is made from the same .pt, in the same run.
    _, meta8 = onnx_session(tmp_path / "default-int8.onnx")
    assert meta8["version"].endswith("-int8") and meta8["labels"] == list(FER7)
    sess, meta = onnx_session(tmp_path / "default.onnx")
    raw = sess.get_modelmeta().custom_metadata_map
    assert raw["ferkit.source_sha256"] == _sha256(tmp_path / "default.pt")
    assert meta["version"].startswith("boulis-baseline-")
    assert main(["export", "--shipped", "nonexistent"]) == 2
    assert main(["export"]) == 2  # neither a model nor --shipped
    assert not list(tmp_path.glob("*.tmp"))


def test_a_shipped_ensemble_too_big_for_one_file_ships_as_several(monkeypatch, tmp_path):
    """export --shipped keeps every file of a shipped model under SHIPPED_MAX_MB (16 MiB is the
    limit): an ensemble's graph gets its weights in files beside it, moved in together."""
    pytest.importorskip("torch", reason="exporting needs the train extra")
    pytest.importorskip("onnx", reason="exporting needs the train extra")
    from test_recognizer import make_slim

    from ferkit.inference import export
    from ferkit.inference.recognizer import Recognizer
    from ferkit.models.ensemble import Ensemble

    members = [make_slim(tmp_path / f"m{i}.pt", seed=i) for i in range(3)]
    Ensemble.from_checkpoints([str(m) for m in members]).save(tmp_path / "accurate.pt", half=True,
                                                                member_files=True)
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setitem(pretrained.PRETRAINED, "accurate", "accurate")
    monkeypatch.setattr(export, "SHIPPED_MAX_MB", 3)
    (res,) = export.export_shipped(["accurate"])
    files = sorted(f.name for f in tmp_path.glob("accurate.onnx*"))
    assert files[0] == "accurate.onnx" and len(files) >= 3 and res["max_abs_diff"] <= 1e-4
    assert all((tmp_path / f).stat().st_size <= 3 * 2**20 for f in files)
    assert [p for p in tmp_path.iterdir() if p.is_dir()] == []  # no scratch folder left
    rec = Recognizer.from_pretrained("accurate", detector="none")
    assert rec.model_name == "ensemble" and rec.classify_faces([np.zeros((48, 48), np.uint8)]).shape == (1, 7)


def test_fp16_weights_are_stored_as_fp16_and_compute_the_same(tmp_path):
    pytest.importorskip("torch", reason="exporting needs the train extra")
    pytest.importorskip("onnx", reason="exporting needs the train extra")
    from test_recognizer import make_slim

    from ferkit.inference.export import export_model
    from ferkit.models.checkpoint import load_checkpoint

    src = make_slim(tmp_path / "m.pt", seed=1)
    half = export_model(src, "torch", tmp_path / "half.pt", half=True)["path"]
    full = export_model(src, "onnx", tmp_path / "full.onnx")  # fp32 weights: stay fp32
    small = export_model(half, "onnx", tmp_path / "half.onnx")  # fp16-exact: stored as fp16
    assert small["max_abs_diff"] <= 1e-5
    assert small["bytes"] < 0.6 * full["bytes"]
    model, _ = load_checkpoint(half)
    import torch

    x = np.random.default_rng(0).standard_normal((4, 1, 48, 48)).astype(np.float32)
    sess, _ = onnx_session(small["path"])
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    assert np.abs(sess.run(None, {"input": x})[0] - want).max() <= 1e-4


def _with_metadata(tmp_path, **changes):
    onnx = pytest.importorskip("onnx", reason="editing ONNX files needs the onnx package")
    proto = onnx.load(str(pretrained.shipped_path("default", "onnx")))
    for p in proto.metadata_props:
        if p.key.removeprefix("ferkit.") in changes:
            p.value = changes[p.key.removeprefix("ferkit.")]
    path = tmp_path / "edited.onnx"
    onnx.save(proto, str(path))
    return path


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"labels": '["happy", "sad"]'}, "does not match its 2 labels"),
        ({"labels": "[]"}, "non-empty list"),
        ({"labels": "not json"}, "unreadable ferkit metadata"),
        ({"input_config": '{"size": 64, "channels": 1}'}, "does not match its input config"),
        ({"input_config": '{"channels": 1}'}, "unreadable ferkit metadata"),
        ({"input_config": '{"size": 48, "channels": 1, "tta": "sideways"}'}, "unreadable ferkit metadata"),
    ],
)
def test_onnx_file_whose_metadata_does_not_fit_is_a_one_line_error(tmp_path, changes, message):
    from ferkit.errors import FerkitError
    from ferkit.inference.recognizer import Recognizer

    path = _with_metadata(tmp_path, **changes)
    with pytest.raises(FerkitError, match=message) as e:
        Recognizer.from_pretrained(path)
    assert "\n" not in str(e.value)
