"""Wiranata CAE/CNN, the generic tied-weight CAE, and Liu's Awei models."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="needs the train extra (PyTorch)")
import torch
from PIL import Image
from torch import nn

from ferkit.errors import FerkitError
from ferkit.labels import FER7
from ferkit.models.registry import create_model
from ferkit.models.wiranata import mirror_autoencoder

MODELS = {  # name -> (input size, channels) small enough for a CPU test
    "wiranata-cae": (32, 1), "wiranata-cnn": (32, 1), "cae": (24, 1),
    "awei-plain": (64, 3), "awei-residual": (64, 3), "awei": (64, 3),
}


def _make(name, size, ch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # awei's "random VGG" warning
        return create_model(name, in_chans=ch, input_size=size)


@pytest.mark.parametrize("name", list(MODELS))
def test_forward_backward(name):
    size, ch = MODELS[name]
    torch.manual_seed(0)
    m = _make(name, size, ch).train()
    x = torch.rand(2, ch, size, size)
    if hasattr(m, "compute_loss"):
        loss, logits = m.compute_loss(x, torch.zeros(2, dtype=torch.long))
        assert logits is None and m(x).shape == x.shape
        rec = m(x).detach()
        assert 0.0 <= float(rec.min()) and float(rec.max()) <= 1.0  # sigmoid output
    else:
        out = m(x)
        assert out.shape == (2, 7)
        loss = out.logsumexp(1).mean()
    assert torch.isfinite(loss)
    loss.backward()
    for n, p in m.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, n


def test_tied_weights():
    torch.manual_seed(0)
    cae = create_model("wiranata-cae", input_size=32)
    convs = [m for m in cae.features if isinstance(m, nn.Conv2d)]
    # The decoder owns no convolution weights: only one bias vector per mirrored conv.
    own = [n for n, _ in cae.named_parameters() if not n.startswith("features.")]
    assert own == ["decoder_bias.0", "decoder_bias.1", "decoder_bias.2"]
    assert [b.shape[0] for b in cae.decoder_bias] == [c.in_channels for c in convs]
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in cae.modules())
    x = torch.rand(2, 1, 32, 32)
    h, trace = cae.encode(x)
    before = cae.decode(h, trace).detach().clone()
    with torch.no_grad():
        convs[0].weight.mul_(2.0)  # an encoder weight that only the decoder's last step reads here
    after = cae.decode(h, trace).detach()
    assert not torch.allclose(before, after)
    # Gradient from the reconstruction reaches the shared weight through both paths.
    cae.zero_grad()
    cae.compute_loss(x, None)[0].backward()
    assert convs[-1].weight.grad is not None and convs[-1].weight.grad.abs().sum() > 0


def test_mirror_any_conv_stack_and_odd_sizes():
    feats = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 16, 5, padding=2, stride=2), nn.ReLU(), nn.MaxPool2d(2))
    ae = mirror_autoencoder(feats)
    x = torch.rand(2, 3, 37, 37)
    assert ae(x).shape == x.shape
    assert ae.features is feats  # shared, not copied: pre-training trains this very stack
    with pytest.raises(FerkitError, match="cannot mirror"):
        mirror_autoencoder(nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1)))


def test_generic_cae_names_match_backbone_and_normalise():
    cae = create_model("cae", backbone="boulis-baseline")
    cnn = create_model("boulis-baseline")
    keys = set(cae.state_dict())
    feat_keys = {k for k in keys if k.startswith("features.")}
    assert feat_keys and feat_keys <= set(cnn.state_dict())  # every encoder tensor fits the classifier
    assert keys - feat_keys == {"decoder_bias.0", "decoder_bias.1", "decoder_bias.2", "decoder_bias.3"}
    assert cae.model_name == "cae" and cae.input_config.mean == (0.0,)
    assert float(cae.norm_mean) == 0.5 and float(cae.norm_std) == 0.5  # boulis' normalisation
    with pytest.raises(FerkitError, match="classifier"):
        create_model("cae", backbone="cae")


def test_cnn_init_from_cae_checkpoint(tmp_path):
    torch.manual_seed(1)
    cae = create_model("wiranata-cae", input_size=32)
    ck = tmp_path / "cae.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in cae.state_dict().items()}}, ck)
    cnn = create_model("wiranata-cnn", input_size=32, cae_checkpoint=str(ck))
    for k, v in cae.features.state_dict().items():
        assert torch.equal(cnn.features.state_dict()[k], v), k
    fresh = create_model("wiranata-cnn", input_size=32)
    assert not torch.equal(fresh.features[0].weight, cae.features[0].weight)
    with pytest.raises(FerkitError):
        create_model("wiranata-cnn", input_size=32, cae_checkpoint=str(tmp_path / "missing.ckpt"))


def test_awei_vgg_frozen_and_gets_no_gradient():
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="randomly initialised"):
        m = create_model("awei", input_size=64)
    m.train()
    assert not m.vgg.training and m.fc.training  # the guide stays in eval mode
    assert all(not p.requires_grad for p in m.vgg.parameters())
    out = m(torch.rand(2, 3, 64, 64))
    out.sum().backward()
    assert all(p.grad is None for p in m.vgg.parameters())
    assert m.guide_proj.weight.grad is not None and m.jump[0].weight.grad is not None
    # The ablations really lack their parts.
    plain, res = create_model("awei-plain", input_size=64), create_model("awei-residual", input_size=64)
    assert plain.jump is None and plain.vgg is None and res.jump is not None and res.vgg is None
    with pytest.raises(FerkitError, match="divisible by 32"):
        create_model("awei-plain", input_size=48)


def test_awei_vgg_weights_from_local_file(tmp_path):
    from torchvision.models import vgg as tv_vgg

    torch.manual_seed(3)
    feats = tv_vgg.make_layers(tv_vgg.cfgs["D"])
    path = tmp_path / "vgg16.pth"
    torch.save({f"features.{k}": v for k, v in feats.state_dict().items()}, path)
    m = create_model("awei", input_size=64, weights=str(path))
    assert torch.equal(m.vgg[0].weight, feats[0].weight)
    with pytest.raises(FerkitError):
        create_model("awei", input_size=64, weights=str(tmp_path / "nope.pth"))


def _write_kdef(root: Path, subjects=("F01", "M01", "F02", "M02", "F03")):
    rng = np.random.default_rng(0)
    from ferkit.data.kdef import EMOTIONS

    for s in subjects:
        d = root / "KDEF" / f"A{s}"
        d.mkdir(parents=True)
        for k, emo in enumerate(EMOTIONS):
            for ang in ("S", "HL"):
                arr = rng.integers(0, 60, (40, 30, 3), dtype=np.uint8)
                arr[k * 5:(k + 1) * 5] = 240
                Image.fromarray(arr).save(d / f"A{s}{emo}{ang}.JPG")
    return root


def test_cli_cae_then_cnn_end_to_end(tmp_path, capsys, monkeypatch):
    from ferkit.cli import main

    # train() sets FERKIT_RUN_DIR (for DDP workers); empty = "make a new run dir", restored afterwards.
    monkeypatch.setenv("FERKIT_RUN_DIR", "")
    data = _write_kdef(tmp_path / "kdef")
    common = ["--data", str(data), "--out", str(tmp_path / "runs"), "--epochs", "1", "--no-progress",
              "--batch-size", "8", "--set", "input_size=32", "--set", "source_options={face_crop: false}"]
    assert main(["train", "wiranata-cae", *common]) == 0
    cae_run = next((tmp_path / "runs").glob("wiranata-cae-*"))
    ck = cae_run / "best.ckpt"
    assert ck.is_file()
    monkeypatch.setenv("FERKIT_RUN_DIR", "")  # a second in-process run must not reuse the first's dir
    assert main(["train", "wiranata-cnn", *common, "--set", f"init_checkpoint={ck}"]) == 0
    out = capsys.readouterr().out
    assert "initialised 6/" in out  # weight + bias of the 3 encoder convs
    cnn_run = next((tmp_path / "runs").glob("wiranata-cnn-*"))
    assert (cnn_run / "summary.json").is_file()
    # The recipe route copies exactly the CAE's encoder tensors.
    from ferkit.training.recipes import load_recipe
    from ferkit.training.train import _init_from, build_module

    module = build_module(load_recipe("wiranata-cnn").override(input_size=32), list(FER7))
    _init_from(module, str(ck))
    cae_state = torch.load(ck, map_location="cpu", weights_only=False)["state_dict"]
    for k, v in module.model.features.state_dict().items():
        assert torch.equal(v, cae_state[f"model.features.{k}"]), k
