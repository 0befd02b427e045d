"""Wiranata et al.'s convolutional autoencoder (CAE) pre-training, generalised to any CNN.

Paper: Wiranata et al., "Emotion Recognition Based on Deep Learning with
Auto-encoder" (KDEF, 81.77% test accuracy on a random 80/20 split). An encoder
of three 3x3 convolutions (32, 64, 128 filters, ReLU) with 2x2 max-pooling
after the first two is trained without labels to reconstruct its input through
a decoder that reuses the encoder's weights; the encoder then initialises a CNN
of the same feature layers plus fully connected 1024 -> 512 -> 7.

Models registered here:

* ``wiranata-cae`` -- the autoencoder (task ``reconstruct``).
* ``wiranata-cnn`` -- the classifier; its feature layers carry the same
  parameter names as the CAE's (``features.0.weight``...), so a recipe's
  ``init_checkpoint`` (or the ``cae_checkpoint`` kwarg) copies them over.
* ``cae`` -- the same pre-training for any registered CNN whose ``features``
  stack holds only Conv2d / BatchNorm2d / ReLU / MaxPool2d / Dropout layers
  (``model_kwargs: {backbone: boulis-baseline}``); its state dict names match the
  backbone's, so the backbone recipe can fine-tune from it with
  ``init_checkpoint``.

Choices the paper leaves open:

* Input: 64x64 gray, pixels in [0, 1] (mean 0, std 1) so a sigmoid output can
  reconstruct it. KDEF photos are 562x762 colour; at 64 px a (cropped) face
  keeps its expression while the paper's flatten -> FC 1024 layer stays at 33.5M
  weights (at 96 px it would be 75M). Recipes may override ``input_size``.
* Tied weights: each decoder step is ``F.conv_transpose2d`` with the very
  encoder ``Conv2d.weight`` tensor (no copy); only the decoder *biases* are
  its own (one per input channel of the mirrored conv), as in the classic
  tied-weight autoencoder.
* Each max-pool is mirrored by nearest-neighbour up-sampling to the exact size
  the pool received (odd sizes round-trip). BatchNorm and Dropout are skipped in
  the decoder. ReLU follows every decoder conv but the last, which gets a
  sigmoid.
* Loss: mean squared error (``loss="bce"`` for binary cross-entropy) against
  the un-normalised input in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ferkit.errors import FerkitError
from ferkit.models.registry import AUTOENCODER, InputConfig, create_model, get_entry, register_model

_MIRRORABLE = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.Dropout, nn.Dropout2d, nn.Identity)


def wiranata_features(in_chans: int = 1, widths=(32, 64, 128)) -> nn.Sequential:
    """conv3x3 32 -> pool -> conv3x3 64 -> pool -> conv3x3 128, ReLU after every conv."""
    layers: list[nn.Module] = []
    cin = in_chans
    for i, w in enumerate(widths):
        layers += [nn.Conv2d(cin, w, 3, padding=1), nn.ReLU(inplace=True)]
        if i < len(widths) - 1:
            layers.append(nn.MaxPool2d(2))
        cin = w
    return nn.Sequential(*layers)


class TiedAutoencoder(nn.Module):
    """An encoder ``features`` stack and the decoder that mirrors it with tied weights.

    Args:
        features: the encoder (Conv2d / BatchNorm2d / ReLU / MaxPool2d / Dropout only).
        mean, std: the normalisation the encoder expects (the backbone's); the
            autoencoder itself takes [0, 1] input and normalises internally, so
            the encoder sees during pre-training exactly what it sees later.
        loss: ``mse`` or ``bce``.
    """

    def __init__(self, features: nn.Sequential, mean=(0.0,), std=(1.0,), loss: str = "mse"):
        super().__init__()
        bad = [type(m).__name__ for m in features if not isinstance(m, _MIRRORABLE)]
        if bad:
            raise FerkitError(f"cannot mirror feature layers of type {', '.join(sorted(set(bad)))} "
                              "(CAE pre-training supports Conv2d, BatchNorm2d, ReLU, MaxPool2d, Dropout)")
        convs = [m for m in features if isinstance(m, nn.Conv2d)]
        if not convs:
            raise FerkitError("cannot build an autoencoder: the feature stack has no Conv2d layer")
        if loss not in ("mse", "bce"):
            raise FerkitError(f"CAE loss must be 'mse' or 'bce', got {loss!r}")
        self.features = features
        # Only the biases belong to the decoder: one per channel the mirrored conv consumed.
        self.decoder_bias = nn.ParameterList([nn.Parameter(torch.zeros(c.in_channels)) for c in convs])
        self.loss = loss
        self.register_buffer("norm_mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)
        self.register_buffer("norm_std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list]:
        """[0, 1] input -> code, plus what the decoder needs (input sizes of convs and pools)."""
        h = (x - self.norm_mean) / self.norm_std
        trace = []
        for m in self.features:
            if isinstance(m, (nn.Conv2d, nn.MaxPool2d)):
                trace.append((m, h.shape[-2:]))
            h = m(h)
        return h, trace

    def decode(self, h: torch.Tensor, trace: list) -> torch.Tensor:
        """Code (B, C', h, w) + the trace from :meth:`encode` -> reconstruction logits (B, C, H, W)
        (the sigmoid is applied by :meth:`forward` and the loss).
        """
        n_conv = len(self.decoder_bias)
        k = n_conv
        for m, size in reversed(trace):
            if isinstance(m, nn.MaxPool2d):
                h = F.interpolate(h, size=tuple(size), mode="nearest")
                continue
            k -= 1
            h = _conv_transpose_like(h, m, self.decoder_bias[k], tuple(size))
            h = torch.relu(h) if k > 0 else h
        return h  # logits of the reconstruction; sigmoid applied by forward / the loss

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images in [0, 1] -> reconstructions in [0, 1], same shape."""
        h, trace = self.encode(x)
        return torch.sigmoid(self.decode(h, trace))

    def compute_loss(self, x, y=None, *, class_weights=None, label_smoothing=0.0, noisy=None):
        """Reconstruction loss (``mse`` or ``bce``) against ``x``; returns ``(loss, None)``.

        Args:
            x: images (B, C, H, W) in [0, 1] (clamped), the target.
            y, class_weights, label_smoothing: ignored (no labels in pre-training).
            noisy: optional distorted copy of ``x`` to encode instead (denoising); None = ``x``.
        """
        h, trace = self.encode(x if noisy is None else noisy)
        logits = self.decode(h, trace)
        target = x.clamp(0.0, 1.0)
        if self.loss == "bce":
            return F.binary_cross_entropy_with_logits(logits, target), None
        return F.mse_loss(torch.sigmoid(logits), target), None


def _conv_transpose_like(h, conv: nn.Conv2d, bias, size) -> torch.Tensor:
    """The transpose of ``conv`` using conv's own weight tensor, output cropped/padded to ``size``."""
    s, p, d = conv.stride, conv.padding, conv.dilation
    if isinstance(p, str):  # padding="same" on a stride-1 conv
        p = tuple(d[i] * (conv.kernel_size[i] - 1) // 2 for i in range(2))
    base = [(h.shape[-2 + i] - 1) * s[i] - 2 * p[i] + d[i] * (conv.kernel_size[i] - 1) + 1 for i in range(2)]
    out_pad = tuple(max(0, min(size[i] - base[i], s[i] - 1)) for i in range(2))
    y = F.conv_transpose2d(h, conv.weight, bias, stride=s, padding=p, output_padding=out_pad,
                           groups=conv.groups, dilation=d)
    if tuple(y.shape[-2:]) != size:
        y = F.interpolate(y, size=size, mode="nearest")
    return y


def mirror_autoencoder(encoder_features: nn.Sequential, mean=(0.0,), std=(1.0,), loss="mse") -> TiedAutoencoder:
    """Wrap a conv/pool feature stack into a tied-weight convolutional autoencoder.

    Each Conv2d becomes a ``conv_transpose2d`` with the same weight tensor, each
    MaxPool2d an up-sampling. The returned module shares (does not copy) the
    stack, so after pre-training ``encoder_features`` holds the trained weights.
    """
    return TiedAutoencoder(encoder_features, mean=mean, std=std, loss=loss)


class WiranataCNN(nn.Module):
    """The CAE's feature layers + FC 1024 -> 512 (ReLU) -> num_classes (softmax in the loss)."""

    def __init__(self, num_classes=7, in_chans=1, input_size=64, cae_checkpoint: str | None = None):
        super().__init__()
        self.features = wiranata_features(in_chans)
        side = input_size // 4
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(128 * side * side, 1024), nn.ReLU(inplace=True),
            nn.Linear(1024, 512), nn.ReLU(inplace=True),
            nn.Linear(512, num_classes),
        )  # fmt: skip
        if cae_checkpoint:
            load_encoder_weights(self, cae_checkpoint)

    def forward(self, x):
        """(B, C, S, S) images in [0, 1] -> (B, num_classes) logits."""
        return self.classifier(self.features(x))


def load_encoder_weights(model: nn.Module, path) -> int:
    """Copy the ``features.*`` tensors of a CAE checkpoint into ``model``; returns how many.

    Raises:
        FerkitError: unreadable file, or no encoder tensor fits by name and shape.
    """
    from ferkit.models.checkpoint import load_weights

    rep = load_weights(model, path, only="features.", hint="is it a CAE checkpoint?")
    return len(rep.loaded)


_PLAIN = InputConfig(size=64, channels=1, mean=(0.0,), std=(1.0,))


@register_model(_PLAIN, tags=(AUTOENCODER,))
def wiranata_cae(num_classes=7, in_chans=1, input_size=64, loss="mse", **kw):
    """Wiranata convolutional autoencoder (conv 32-64-128, tied-weight decoder), task reconstruct."""
    return mirror_autoencoder(wiranata_features(in_chans), loss=loss)


@register_model(_PLAIN)
def wiranata_cnn(num_classes=7, in_chans=1, input_size=64, cae_checkpoint=None, **kw):
    """Wiranata CNN: CAE feature layers + FC 1024, 512, 7; init from a CAE checkpoint."""
    return WiranataCNN(num_classes, in_chans, input_size, cae_checkpoint=cae_checkpoint)


@register_model(InputConfig(size=48, channels=1, mean=(0.0,), std=(1.0,)), tags=(AUTOENCODER,))
def cae(num_classes=7, in_chans=1, input_size=48, backbone="boulis-baseline", backbone_kwargs=None,
        loss="mse", **kw):
    """Tied-weight CAE around any registered CNN's ``features`` (kwarg backbone=NAME)."""
    if backbone == "cae" or get_entry(backbone).fn is cae:
        raise FerkitError("cae: the backbone must be a classifier, not 'cae'")
    net = create_model(backbone, num_classes=num_classes, in_chans=in_chans, input_size=input_size,
                       **(backbone_kwargs or {}))
    feats = getattr(net, "features", None)
    if not isinstance(feats, nn.Sequential):
        raise FerkitError(f"cae: model {backbone!r} has no 'features' nn.Sequential to mirror")
    bcfg = net.input_config
    # The encoder is fed the backbone's normalisation, so fine-tuning sees familiar inputs.
    return mirror_autoencoder(feats, mean=bcfg.mean, std=bcfg.std, loss=loss)
