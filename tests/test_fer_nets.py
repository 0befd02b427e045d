"""vgg-fer and resnet18-fer: declared inputs, pinned sizes, weight files, crop framing."""

import pytest
import torch

from ferkit.models import InputConfig, create_model
from ferkit.models.checkpoint import load_checkpoint, save_slim

LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


# Parameter counts pinned against ../shared/GPU.md's cost table (FlopCounterMode there too).
@pytest.mark.parametrize(
    "name,kw,params",
    [
        ("vgg-fer", {}, 7_841_095),  # FC 1024-1024 at 40x40: "7.84M"
        ("vgg-fer", {"head": "gap", "input_size": 48}, 5_218_631),  # "5.22M"
        ("resnet18-fer", {}, 6_286_423),  # width 48: "6.29M"
        ("resnet18-fer", {"width": 64}, 11_171_271),  # "11.2M"
    ],
)
def test_parameter_counts(name, kw, params):
    m = create_model(name, **kw)
    assert sum(p.numel() for p in m.parameters()) == params


def test_declared_inputs():
    vgg = create_model("vgg-fer").input_config
    assert (vgg.size, vgg.channels, vgg.crop_from, vgg.frame) == (40, 1, 48, 48)
    res = create_model("resnet18-fer").input_config
    assert (res.size, res.crop_from, res.frame) == (48, None, 48)


def test_flops_match_published_costs():
    from torch.utils.flop_counter import FlopCounterMode

    for name, gflop in (("vgg-fer", 0.657), ("resnet18-fer", 1.403)):
        m = create_model(name).eval()
        c = m.input_config
        with FlopCounterMode(display=False) as fc:
            m(torch.zeros(1, c.channels, c.size, c.size))
        assert fc.get_total_flops() / 1e9 == pytest.approx(gflop, abs=0.001)


@pytest.mark.parametrize("name", ["vgg-fer", "resnet18-fer"])
def test_half_slim_file_under_16_mib_and_round_trip(tmp_path, name):
    torch.manual_seed(0)
    m = create_model(name).eval()
    save_slim(m, {"model": name, "labels": LABELS, "model_kwargs": {}}, tmp_path / "m.pt", half=True)
    assert (tmp_path / "m.pt").stat().st_size < 16 * 2**20
    m2, _ = load_checkpoint(tmp_path / "m.pt")
    assert m2.input_config == m.input_config  # crop framing survives the file
    c = m.input_config
    x = torch.rand(4, c.channels, c.size, c.size)
    assert torch.allclose(m(x).softmax(1), m2(x).softmax(1), atol=3e-3)


def test_model_kwargs_survive_the_file(tmp_path):
    m = create_model("resnet18-fer", width=16, blocks=[1, 1, 1, 1], dropout=0.1).eval()
    spec = {"model": "resnet18-fer", "labels": LABELS, "model_kwargs": {"width": 16, "blocks": [1, 1, 1, 1]}}
    save_slim(m, spec, tmp_path / "m.pt")
    m2, _ = load_checkpoint(tmp_path / "m.pt")
    assert sum(p.numel() for p in m2.parameters()) == sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize(
    "name,kw,match",
    [
        ("vgg-fer", {"head": "mlp"}, "head"),
        ("vgg-fer", {"dropout": 1.0}, "dropout"),
        ("vgg-fer", {"input_size": 12}, "too small"),
        ("resnet18-fer", {"width": 4}, "width"),
    ],
)
def test_bad_arguments_are_value_errors(name, kw, match):
    with pytest.raises(ValueError, match=match):
        create_model(name, **kw)


def test_vgg_gap_head_takes_any_size():
    m = create_model("vgg-fer", head="gap").eval()
    for side in (40, 48, 64):
        assert m(torch.rand(2, 1, side, side)).shape == (2, 7)


# -- InputConfig.crop_from -------------------------------------------------------------


def test_size_override_keeps_the_frame_while_it_fits():
    assert create_model("vgg-fer", input_size=44).input_config.crop_from == 48  # 44 crops of 48
    assert create_model("vgg-fer", input_size=48).input_config.crop_from is None  # whole face
    assert create_model("vgg-fer", input_size=64, head="gap").input_config.crop_from is None


def test_crop_from_validation_and_canonical_form():
    with pytest.raises(ValueError, match="smaller"):
        InputConfig(size=48, crop_from=40)
    assert InputConfig(size=48, crop_from=48) == InputConfig(size=48)


def test_input_config_dict_round_trip_and_old_files():
    c = InputConfig(size=40, channels=1, mean=(0.5,), std=(0.5,), crop_from=48)
    assert InputConfig.from_dict(c.to_dict()) == c
    old = {"size": 48, "channels": 1, "mean": [0.5], "std": [0.5]}  # written before crop_from
    assert InputConfig.from_dict(old).frame == 48
