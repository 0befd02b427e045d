"""ONNX / torch export: parity with PyTorch, metadata, dynamic batch, the export command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="exporting needs the train extra (PyTorch, onnx)")
pytest.importorskip("onnx", reason="exporting needs the train extra (PyTorch, onnx)")

from test_recognizer import ASTRONAUT, make_slim

from ferkit.cli import main
from ferkit.errors import FerkitError
from ferkit.inference.export import export_model, onnx_session
from ferkit.inference.recognizer import Recognizer
from ferkit.labels import FER7
from ferkit.models.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def slim(tmp_path_factory):
    # Seed 3 gives a net whose probabilities are far from uniform, so parity is a real check.
    return make_slim(tmp_path_factory.mktemp("exp") / "model.pt", seed=3)


@pytest.fixture(scope="module")
def onnx_file(slim):
    res = export_model(slim, "onnx", slim.with_name("model.onnx"))
    assert res["max_abs_diff"] <= 1e-4
    return Path(res["path"])


def test_onnx_file_carries_labels_and_input_config(onnx_file):
    sess, meta = onnx_session(onnx_file)
    assert meta["labels"] == list(FER7) and meta["model"] == "boulis-baseline"
    assert meta["input_config"]["size"] == 48 and meta["input_config"]["channels"] == 1
    assert meta["version"].startswith("boulis-baseline-")
    # The batch axis is dynamic: 1 and 37 faces both run.
    for n in (1, 37):
        out = sess.run(None, {"input": np.zeros((n, 1, 48, 48), np.float32)})[0]
        assert out.shape == (n, 7)


def test_onnx_probabilities_match_pytorch_within_1e4(slim, onnx_file):
    rt = Recognizer.from_pretrained(slim)
    ro = Recognizer.from_pretrained(onnx_file, backend="onnx")
    assert ro.backend == "onnx" and ro.labels == rt.labels and ro.version == rt.version
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (64, 48, 48), dtype=np.uint8)
    pt, po = rt.classify_faces(crops), ro.classify_faces(crops)
    assert np.abs(pt - po).max() <= 1e-4
    assert pt.std() > 1e-3  # the check is not vacuous (not all-uniform outputs)
    # End to end on a real photo, detector included.
    ft, fo = rt.predict(ASTRONAUT), ro.predict(ASTRONAUT)
    assert [f.box for f in ft] == [f.box for f in fo] and len(ft) == 1
    assert max(abs(ft[0].scores[k] - fo[0].scores[k]) for k in FER7) <= 1e-4


def test_onnx_backend_from_a_torch_checkpoint_converts_in_memory(slim):
    ro = Recognizer.from_pretrained(slim, backend="onnx")
    rt = Recognizer.from_pretrained(slim)
    x = np.random.default_rng(1).integers(0, 256, (8, 48, 48), dtype=np.uint8)
    assert np.abs(ro.classify_faces(x) - rt.classify_faces(x)).max() <= 1e-4


def test_onnx_file_needs_the_onnx_backend(onnx_file):
    with pytest.raises(FerkitError, match="backend"):
        Recognizer.from_pretrained(onnx_file, backend="torch")


def test_export_cli_onnx_and_torch(slim, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", str(slim), "--format", "onnx", "--out", str(out)]) == 0
    assert out.is_file() and "onnxruntime vs PyTorch" in capsys.readouterr().err
    half = tmp_path / "half.pt"
    assert (
        main(["export", str(slim), "--format", "torch", "--half", "--out", str(half), "--json"])
        == 0
    )
    res = json.loads(capsys.readouterr().out)
    assert res["path"] == str(half) and res["bytes"] < slim.stat().st_size * 0.6
    model, spec = load_checkpoint(half)  # fp16 file loads back as a float32 model
    assert spec["labels"] == list(FER7) and next(model.parameters()).dtype.is_floating_point


def test_export_cli_errors(slim, tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing.ckpt")]) == 2
    assert "no such model file" in capsys.readouterr().err
    assert main(["export", str(slim), "--format", "onnx", "--half"]) == 2
    assert main(["export", str(slim), "--format", "torch", "--out", str(slim)]) == 2
    assert "overwrite" in capsys.readouterr().err


def test_a_half_model_keeps_every_weight_in_fp16_in_onnx(tmp_path):
    """BatchNorm is not folded into the convolutions of an fp16 file's graph (folding made
    the conv weights fp32 values: the shipped default's ONNX was 8.9 MB for 6.6 MB of fp16
    weights); onnxruntime fuses it at load, and the answers stay within 1e-4."""
    import onnx
    import torch
    from onnx import TensorProto

    from ferkit.models import create_model
    from ferkit.models.checkpoint import save_slim

    torch.manual_seed(0)
    model = create_model("vgg-fer", num_classes=7, width=8).eval()
    for m in model.modules():  # BatchNorm statistics that are not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    src = tmp_path / "half.pt"
    save_slim(model, {"model": "vgg-fer", "model_kwargs": {"width": 8}, "labels": list(FER7)}, src, half=True)
    res = export_model(src, "onnx", tmp_path / "half.onnx")
    assert res["max_abs_diff"] <= 1e-4
    proto = onnx.load(res["path"])
    fp32 = [i.name for i in proto.graph.initializer if i.data_type == TensorProto.FLOAT and np.prod(i.dims) >= 256]
    assert not fp32, f"weights stored in fp32: {fp32[:4]}"
    n_params = sum(p.numel() for p in model.parameters())
    assert Path(res["path"]).stat().st_size < 2 * n_params * 1.1 + 50_000


def test_the_shipped_int8_model_is_smaller_than_the_float_one():
    """default-int8 is quantized from the unfolded graph: FC weights int8, convolutions fp16
    (from the folded graph they were fp32, and the int8 file outgrew the float one: 21.9 MB
    against 15.7 for the full-width default)."""
    import onnx
    from onnx import TensorProto

    from ferkit.models.pretrained import shipped_path

    int8, flt = shipped_path("default-int8", "onnx"), shipped_path("default", "onnx")
    assert int8.stat().st_size < flt.stat().st_size
    proto = onnx.load(str(int8))
    kinds = {i.data_type for i in proto.graph.initializer if np.prod(i.dims) >= 4096}
    assert TensorProto.INT8 in kinds and TensorProto.FLOAT16 in kinds and TensorProto.FLOAT not in kinds
