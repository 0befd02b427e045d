"""``resnet18-fer``: ResNet-18 adapted to 48x48 gray faces.

He et al. (2016)'s ResNet-18 (four stages of two basic residual blocks) with the
stem used for small images (their CIFAR experiments, and the FER2013 ResNet18 of
WuJie1010/Facial-Expression-Recognition.Pytorch, 71.19% PublicTest with ten-crop):
a 3x3 stride-1 convolution and no max-pool, so a 48x48 face keeps 48x48 feature
maps in the first stage (then 24, 12, 6) instead of ImageNet's 12x12. ``width``
sets the first stage's channels (later stages double it): 48 gives 6.29M
parameters and a 12.6 MB fp16 file (1.40 GFLOP at 48x48); 64 is the original
width (11.2M, 22.3 MB, 2.49 GFLOP).

The residual blocks are torchvision's ``BasicBlock``. Returns logits (B, num_classes).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from ferkit.models.layers import PointwiseStridedConv2d
from ferkit.models.registry import InputConfig, register_model


class ResNetFer(nn.Module):
    """3x3 stem (stride 1, no max-pool), 4 stages x ``blocks`` basic blocks, global pool, dropout, FC.

    Args:
        num_classes: output logits.
        in_chans: input channels (1 for gray faces).
        input_size: accepted for the registry; any size >= 8 works (global pooling).
        width: channels of the first stage; stages have width, 2x, 4x, 8x.
        blocks: basic blocks per stage ((2, 2, 2, 2) is ResNet-18).
        dropout: dropout before the final linear layer (0 = none, as in ResNet).

    Raises:
        ValueError: width < 8, an empty stage, or dropout outside [0, 1).
    """

    def __init__(
        self,
        num_classes: int = 7,
        in_chans: int = 1,
        input_size: int = 48,
        width: int = 48,
        blocks: tuple[int, ...] = (2, 2, 2, 2),
        dropout: float = 0.0,
    ):
        super().__init__()
        if width < 8 or not blocks or min(blocks) < 1:
            raise ValueError(f"need width >= 8 and at least one block per stage (width={width}, blocks={blocks})")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        stages, cin = [], width
        for i, n in enumerate(blocks):
            cout, stride = width * 2**i, 1 if i == 0 else 2
            down = None
            if stride != 1 or cin != cout:
                down = nn.Sequential(PointwiseStridedConv2d(cin, cout, stride), nn.BatchNorm2d(cout))
            layer = [BasicBlock(cin, cout, stride, down)] + [BasicBlock(cout, cout) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layer))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # Zero-init the last BN of each residual branch: every block starts as the identity,
        # which steadies the first epochs of a from-scratch run (Goyal et al. 2017).
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, S, S) normalised faces -> (B, num_classes) logits."""
        return self.head(self.stages(self.stem(x)))


@register_model(InputConfig(size=48, channels=1, mean=(0.5,), std=(0.5,)))
def resnet18_fer(num_classes=7, in_chans=1, input_size=48, **kw):
    """ResNet-18 for 48x48 gray faces: 3x3 stride-1 stem, no max-pool, width 48 (6.29M params)."""
    if "blocks" in kw:
        kw["blocks"] = tuple(kw["blocks"])  # YAML gives lists
    return ResNetFer(num_classes, in_chans, input_size, **kw)
