"""mini-Xception (Arriaga, Valdenegro-Toro and Plöger 2017, "Real-time Convolutional Neural
Networks for Emotion and Gender Classification", arXiv 1710.07557).

A fully convolutional network of about 57k parameters and 13 MFLOP per 48x48 face, the
paper's 66% on FER2013: two plain 3x3 convolutions (8 filters, no padding), then four
residual modules of two depthwise-separable 3x3 convolutions (16, 32, 64, 128 filters) and a
3x3 stride-2 max-pool, whose shortcut is a strided 1x1 convolution; a last 3x3 convolution
gives one map per class and global average pooling turns the maps into logits. Every
convolution is followed by batch normalisation; there are no fully connected layers and no
dropout. It is ferkit's candidate for the ``fast`` model: a small network that keeps up with
video on one CPU core, trained on its own or distilled from larger ones.

As in the paper's figure, a ReLU sits between the two separable convolutions of a module
and none after the residual sum; convolutions followed by batch norm have no bias; "same"
padding everywhere but the stem, so a 48x48 face leaves the modules as 3x3 maps. ``width``
scales every layer (8 is the paper's network).
"""

from __future__ import annotations

from torch import nn

from ferkit.models.layers import PointwiseStridedConv2d
from ferkit.models.registry import InputConfig, register_model


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, bias=False), nn.BatchNorm2d(cout)]


def separable(cin: int, cout: int) -> nn.Sequential:
    """3x3 depthwise convolution then 1x1 pointwise, then batch norm: (B, cin, H, W) -> (B, cout, H, W)."""
    return nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False),
                         nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))


class XceptionModule(nn.Module):
    """Two separable convolutions and a 3x3/2 max-pool, plus a strided 1x1 shortcut:
    (B, cin, H, W) -> (B, cout, ceil(H/2), ceil(W/2))."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.shortcut = nn.Sequential(PointwiseStridedConv2d(cin, cout, 2), nn.BatchNorm2d(cout))
        self.body = nn.Sequential(separable(cin, cout), nn.ReLU(inplace=True), separable(cout, cout),
                                  nn.MaxPool2d(3, stride=2, padding=1))

    def forward(self, x):
        """Residual sum of the pooled body and the shortcut."""
        return self.body(x) + self.shortcut(x)


class MiniXception(nn.Module):
    """mini-Xception (see the module docstring).

    Args:
        num_classes: outputs. in_chans: input channels. input_size: side in pixels (>= 16).
        width: filters of the two stem convolutions; the modules get 2x, 4x, 8x, 16x it
            (8: the paper's 8, 16, 32, 64, 128).
    """

    def __init__(self, num_classes: int = 7, in_chans: int = 1, input_size: int = 48, width: int = 8):
        super().__init__()
        if input_size < 16:
            raise ValueError(f"mini-xception needs faces of at least 16 px, got {input_size}")
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        stem = [*_conv_bn(in_chans, width), nn.ReLU(inplace=True), *_conv_bn(width, width), nn.ReLU(inplace=True)]
        chans = [width * 2 ** i for i in range(1, 5)]
        self.features = nn.Sequential(*stem, *(XceptionModule(a, b) for a, b in zip([width, *chans], chans)))
        self.head = nn.Sequential(nn.Conv2d(chans[-1], num_classes, 3, padding=1), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten())

    def forward(self, x):
        """(B, in_chans, S, S) normalised faces -> (B, num_classes) logits."""
        return self.head(self.features(x))


@register_model(InputConfig(size=48, channels=1, mean=(0.5,), std=(0.5,)))
def mini_xception(num_classes=7, in_chans=1, input_size=48, **kw):
    """mini-Xception (Arriaga et al. 2017): 4 separable residual modules, no FC, 57k params; 66% in the paper."""
    return MiniXception(num_classes, in_chans, input_size, **kw)
