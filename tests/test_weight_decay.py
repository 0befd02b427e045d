"""``decay_norm_and_bias: false`` keeps weight decay off BatchNorm scales/shifts and biases
(the 1-D parameters) and on conv/linear weights, as airbench and timm train; the default
decays everything, as every run before it did (so their optimizer state still resumes)."""

from __future__ import annotations

import pytest

pytest.importorskip("lightning", reason="needs the train extra (PyTorch, Lightning)")
import torch

from ferkit.training.module import FerLitModule
from ferkit.training.recipes import Recipe


def _optimizer(**kw):
    recipe = Recipe(name="t", model="boulis-baseline", optimizer="sgd", lr=0.1, momentum=0.0,
                    weight_decay=0.5, scheduler="none", model_kwargs={"width": 8, "hidden": 16}, **kw)
    module = FerLitModule(recipe)
    out = module.configure_optimizers()
    return module, out["optimizer"] if isinstance(out, dict) else out


def test_norm_and_bias_are_not_decayed_when_asked():
    module, opt = _optimizer(decay_norm_and_bias=False)
    decayed = [p for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]]
    kept = [p for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]]
    assert decayed and kept and all(p.ndim > 1 for p in decayed) and all(p.ndim == 1 for p in kept)
    assert len(decayed) + len(kept) == sum(1 for p in module.parameters() if p.requires_grad)
    bn = next(m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d))
    conv = next(m for m in module.modules() if isinstance(m, torch.nn.Conv2d))
    before_bn, before_conv = bn.weight.detach().clone(), conv.weight.detach().clone()
    for p in module.parameters():
        p.grad = torch.zeros_like(p)  # a step of decay alone
    opt.step()
    torch.testing.assert_close(bn.weight.detach(), before_bn)
    torch.testing.assert_close(conv.weight.detach(), before_conv * (1 - 0.1 * 0.5))


def test_the_default_decays_every_parameter_as_before():
    _module, opt = _optimizer()
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["weight_decay"] == 0.5
