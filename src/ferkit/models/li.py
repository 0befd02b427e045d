"""Li's noise-robust FER models: a VGG classifier, a denoising autoencoder, hybrids A/B.

From "A robust VGG network combined with Denoising Autoencoder module for human
emotion recognition" (Li). All four take 48x48 gray faces scaled to [0, 1]
(mean 0, std 1: the paper only rescales), so the DAE's [0, 1] output feeds the
VGG unchanged.

li-vgg layout, derived from the paper's parameter counts
---------------------------------------------------------
The paper gives 33,644,103 trainable and 19,328 non-trainable parameters. In
Keras the non-trainable ones are batch norm's moving mean and variance, 2 per
normalised channel, so batch norm covers 19,328 / 2 = 9,664 channels. The 13
convolutions have 4,224 channels in all, too few for BN after every conv
*and* after the dense layers, and too many to leave the dense layers out. The
one layout that adds up is BN once per block (after its last conv) and after
each 4096-unit dense layer: (64 + 128 + 256 + 512 + 512) + 2 x 4096 = 9,664.

Trainable parameters (3x3 convs with bias, input 1 channel, 48 -> 1 after 5 pools):

====================================  =============
conv 1->64, 64->64                          37,568
conv 64->128, 128->128                     221,440
conv 128->256, 2 x 256->256              1,475,328
conv 256->512, 2 x 512->512              5,899,776
conv 3 x 512->512                        7,079,424
dense 512->4096                          2,101,248
dense 4096->4096                        16,781,312
dense 4096->7                               28,679
BN gamma+beta, 2 x 9,664                    19,328
**total**                             **33,644,103**
====================================  =============

which matches the paper exactly; the BN running mean+var are the 19,328
non-trainable values. Each block is conv-ReLU (x2 or x3), BN, 2x2 max-pool,
dropout 0.4; each hidden dense layer is Linear-ReLU-BN-dropout 0.4.

li-dae
------
4 encoder layers (conv 16, pool, conv 24, pool) and 5 decoder layers (conv 24,
up-sample, conv 16, up-sample, 1-filter sigmoid conv): 5 convolutions, 3x3,
same padding, ReLU. Trained with binary cross-entropy to map a distorted face
back to the clean one. The training module distorts each clean batch as the
model's ``train_distortion`` says (random-gray by default) and passes the copy to
:meth:`LiDAE.compute_loss`, so the training data stays clean and the model needs
nothing from ``ferkit.data``.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ferkit.models.registry import AUTOENCODER, InputConfig, register_model

_UNIT = InputConfig(size=48, channels=1, mean=(0.0,), std=(1.0,))


class LiVGG(nn.Module):
    """13 conv 3x3 in 5 blocks (BN + max-pool + dropout per block), dense 4096-4096-K.

    Args:
        width: multiplier on the conv filters (1.0 = the paper; <1 for CPU experiments).
        hidden: dense width (4096 in the paper).
        dropout: dropout after each block and hidden dense layer (0.4).
        block_dropout: dropout after each conv block when it should differ from
            ``dropout`` (None: same). Not in the paper: on a short CPU schedule the
            paper's seven dropouts of 0.4 kept the network at chance (see
            docs/reproductions/li-implementation.md), while the dense layers' dropout alone trains.
    """

    BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))

    def __init__(self, num_classes=7, in_chans=1, input_size=48, width: float = 1.0, hidden: int = 4096,
                 dropout: float = 0.4, block_dropout: float | None = None):
        super().__init__()
        layers, cin, side = [], in_chans, input_size
        for filters, n in self.BLOCKS:
            cout = max(8, round(filters * width))
            for _ in range(n):
                layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]
                cin = cout
            layers += [nn.BatchNorm2d(cout), nn.MaxPool2d(2),
                       nn.Dropout(dropout if block_dropout is None else block_dropout)]
            side //= 2
        if side < 1:
            raise ValueError(f"li-vgg needs input_size >= 32 (five 2x2 pools), got {input_size}")
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(cin * side * side, hidden), nn.ReLU(inplace=True), nn.BatchNorm1d(hidden), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.BatchNorm1d(hidden), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )  # fmt: skip
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x):
        """(B, C, S, S) faces in [0, 1] -> (B, num_classes) logits."""
        return self.classifier(self.features(x))


class LiDAE(nn.Module):
    """Denoising autoencoder: [0,1] face -> [0,1] face of the same size.

    Args:
        in_chans: image channels (1 for FER2013).
        train_distortion: ``NAME[:SEVERITY]`` the training module applies to the
            clean input to make ``compute_loss``'s ``noisy`` argument (default
            ``random-gray``: a random severity 1..5 per sample, so the DAE learns
            every noise level; validation uses a fixed, seeded ``random-gray:3``).
    """

    def __init__(self, in_chans: int = 1, train_distortion: str = "random-gray"):
        super().__init__()
        self.train_distortion = train_distortion
        self.encoder = nn.Sequential(
            nn.Conv2d(in_chans, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(16, 24, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )  # fmt: skip
        self.decoder = nn.Sequential(
            nn.Conv2d(24, 24, 3, padding=1), nn.ReLU(inplace=True), nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(24, 16, 3, padding=1), nn.ReLU(inplace=True), nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(16, in_chans, 3, padding=1),
        )  # fmt: skip

    def forward(self, x):
        """(B, C, H, W) face in [0, 1] -> the denoised face, same shape, in [0, 1] (sigmoid)."""
        h, w = x.shape[-2:]
        y = self.decoder(self.encoder(x))
        if y.shape[-2:] != (h, w):  # sides not divisible by 4: pools floor, resize back
            y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
        return torch.sigmoid(y)

    def logits(self, x):
        """Pre-sigmoid output (BCE-with-logits is the numerically safe form of the paper's BCE)."""
        y = self.decoder(self.encoder(x))
        if y.shape[-2:] != x.shape[-2:]:
            y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return y

    def compute_loss(self, x, y=None, *, class_weights=None, label_smoothing=0.0, noisy=None):
        """BCE of reconstructing the clean ``x`` from ``noisy``; returns ``(loss, None)``.

        Args:
            x: clean faces (B, C, H, W) in [0, 1] (clamped), the target.
            y: ignored (no labels in denoising); class_weights, label_smoothing: ignored.
            noisy: the distorted copy of ``x`` to denoise. The training module makes it
                from :attr:`train_distortion` (the model never imports ``ferkit.data``);
                ``None`` reconstructs ``x`` from itself.
        """
        clean = x.clamp(0, 1)
        src = clean if noisy is None else noisy
        return F.binary_cross_entropy_with_logits(self.logits(src), clean), None


def _load_dae_weights(dae: LiDAE, path: str) -> None:
    from ferkit.models.checkpoint import load_weights

    # A DAE checkpoint (keys encoder.*) or a hybrid's (keys dae.encoder.*) both work.
    load_weights(dae, path, within=("dae.",), require="exact", what=f"dae_checkpoint {path}",
                 hint="not a li-dae checkpoint")


class LiHybrid(nn.Module):
    """DAE front end + VGG classifier: logits = vgg(dae(x)).

    Args:
        freeze_dae: hybrid A (True): the DAE gets no gradient and stays in eval
            mode even under ``.train()``. Hybrid B (False): trained jointly.
        dae_checkpoint: weights for the DAE (a ``li-dae`` run's best.ckpt).
        recon_weight: hybrid B only, beyond the paper: adds ``recon_weight`` x the
            DAE's reconstruction BCE (distorted input, clean target) to the loss.
        width, hidden, block_dropout: passed to :class:`LiVGG`.
    """

    def __init__(self, num_classes=7, in_chans=1, input_size=48, freeze_dae=True, dae_checkpoint=None,
                 recon_weight: float = 0.0, train_distortion: str = "random-gray", width: float = 1.0,
                 hidden: int = 4096, block_dropout: float | None = None):
        super().__init__()
        self.dae = LiDAE(in_chans, train_distortion)
        self.vgg = LiVGG(num_classes, in_chans, input_size, width=width, hidden=hidden,
                         block_dropout=block_dropout)
        self.freeze_dae, self.recon_weight = freeze_dae, float(recon_weight)
        # Saved with the weights, so a reloaded hybrid knows its DAE was trained.
        self.register_buffer("dae_loaded", torch.tensor(0, dtype=torch.uint8))
        if dae_checkpoint:
            _load_dae_weights(self.dae, dae_checkpoint)
            self.dae_loaded.fill_(1)
        self._warned = False
        if freeze_dae:
            for p in self.dae.parameters():
                p.requires_grad_(False)
            self.dae.eval()

    def train(self, mode: bool = True):
        """Train mode; a frozen DAE (hybrid A) stays in eval mode."""
        super().train(mode)
        if self.freeze_dae:
            self.dae.eval()  # frozen means frozen: no BN statistics or dropout drift either
        return self

    def forward(self, x):
        """(B, C, 48, 48) faces in [0, 1] -> (B, num_classes) logits of ``vgg(dae(x))``."""
        return self.vgg(self.dae(x))

    @property
    def train_distortion(self) -> str | None:
        """The DAE's corruption spec when the loss has a reconstruction term, else None."""
        return self.dae.train_distortion if self.recon_weight > 0 and not self.freeze_dae else None

    def compute_loss(self, x, y, *, class_weights=None, label_smoothing=0.0, noisy=None):
        """Cross-entropy on ``vgg(dae(x))`` + ``recon_weight`` x the DAE's reconstruction BCE.

        Args:
            x: faces (B, C, H, W) in [0, 1]; y: class indices (B,).
            class_weights: per-class weights (K,) for the cross-entropy, or None.
            label_smoothing: cross-entropy label smoothing in [0, 1).
            noisy: distorted copy of ``x`` for the reconstruction term (hybrid B with
                ``recon_weight`` > 0 only; see :attr:`train_distortion`).

        Returns:
            ``(loss, logits (B, K))``.
        """
        if self.freeze_dae and not int(self.dae_loaded) and not self._warned:
            warnings.warn("li-hybrid-a is training with a randomly initialised frozen DAE (no "
                          "dae_checkpoint given); train li-dae first for real runs", stacklevel=2)
            self._warned = True
        logits = self(x)
        loss = F.cross_entropy(logits, y, weight=class_weights, label_smoothing=label_smoothing)
        if self.recon_weight > 0 and not self.freeze_dae:
            loss = loss + self.recon_weight * self.dae.compute_loss(x, noisy=noisy)[0]
        return loss, logits


@register_model(_UNIT, tags=("li",))
def li_vgg(num_classes=7, in_chans=1, input_size=48, **kw):
    """Li's VGG: 13 conv 3x3 in 5 blocks, BN, dense 4096-4096-K, dropout 0.4 (33.6M params)."""
    return LiVGG(num_classes, in_chans, input_size, **kw)


@register_model(_UNIT, tags=("li", AUTOENCODER))
def li_dae(num_classes=7, in_chans=1, input_size=48, **kw):
    """Li's denoising autoencoder (conv 16/24, 2 pools, 2 up-samples, sigmoid); [0,1] in and out."""
    return LiDAE(in_chans, **kw)


@register_model(_UNIT, tags=("li",))
def li_hybrid_a(num_classes=7, in_chans=1, input_size=48, dae_checkpoint=None, **kw):
    """Li's hybrid A: a pretrained, frozen DAE in front of li-vgg."""
    # No checkpoint is allowed (tests, reloading a trained hybrid, whose state dict holds
    # the DAE); training such a model warns once, see LiHybrid.compute_loss.
    return LiHybrid(num_classes, in_chans, input_size, freeze_dae=True, dae_checkpoint=dae_checkpoint, **kw)


@register_model(_UNIT, tags=("li",))
def li_hybrid_b(num_classes=7, in_chans=1, input_size=48, **kw):
    """Li's hybrid B: DAE + li-vgg trained jointly from scratch."""
    return LiHybrid(num_classes, in_chans, input_size, freeze_dae=False, **kw)
