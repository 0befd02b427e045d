"""Liu's "Awei" model: a plain CNN with a residual jump and a frozen VGG guide (RAF-DB).

Paper: Liu, "Emotion recognition based on ResNet and transfer learning"
(RAF-DB, 224x224 RGB scaled to [0, 1], 7 classes, batch 8, 20 epochs).

Architecture, with the shape decisions the paper leaves open (input 224):

1. Five blocks of ``Conv2d(3x3, padding=1) -> ReLU -> MaxPool2d(2)`` with 32,
   64, 128, 256, 512 filters: 224 -> 112 -> 56 -> 28 -> 14 -> 7, so block 5
   gives 7x7x512. No batch norm (the paper mentions none).
2. Residual jump (``awei-residual``, ``awei``): the paper's "512-filter 3x3
   conv max-pooled 32x32 to 7x7x512" only fits one input: 224 / 32 = 7, so the
   jump conv reads the **input image** (3 -> 512 channels, same padding, ReLU)
   and a 32x32 max-pool (stride 32) brings it to 7x7x512, which is **added** to
   block 5's output. At other sizes the pool is the adaptive max-pool to block
   5's grid (identical to 32x32 when the side is a multiple of 32). This conv
   runs at full resolution: it is the model's most expensive layer.
3. Flatten (25,088 = 7*7*512) -> ``Linear(25088, 1792)``.
4. VGG guide (``awei``): torchvision's VGG16 ``features`` (the conv part,
   before its fully connected layers), frozen (``requires_grad=False``, kept in
   eval mode even when the model trains), fed the same image normalised with
   the ImageNet mean/std it was trained with. Its flattened 7x7x512 = 25,088
   features cannot be added to the 1,792 units directly, so a trainable
   ``Linear(25088, 1792)`` (``guide_proj``) projects them and the projection is
   **summed** with the FC-1792 pre-activation. That is the same as one linear
   layer on the concatenation [own features, VGG features].
5. ReLU -> Dropout(0.5) -> ``Linear(1792, num_classes)`` (softmax in the loss).

VGG weights (kwarg ``weights``): a local file path (a torchvision VGG16 state
dict, full or ``features`` only, or a ferkit/Lightning checkpoint containing
one), ``"imagenet"`` (torchvision's ``VGG16_Weights.IMAGENET1K_V1`` -- downloads
on first use, never in tests), or None: random init with a warning (the guide
is then just a fixed random projection). The trained state dict stores the VGG
weights too, so reloading a trained Awei never needs ``weights`` again.

Input sizes: any multiple of 32 works (tests use 64: 2x2x512 -> 2048 features).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ferkit.errors import FerkitError
from ferkit.models.registry import IMAGENET, InputConfig, register_model

WIDTHS = (32, 64, 128, 256, 512)


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]


def load_vgg16_features(weights=None) -> nn.Sequential:
    """torchvision VGG16's conv stack with ``weights`` (path, "imagenet" or None = random + warning).

    The same builder and loader as the transfer-learning ``vgg16``
    (:func:`ferkit.models.transfer.vgg16_features`), so a VGG16 file that works there
    works here, and a trained awei checkpoint (``model.vgg.*``) too.

    Raises:
        FerkitError: unreadable weights, or some VGG16 conv tensor missing or misshaped.
    """
    from ferkit.models.transfer import vgg16_features

    if weights in (None, False, "", "none", "random"):
        warnings.warn("awei: VGG16 guide randomly initialised (no weights given); pass "
                      "model_kwargs {weights: imagenet} or a local state-dict path", stacklevel=3)
    return vgg16_features(3, weights)


class Awei(nn.Module):
    """Plain 5-block CNN, optional residual jump, optional frozen VGG16 guide (see module docs)."""

    def __init__(self, num_classes=7, in_chans=3, input_size=224, jump=True, vgg=True, weights=None,
                 hidden=1792, dropout=0.5):
        super().__init__()
        if input_size % 32:
            raise FerkitError(f"awei needs an input size divisible by 32 (five 2x2 pools), got {input_size}")
        layers, cin = [], in_chans
        for w in WIDTHS:
            layers += _block(cin, w)
            cin = w
        self.features = nn.Sequential(*layers)
        side = input_size // 32
        flat = WIDTHS[-1] * side * side
        self.jump = nn.Sequential(nn.Conv2d(in_chans, WIDTHS[-1], 3, padding=1), nn.ReLU(inplace=True)) if jump else None
        self.fc = nn.Linear(flat, hidden)
        self.vgg = None
        if vgg:
            self.vgg = load_vgg16_features(weights)
            for p in self.vgg.parameters():
                p.requires_grad_(False)
            self.vgg.eval()
            self.guide_proj = nn.Linear(flat, hidden)  # VGG16 also ends at (size/32)^2 x 512
            self.register_buffer("vgg_mean", torch.tensor(IMAGENET["mean"]).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("vgg_std", torch.tensor(IMAGENET["std"]).view(1, 3, 1, 1), persistent=False)
        self.head = nn.Sequential(nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def train(self, mode: bool = True):
        """Train mode for everything but the frozen VGG guide, which stays in eval mode."""
        super().train(mode)
        if self.vgg is not None:
            self.vgg.eval()  # frozen guide: never in training mode
        return self

    def forward(self, x):
        """(B, C, H, W) image in [0, 1] (C = 1 is expanded for the guide) -> (B, num_classes) logits."""
        h = self.features(x)
        if self.jump is not None:
            h = h + F.adaptive_max_pool2d(self.jump(x), h.shape[-2:])
        z = self.fc(torch.flatten(h, 1))
        if self.vgg is not None:
            v = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
            with torch.no_grad():
                g = self.vgg((v - self.vgg_mean) / self.vgg_std)
            z = z + self.guide_proj(torch.flatten(g, 1))
        return self.head(z)


_AWEI_INPUT = InputConfig(size=224, channels=3, mean=(0.0,), std=(1.0,))  # [0, 1] as in the paper


@register_model(_AWEI_INPUT)
def awei_plain(num_classes=7, in_chans=3, input_size=224, **kw):
    """Awei ablation: five conv 3x3 + max-pool blocks (32-512), FC 1792, dropout (no jump, no VGG)."""
    kw.pop("weights", None)
    return Awei(num_classes, in_chans, input_size, jump=False, vgg=False, **kw)


@register_model(_AWEI_INPUT)
def awei_residual(num_classes=7, in_chans=3, input_size=224, **kw):
    """Awei ablation: plain blocks + the 512-filter residual jump (no VGG guide)."""
    kw.pop("weights", None)
    return Awei(num_classes, in_chans, input_size, jump=True, vgg=False, **kw)


@register_model(_AWEI_INPUT)
def awei(num_classes=7, in_chans=3, input_size=224, weights=None, **kw):
    """Liu's Awei: plain blocks + residual jump + frozen VGG16 guide summed into FC 1792 (RAF-DB)."""
    return Awei(num_classes, in_chans, input_size, jump=True, vgg=True, weights=weights, **kw)
