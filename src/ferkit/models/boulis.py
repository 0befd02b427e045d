"""Boulis et al.'s baseline CNN for FER2013 ("Emotion Classification Using Deep Neural Networks").

The paper: four 3x3x32 same-padding ReLU convolutions interleaved with two 2x2
max-pools, batch normalisation, 50% dropout, a fully connected layer and a
softmax output. Where the text is silent we chose:

* batch norm after every convolution, before the ReLU (the usual placement);
* the fully connected layer is a hidden layer of ``hidden`` units (256) with
  ReLU, followed by the 7-way output layer; the one 50% dropout sits between
  them (a second dropout on the flattened features made the 32-filter network
  underfit: train accuracy stayed below validation accuracy for 6 epochs);
* the model returns logits; softmax is applied by the loss / at inference.
"""

from __future__ import annotations

from torch import nn

from ferkit.models.registry import InputConfig, register_model


def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class BoulisBaseline(nn.Module):
    """Boulis et al.'s FER2013 baseline: 4 x (conv 3x3 ``width`` + BN + ReLU), 2 max-pools,
    FC ``hidden`` + ReLU, dropout, FC ``num_classes`` (see the module docstring).

    Args:
        num_classes: outputs. in_chans: input channels. input_size: side in pixels (multiple of 4).
        width: conv filters (32 in the paper). hidden: FC units. dropout: before the output layer.
    """

    def __init__(
        self,
        num_classes: int = 7,
        in_chans: int = 1,
        input_size: int = 48,
        width: int = 32,
        hidden: int = 256,
        dropout: float = 0.5,
    ):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *_conv(in_chans, w), *_conv(w, w), nn.MaxPool2d(2),
            *_conv(w, w), *_conv(w, w), nn.MaxPool2d(2),
        )  # fmt: skip
        flat = w * (input_size // 4) ** 2
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        """(B, in_chans, S, S) normalised faces -> (B, num_classes) logits."""
        return self.classifier(self.features(x))


@register_model(InputConfig(size=48, channels=1, mean=(0.5,), std=(0.5,)))
def boulis_baseline(num_classes=7, in_chans=1, input_size=48, **kw):
    """Boulis baseline CNN: 4 conv 3x3x32 + BN, 2 max-pools, FC, dropout 0.5, softmax."""
    return BoulisBaseline(num_classes, in_chans, input_size, **kw)


@register_model(InputConfig(size=48, channels=1, mean=(0.5,), std=(0.5,)))
def boulis_baseline_wide(num_classes=7, in_chans=1, input_size=48, **kw):
    """Boulis baseline layout at 2x/4x width (64-128 filters): our stronger small CNN."""
    kw.setdefault("width", 64)
    kw.setdefault("hidden", 512)
    return BoulisBaseline(num_classes, in_chans, input_size, **kw)
