"""``vgg-fer``: a VGG for 48x48 gray faces after Khaireddin & Chen (2021).

Khaireddin & Chen, "Facial Emotion Recognition: State of the Art Performance on
FER2013" (arXiv 2105.03588; code: usef-kh/fer) train from scratch on 40x40
crops of FER2013's 48x48 faces: four stages of two 3x3 convolutions (64, 128,
256, 512 channels), each convolution followed by batch norm and ReLU, a 2x2
max-pool closing every stage, then FC 4096-4096 with dropout 0.2 (29.9M
parameters) -- 73.06% on PublicTest with ten-crop averaging.

What we changed and why:

* the head is FC 1024-1024 (``head="fc"``, the default) so the fp16 weight file
  is 15.7 MB, under the 16 MiB we ship (7.84M parameters, 0.657 GFLOP at 40x40);
  ``head="gap"`` (global average pool + one hidden FC layer) is a smaller
  alternative that accepts any input size (5.22M parameters);
* convolutions carry no bias (the batch norm after each has one).

The input is declared as 40x40 crops of the 48x48 face (``crop_from=48``):
training takes random crops, evaluation and the Recognizer the centre crop or
ten crops (:mod:`ferkit.data.crops`). Returns logits (B, num_classes).
"""

from __future__ import annotations

import torch
from torch import nn

from ferkit.models.registry import InputConfig, register_model

STAGES = (64, 128, 256, 512)


def _stage(cin: int, cout: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for c in (cin, cout):
        layers += [nn.Conv2d(c, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.MaxPool2d(2))


class VggFer(nn.Module):
    """Four VGG stages (two conv3x3-BN-ReLU + max-pool each) and a compact classifier.

    Args:
        num_classes: output logits.
        in_chans: input channels (1 for gray faces).
        input_size: input side in pixels; with ``head="fc"`` it fixes the flattened
            width ``512 * (input_size // 16) ** 2`` (2048 at 40, 4608 at 48).
        head: "fc" (flatten, FC hidden, FC hidden, FC out) or "gap" (global average
            pool, FC hidden, FC out).
        hidden: units of each hidden FC layer.
        dropout: dropout probability before each hidden FC layer and the output layer.
        width: channels of the first stage (later stages double it); 64 as published.

    Raises:
        ValueError: unknown ``head``, ``input_size`` under 16, or dropout outside [0, 1).
    """

    def __init__(
        self,
        num_classes: int = 7,
        in_chans: int = 1,
        input_size: int = 40,
        head: str = "fc",
        hidden: int = 1024,
        dropout: float = 0.2,
        width: int = 64,
    ):
        super().__init__()
        if head not in ("fc", "gap"):
            raise ValueError(f"head must be 'fc' or 'gap', not {head!r}")
        if input_size < 16:
            raise ValueError(f"input_size {input_size} is too small for four 2x2 max-pools (need >= 16)")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        chans = [width * 2**i for i in range(len(STAGES))]
        self.features = nn.Sequential(*[_stage(a, b) for a, b in zip([in_chans, *chans[:-1]], chans)])
        if head == "fc":
            flat = chans[-1] * (input_size // 16) ** 2
            self.classifier = nn.Sequential(
                nn.Flatten(),
                nn.Dropout(dropout), nn.Linear(flat, hidden), nn.ReLU(inplace=True),
                nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
                nn.Dropout(dropout), nn.Linear(hidden, num_classes),
            )  # fmt: skip
        else:
            self.classifier = nn.Sequential(
                nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                nn.Dropout(dropout), nn.Linear(chans[-1], hidden), nn.ReLU(inplace=True),
                nn.Dropout(dropout), nn.Linear(hidden, num_classes),
            )  # fmt: skip
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, S, S) normalised faces -> (B, num_classes) logits."""
        return self.classifier(self.features(x))


@register_model(InputConfig(size=40, channels=1, mean=(0.5,), std=(0.5,), crop_from=48))
def vgg_fer(num_classes=7, in_chans=1, input_size=40, **kw):
    """VGG for gray faces (Khaireddin & Chen 2021): 4x2 conv3x3-BN-ReLU, FC 1024-1024, 40x40 crops of 48."""
    return VggFer(num_classes, in_chans, input_size, **kw)
