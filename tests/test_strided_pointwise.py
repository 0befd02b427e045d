"""Strided 1x1 convolutions (residual shortcuts) train on every CPU.

PyTorch 2.14.1's channels-last backward of ``nn.Conv2d(cin<=8, cout, 1, stride=2)`` on
48x48 and larger inputs corrupts the heap on AVX-512 EPYC CPUs (the CI's GPU-job smoke run
died with rc -11 in ``resnet18-fer`` at width 8; ``mini-xception`` at 64x64 aborted with
"double free"). ferkit's networks use ``PointwiseStridedConv2d`` for these shortcuts.
"""

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("torch", reason="needs the train extra (PyTorch)")
import torch
from torch import nn

from ferkit.models import create_model, list_models
from ferkit.models.layers import PointwiseStridedConv2d


@pytest.mark.parametrize("side", [47, 48])
def test_same_function_and_parameters_as_a_strided_conv(side):
    torch.manual_seed(0)
    ref = nn.Conv2d(8, 16, 1, stride=2, bias=True)
    ours = PointwiseStridedConv2d(8, 16, 2, bias=True)
    ours.load_state_dict(ref.state_dict())  # same keys and shapes
    x = torch.randn(3, 8, side, side, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    a, b = ref(x), ours(x2)
    assert a.shape == b.shape == (3, 16, (side + 1) // 2, (side + 1) // 2)
    torch.testing.assert_close(a, b)
    a.square().sum().backward()
    b.square().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(ref.weight.grad, ours.weight.grad, rtol=1e-5, atol=1e-2)  # a sum over 3x24x24 terms


@pytest.mark.parametrize("name", list_models())
def test_no_plain_strided_pointwise_conv_on_narrow_inputs(name):
    """Every 1x1 strided convolution that sees 8 channels or fewer is the safe layer (a
    registry-wide scan, at the narrowest width each family allows)."""
    kwargs = {"resnet18-fer": {"width": 8}, "mini-xception": {"width": 4}}.get(name, {})
    try:
        model = create_model(name, num_classes=7, input_size=64, **kwargs)
    except (ValueError, TypeError):
        model = create_model(name, num_classes=7)
    bad = [n for n, m in model.named_modules()
           if type(m) is nn.Conv2d and m.kernel_size == (1, 1) and max(m.stride) > 1 and m.in_channels <= 8]
    assert not bad, f"{name}: plain strided 1x1 convolutions on <= 8 channels: {bad}"


@pytest.mark.parametrize("name,size,kwargs", [("resnet18-fer", 48, {"width": 8, "blocks": [1, 1, 1, 1]}),
                                              ("mini-xception", 64, {})])
def test_channels_last_training_step_does_not_crash(name, size, kwargs):
    """The two cases that crashed, run in a child process so a crash fails this test
    instead of killing the test worker."""
    code = textwrap.dedent(f"""
        import torch
        from ferkit.models import create_model
        torch.manual_seed(0)
        m = create_model({name!r}, num_classes=7, input_size={size}, **{kwargs!r}).train()
        m = m.to(memory_format=torch.channels_last)
        x = torch.randn(32, 1, {size}, {size}).contiguous(memory_format=torch.channels_last)
        for _ in range(3):
            m(x).float().square().mean().backward()
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stderr[-2000:])
