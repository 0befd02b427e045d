"""Every registered model: forward + backward on a tiny batch at its declared input size."""

import pytest

pytest.importorskip("torch", reason="needs the train extra (PyTorch)")
import torch

from ferkit.models import create_model, get_entry, list_models
from ferkit.models.checkpoint import load_checkpoint, save_slim
from ferkit.models.registry import model_task

# Large ImageNet-size backbones are exercised at a reduced input size to keep CI fast;
# their own test files cover the declared size where it matters.
SMALL_SIZE = 64


def _size(name):
    cfg = get_entry(name).input_config
    return cfg.size if cfg.size <= 96 else SMALL_SIZE


@pytest.mark.parametrize("name", list_models())
def test_forward_backward(name):
    torch.manual_seed(0)
    size = _size(name)
    model = create_model(name, num_classes=7, input_size=size)
    cfg = model.input_config
    assert cfg.size == size and cfg.channels in (1, 3)
    assert len(cfg.mean) == cfg.channels == len(cfg.std)
    x = torch.rand(2, cfg.channels, size, size)
    model.train()
    if hasattr(model, "compute_loss"):
        # Plain arguments only: a model's loss never needs the trainer or its module.
        loss, logits = model.compute_loss(x, torch.tensor([0, 1]), class_weights=None, label_smoothing=0.0,
                                          noisy=None)
    else:
        logits = model(x)
        loss = logits.float().logsumexp(1).mean() - logits[:, 0].float().mean()
    # The registry's answer to "is this an autoencoder?" matches what the model does.
    assert (logits is None) == (model_task(name) == "reconstruct")
    if logits is not None:
        assert logits.shape == (2, 7)
        assert torch.isfinite(logits).all()
    loss.backward()
    assert torch.isfinite(loss)
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"trainable parameters without gradient: {missing[:5]}"


def test_unknown_model_error():
    from ferkit.errors import FerkitError

    with pytest.raises(FerkitError, match="unknown model"):
        create_model("no-such-model")


def test_channel_override_adjusts_normalisation():
    m = create_model("boulis-baseline", in_chans=3)
    assert m.input_config.channels == 3 and len(m.input_config.mean) == 3
    assert m(torch.rand(1, 3, 48, 48)).shape == (1, 7)


def test_slim_roundtrip_half(tmp_path):
    m = create_model("boulis-baseline").eval()
    spec = {"model": "boulis-baseline", "labels": ["a", "b", "c", "d", "e", "f", "g"], "model_kwargs": {}}
    save_slim(m, spec, tmp_path / "m.pt", half=True)
    m2, spec2 = load_checkpoint(tmp_path / "m.pt")
    x = torch.rand(3, 1, 48, 48)
    assert spec2["labels"] == spec["labels"]
    assert torch.allclose(m(x).softmax(1), m2(x).softmax(1), atol=2e-3)


ROUND_TRIP_KWARGS = {
    **{key: {"width": 0.125, "hidden": 32} for key in ("li-vgg", "li-hybrid-a", "li-hybrid-b")},
    **{key: {"hidden": (16,)} for key in ("vgg16", "resnet50", "seresnet50")},
    **{key: {"hidden": 16} for key in ("awei", "awei-plain", "awei-residual")},
}


@pytest.mark.filterwarnings("ignore:awei. VGG16 guide randomly initialised")
@pytest.mark.parametrize("name", list_models())
def test_save_load_round_trip(name, tmp_path):
    """Every registered model comes back identical from both file formats it is saved in."""
    from ferkit.labels import FER7
    from ferkit.models.checkpoint import load_model_any

    torch.manual_seed(0)
    size = _size(name)
    kw = ROUND_TRIP_KWARGS.get(name, {})  # narrow layers: the files stay small, the test fast
    model = create_model(name, num_classes=7, input_size=size, **kw).eval()
    x = torch.rand(2, model.input_config.channels, size, size)
    with torch.no_grad():
        want = model(x)
    save_slim(model, {"model": name, "labels": list(FER7), "model_kwargs": kw}, tmp_path / "m.pt")
    # A training run's best.ckpt: Lightning's layout, the backbone under "model."
    hp = {"model_name": name, "num_classes": 7, "labels": list(FER7), "model_kwargs": kw,
          "input_config": model.input_config.to_dict()}
    torch.save({"hyper_parameters": hp, "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}},
               tmp_path / "best.ckpt")
    for f in ("m.pt", "best.ckpt"):
        back, spec = load_model_any(tmp_path / f)
        assert spec["model"] == name and spec["input_config"] == model.input_config, f
        assert not back.training
        with torch.no_grad():
            torch.testing.assert_close(back(x), want, msg=f"{name} from {f}")


def test_every_family_module_is_found_and_registers_models():
    """A new family is one module in ferkit/models/: discovery imports it, no list to edit."""
    from ferkit.models import _families
    from ferkit.models.registry import get_entry

    registering = {get_entry(n).fn.__module__.rsplit(".", 1)[1] for n in list_models()}
    assert registering <= set(_families.FAMILIES)
    assert {"boulis", "li", "transfer", "wiranata", "awei"} <= registering
    assert not set(_families.FAMILIES) & _families.MACHINERY
