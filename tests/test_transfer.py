"""Transfer backbones (vgg16, resnet50, seresnet50), weights, freezing policies, recipes.

Everything runs on randomly initialised backbones at tiny input sizes; pretrained
weights are exercised through state dicts saved inside the test, and the download
path is monkeypatched to fail (no test ever downloads).
"""

from __future__ import annotations

import urllib.error

import pytest

pytest.importorskip("torch", reason="needs the train extra (PyTorch)")
import torch
from torch import nn

from ferkit.errors import FerkitError
from ferkit.models.registry import create_model, get_entry
from ferkit.training.freezing import (
    ProgressiveUnfreeze,
    apply_freeze,
    freeze_callback,
    param_layers,
)

TRANSFER = ["vgg16", "resnet50", "seresnet50"]
SMALL = {"vgg16": 32, "resnet50": 32, "seresnet50": 32}  # smallest sizes the stacks accept


def _tiny(name, **kw):
    # A small head keeps CPU time down; the architecture of the backbone is the real one.
    return create_model(
        name, num_classes=7, input_size=SMALL[name], hidden=(32,), dropout=(0.5,), **kw
    )


@pytest.mark.parametrize("name", TRANSFER)
def test_forward_backward_every_trainable_param_gets_grad(name):
    torch.manual_seed(0)
    m = _tiny(name)
    cfg = m.input_config
    assert cfg.channels == 3 and cfg.size == SMALL[name]
    assert get_entry(name).input_config.size == 197  # the papers' >= 197x197 RGB
    assert cfg.mean == pytest.approx((0.485, 0.456, 0.406))
    x = torch.randn(2, 3, cfg.size, cfg.size)
    out = m(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    missing = [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing


def test_paper_heads():
    vgg = create_model("vgg16", input_size=48)  # default head: Boulis' FC 4096, 1024, 50% dropout
    linears = [l for l in vgg.head if isinstance(l, nn.Linear)]
    drops = [l.p for l in vgg.head if isinstance(l, nn.Dropout)]
    assert [l.out_features for l in linears] == [4096, 1024, 7] and drops == [0.5, 0.5]
    assert linears[0].in_features == 512  # 48 -> 1x1x512 flattened (Keras include_top=False style)
    ayadi = create_model(
        "vgg16", num_classes=6, input_size=90, hidden=(4096, 4096), dropout=(0.3, 0.5)
    )
    assert [l.out_features for l in ayadi.head if isinstance(l, nn.Linear)] == [4096, 4096, 6]
    assert [l.p for l in ayadi.head if isinstance(l, nn.Dropout)] == [0.3, 0.5]
    with pytest.raises(FerkitError, match="dropout"):
        create_model("vgg16", input_size=32, hidden=(8, 8), dropout=(0.5,))


def test_gray_input_sums_rgb_filters(tmp_path):
    import torchvision

    ref = torchvision.models.resnet50(weights=None)
    path = tmp_path / "r50.pth"
    torch.save(ref.state_dict(), path)
    gray = create_model(
        "resnet50", in_chans=1, input_size=32, hidden=(16,), dropout=0.0, weights=str(path)
    )
    assert gray.input_config.channels == 1 and len(gray.input_config.mean) == 1
    w = gray.backbone.conv1.weight
    assert w.shape[1] == 1
    torch.testing.assert_close(w[:, 0], ref.conv1.weight.sum(1))
    assert gray(torch.randn(2, 1, 32, 32)).shape == (2, 7)


def test_local_weights_file_is_loaded(tmp_path):
    import timm
    import torchvision

    torch.manual_seed(1)
    r50 = torchvision.models.resnet50(weights=None)
    torch.save(r50.state_dict(), tmp_path / "r50.pth")
    m = create_model("resnet50", input_size=32, hidden=(16,), weights=str(tmp_path / "r50.pth"))
    torch.testing.assert_close(m.backbone.layer4[2].conv3.weight, r50.layer4[2].conv3.weight)
    torch.testing.assert_close(m.backbone.bn1.running_var, r50.bn1.running_var)

    se = timm.create_model("seresnet50", pretrained=False)
    torch.save(se.state_dict(), tmp_path / "se.pth")
    m = create_model("seresnet50", input_size=32, hidden=(16,), weights=str(tmp_path / "se.pth"))
    torch.testing.assert_close(m.backbone.layer3[1].se.fc1.weight, se.layer3[1].se.fc1.weight)

    # VGG16: torchvision's key layout (features.N.*), classifier tensors ignored
    from torchvision.models import vgg as tv_vgg

    feats = tv_vgg.make_layers(tv_vgg.cfgs["D"])
    state = {f"features.{k}": v for k, v in feats.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(3, 3)
    torch.save(state, tmp_path / "vgg.pth")
    m = create_model("vgg16", input_size=32, hidden=(16,), weights=str(tmp_path / "vgg.pth"))
    torch.testing.assert_close(m.backbone[28].weight, feats[28].weight)


def test_bad_weights_files(tmp_path):
    with pytest.raises(FerkitError, match="neither a file"):
        create_model("resnet50", input_size=32, weights=str(tmp_path / "nope.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    with pytest.raises(FerkitError, match="not a readable state dict"):
        create_model("resnet50", input_size=32, weights=str(tmp_path / "junk.pth"))
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(FerkitError, match="do not fit"):
        create_model("resnet50", input_size=32, weights=str(tmp_path / "wrong.pth"))


def test_imagenet_download_failure_names_file_and_place(monkeypatch):
    import torchvision.models._api as tv_api

    def offline(url, *a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tv_api, "load_state_dict_from_url", offline)
    with pytest.raises(FerkitError) as e:
        create_model("resnet50", input_size=32, weights="imagenet")
    msg = str(e.value)
    assert "https://download.pytorch.org/models/resnet50-" in msg and "checkpoints" in msg
    assert "weights=PATH" in msg

    import timm

    real = timm.create_model

    def offline_timm(name, pretrained=False, **kw):
        if pretrained:
            raise urllib.error.URLError("no network")
        return real(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", offline_timm)
    with pytest.raises(
        FerkitError, match=r"seresnet50: ImageNet weights could not be downloaded.*seresnet50"
    ):
        create_model("seresnet50", input_size=32, weights="imagenet")


# ---------------------------------------------------------------------------------------------
# freezing


def _trainable_layers(m):
    return [
        n
        for n, mod in param_layers(m)
        if all(p.requires_grad for p in mod.parameters(recurse=False))
    ]


def test_keras_170_boundary_on_resnet50():
    m = create_model("resnet50", input_size=32, hidden=(4096, 1024))
    apply_freeze(m, {"freeze_until": "backbone.layer4.2.bn2"})
    assert _trainable_layers(m) == [
        "backbone.layer4.2.conv3",
        "backbone.layer4.2.bn3",
        "head.1",
        "head.3",
        "head.5",
    ]
    blk = m.backbone.layer4[2]
    expect = sum(p.numel() for mod in (blk.conv3, blk.bn3, m.head) for p in mod.parameters())
    assert sum(p.numel() for p in m.parameters() if p.requires_grad) == expect
    # the same set as "trainable_last: 5"
    m2 = create_model("resnet50", input_size=32, hidden=(4096, 1024))
    apply_freeze(m2, {"trainable_last": 5})
    assert _trainable_layers(m2) == _trainable_layers(m)


def test_frozen_batchnorm_stays_in_eval_mode():
    torch.manual_seed(0)
    m = _tiny("resnet50")
    apply_freeze(m, {"freeze_until": "layer3"})  # unique suffix of backbone.layer3
    m.train()  # what Lightning does every epoch
    frozen_bn, live_bn = m.backbone.layer2[0].bn1, m.backbone.layer4[0].bn1
    before_f, before_l = frozen_bn.running_mean.clone(), live_bn.running_mean.clone()
    m(torch.randn(2, 3, 32, 32))
    assert not frozen_bn.training and live_bn.training
    torch.testing.assert_close(frozen_bn.running_mean, before_f)
    assert not torch.equal(live_bn.running_mean, before_l)
    assert not any(p.requires_grad for p in m.backbone.layer3.parameters())
    assert all(p.requires_grad for p in m.backbone.layer4.parameters())


def test_freeze_all_pretrained_vgg_and_trainable_last():
    m = _tiny("vgg16")
    apply_freeze(m, {"freeze_until": "backbone"})
    assert all(not p.requires_grad for p in m.backbone.parameters())
    assert all(p.requires_grad for p in m.head.parameters())
    apply_freeze(m, {"trainable_last": 6})  # Ayadi: 2 head linears + 4 last convs here
    assert len(_trainable_layers(m)) == 6 and _trainable_layers(m)[0] == "backbone.21"


def test_bad_policies():
    m = _tiny("resnet50")
    with pytest.raises(FerkitError, match="not found"):
        apply_freeze(m, {"freeze_until": "layer9"})
    with pytest.raises(FerkitError, match="ambiguous"):
        apply_freeze(m, {"freeze_until": "bn1"})
    with pytest.raises(FerkitError, match="expected one of"):
        apply_freeze(m, {"freeze_all": True})
    assert apply_freeze(m, {}) is None and freeze_callback({"trainable_last": 2}) is None


def test_progressive_unfreeze_adds_param_groups():
    m = _tiny("resnet50")
    policy = {
        "progressive": {
            "until": "backbone",
            "unfreeze": {1: "layer4", 2: "layer3"},
            "lr_factor": 0.1,
        }
    }
    cb = apply_freeze(m, policy)
    assert isinstance(cb, ProgressiveUnfreeze) and isinstance(
        freeze_callback(policy), ProgressiveUnfreeze
    )
    assert not any(p.requires_grad for p in m.backbone.parameters())
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.01)
    holder = nn.Module()
    holder.model = m  # what the callback sees: the LightningModule with .model
    cb.finetune_function(holder, 0, opt)
    assert len(opt.param_groups) == 1
    cb.finetune_function(holder, 1, opt)
    assert len(opt.param_groups) == 2 and opt.param_groups[1]["lr"] == pytest.approx(0.001)
    assert all(p.requires_grad for p in m.backbone.layer4.parameters())
    assert not any(p.requires_grad for p in m.backbone.layer3.parameters())
    m.train()
    m(torch.randn(2, 3, 32, 32))
    assert m.backbone.layer4[0].bn1.training and not m.backbone.layer3[0].bn1.training


# ---------------------------------------------------------------------------------------------
# recipes end to end on tiny data (random init, tiny inputs)


@pytest.mark.parametrize(
    ("recipe", "trained"),
    # tensors the freeze policy leaves to the optimizer: vgg16's head (3 linear layers);
    # resnet50's head + layer4[2].conv3 and bn3 (Keras' "first 170 layers" stop at bn2)
    [("boulis-vgg16-weighted", 6), pytest.param("boulis-resnet50", 9, marks=pytest.mark.slow)],
)
def test_recipe_runs_end_to_end(recipe, trained, tiny_tree, tmp_path):
    import json

    from ferkit.training.recipes import load_recipe
    from ferkit.training.train import train

    r = load_recipe(recipe)
    assert r.freeze and r.augment == "boulis" and r.model_kwargs["weights"] == "imagenet"
    kw = dict(r.model_kwargs, weights=None, hidden=[16, 8])
    run = train(
        r,
        str(tiny_tree),
        str(tmp_path),
        overrides={
            "model_kwargs": kw,
            "input_size": 32,
            "epochs": 1,
            "batch_size": 16,
            "num_workers": 0,
        },
        device="cpu",
        progress=False,
    )
    from ferkit.models.checkpoint import read_checkpoint

    summary = json.loads((run / "summary.json").read_text())
    assert summary["val"]["n"] == 7  # one face per class of tiny_tree's 6
    # the recipe's freeze policy held: the optimizer stepped (35 faces / 16 = 3 batches) on the
    # unfrozen tensors only, each of which got a gradient; the frozen backbone tensors got no
    # optimizer state at all
    last = read_checkpoint(run / "last.ckpt")
    (opt,) = last["optimizer_states"]
    assert last["global_step"] == 3
    assert sum(len(g["params"]) for g in opt["param_groups"]) == len(opt["state"]) == trained
    head = {k for k in last["state_dict"] if k.startswith("model.head.")}
    assert len(head) == 6
    if recipe.startswith("boulis-vgg16"):
        assert sum(k.startswith("model.") for k in last["state_dict"]) == 32  # 26 backbone + 6 head


@pytest.mark.slow
def test_progressive_recipe_trains_with_callback(tiny_tree, tmp_path):
    from ferkit.models.checkpoint import load_checkpoint
    from ferkit.training.recipes import load_recipe
    from ferkit.training.train import train

    r = load_recipe("boulis-senet50").override(
        model_kwargs={"weights": None, "hidden": [8]},
        input_size=32,
        epochs=2,
        batch_size=16,
        freeze={"progressive": {"until": "backbone", "unfreeze": {1: "layer4"}}},
    )
    run = train(r, str(tiny_tree), str(tmp_path), device="cpu", progress=False)
    model, spec = load_checkpoint(run / "last.ckpt")
    assert spec["model"] == "seresnet50" and model(torch.zeros(1, 3, 32, 32)).shape == (1, 7)
