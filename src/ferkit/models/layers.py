"""Layers shared by ferkit's networks.

``PointwiseStridedConv2d`` is the strided 1x1 convolution of residual shortcuts (ResNet's
projection shortcut, mini-Xception's residual branch) computed as "keep every s-th pixel, then
a 1x1 convolution": the same function and the same parameters (``weight`` of shape
(cout, cin, 1, 1), state-dict keys unchanged) as ``nn.Conv2d(cin, cout, 1, stride=s)``.

Why not ``nn.Conv2d`` itself: with PyTorch 2.14.1 on AMD EPYC CPUs with AVX-512, the backward
pass of a 1x1 stride-2 convolution in channels-last layout with at most 8 input channels
corrupts the heap when the input side is 48 or more (measured on this project's machines:
8 channels at 48x48, 64x64, 96x96 crash with a segmentation fault or "double free"; 12 and
16 channels, and sides 32-47, do not). ``resnet18-fer`` at width 8 and ``mini-xception`` at
64x64 hit it, so training died inside its first step. The subsample-then-1x1 form takes a
different kernel and trains on every CPU measured.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PointwiseStridedConv2d(nn.Conv2d):
    """1x1 convolution with stride ``stride``: (B, cin, H, W) -> (B, cout, ceil(H/s), ceil(W/s)).

    Equal to ``nn.Conv2d(cin, cout, 1, stride=stride, bias=bias)`` (same parameters and
    checkpoint keys; see the module docstring for why it subsamples first).
    """

    def __init__(self, cin: int, cout: int, stride: int = 2, bias: bool = False):
        super().__init__(cin, cout, 1, stride=stride, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Subsample by the stride, then the 1x1 convolution."""
        sh, sw = self.stride
        return F.conv2d(x[:, :, ::sh, ::sw], self.weight, self.bias)
