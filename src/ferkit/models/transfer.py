"""Pretrained ImageNet backbones for transfer learning: VGG16, ResNet50, SE-ResNet50.

The seed papers fine-tune ImageNet networks on faces:

* Boulis et al. (FER2013): VGG16 with every pretrained layer frozen and a new
  head of FC 4096 and FC 1024, each with 50% dropout; ResNet50 with the first
  170 Keras layers frozen and FC 4096, FC 1024 before the 7-way softmax;
  SeNet50 alike. Faces are 48x48 gray, recoloured and resized to >= 197x197.
* Ayadi & Lachiri (RAVDESS frames): VGG16 at 90x90 RGB, dense 4096 layers with
  dropout 0.3 then 0.5, only the last six layers trainable.

Every model here is ``TransferNet(backbone, head)``: ``backbone`` is the
torchvision/timm feature extractor (its ``state_dict`` keys are the library's
own, under ``backbone.``), ``head`` the replaceable classifier. The declared
input is 3-channel ImageNet-normalised; FER2013's 48x48 gray batches are
expanded to RGB and upscaled per batch by ``prepare_batch``, so nothing else
is needed. ``in_chans=1`` builds a gray model whose first convolution sums the
RGB filters (the pretrained response to a gray image is unchanged).

Weights (constructor kwarg ``weights``):

* ``None`` -- random initialisation (construction never downloads);
* a file path -- a state dict of the plain torchvision/timm backbone (e.g.
  ``torch.save(torchvision.models.resnet50().state_dict(), PATH)``), or of a
  whole ``TransferNet``;
* ``"imagenet"`` -- through the library's own weight API
  (``ResNet50_Weights.IMAGENET1K_V1.get_state_dict()``, timm's pretrained
  loader). They download when a network exists and are cached; without one a
  :class:`FerkitError` names the file to fetch and where to put it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ferkit.errors import FerkitError
from ferkit.models.registry import IMAGENET, InputConfig, register_model

#: Names accepted for "the library's ImageNet weights".
IMAGENET_NAMES = ("imagenet", "imagenet1k", "default", "DEFAULT", "IMAGENET1K_V1")


class TransferNet(nn.Module):
    """A pretrained feature extractor followed by a replaceable classifier head.

    Attributes:
        backbone: maps an image batch to a feature map or vector.
        head: maps those features to ``num_classes`` logits.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x):
        """(B, C, S, S) ImageNet-normalised images -> (B, num_classes) logits."""
        return self.head(self.backbone(x))

    def replace_head(self, head: nn.Module) -> None:
        """Swap the classifier (e.g. 6 RAVDESS classes instead of FER7)."""
        self.head = head


def make_head(
    in_features: int, num_classes: int, hidden=(4096, 1024), dropout=(0.5, 0.5)
) -> nn.Sequential:
    """Flatten -> [Linear -> ReLU -> Dropout] per hidden width -> Linear(num_classes).

    ``dropout`` is one rate per hidden layer (a single number applies to all).
    """
    hidden = [int(h) for h in (hidden or ())]
    if isinstance(dropout, (int, float)):
        dropout = [float(dropout)] * len(hidden)
    dropout = list(dropout)
    if len(dropout) != len(hidden):
        raise FerkitError(f"head: {len(hidden)} hidden layer(s) but {len(dropout)} dropout rate(s)")
    layers: list[nn.Module] = [nn.Flatten()]
    prev = in_features
    for width, p in zip(hidden, dropout):
        layers += [nn.Linear(prev, width), nn.ReLU(inplace=True)]
        if p > 0:
            layers.append(nn.Dropout(p))
        prev = width
    layers.append(nn.Linear(prev, num_classes))
    return nn.Sequential(*layers)


# ---------------------------------------------------------------------------------------------
# weights


def _hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _torchvision_imagenet(arch: str) -> dict:
    import torchvision.models as tvm

    enum = {"vgg16": tvm.VGG16_Weights, "resnet50": tvm.ResNet50_Weights}[arch].IMAGENET1K_V1
    try:
        return enum.get_state_dict(progress=False, check_hash=False)
    except Exception as e:  # noqa: BLE001 - URLError, SSL, HTTP, timeouts all mean "not fetched"
        url = enum.url
        dest = _hub_checkpoint_dir() / os.path.basename(url)
        raise FerkitError(
            f"{arch}: ImageNet weights could not be downloaded ({type(e).__name__}). Fetch {url} "
            f"and save it as {dest} (torch hub cache, $TORCH_HOME), or pass weights=PATH to a local "
            f"state dict"
        ) from None


def _timm_imagenet(arch: str) -> dict:
    import timm

    try:
        return timm.create_model(arch, pretrained=True, num_classes=0).state_dict()
    except Exception as e:  # noqa: BLE001 - any download failure
        cfg = timm.models.get_pretrained_cfg(arch)
        url = getattr(cfg, "url", None) or "?"
        hub = getattr(cfg, "hf_hub_id", None)
        dest = _hub_checkpoint_dir() / os.path.basename(url)
        where = f"huggingface.co/{hub} (Hugging Face cache) or " if hub else ""
        raise FerkitError(
            f"{arch}: ImageNet weights could not be downloaded ({type(e).__name__}). Fetch {where}{url} "
            f"and save it as {dest} (torch hub cache), or pass weights=PATH to a local state dict"
        ) from None


def load_backbone_state(arch: str, weights) -> dict | None:
    """Resolve a ``weights`` argument to a backbone state dict (None = random init)."""
    if weights in (None, False, "", "none", "random"):
        return None
    if weights is True or str(weights) in IMAGENET_NAMES:
        if arch in ("vgg16", "resnet50"):
            return _torchvision_imagenet(arch)
        return _timm_imagenet(arch)
    path = Path(os.path.expanduser(str(weights)))
    if not path.is_file():
        raise FerkitError(
            f"{arch}: weights {weights!r} is neither a file nor one of {', '.join(IMAGENET_NAMES[:2])}"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - bad pickle, truncated file
        raise FerkitError(f"{path}: not a readable state dict ({type(e).__name__}: {e})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise FerkitError(f"{path}: expected a state dict, found {type(state).__name__}")
    return state


def _load_into(backbone: nn.Module, state: dict, arch: str, within=("backbone.",)) -> None:
    """Fill ``backbone`` from ``state`` (a plain library state dict, a whole ``TransferNet``'s or
    a ferkit checkpoint's): every tensor must fit but the library's own classifier."""
    from ferkit.models.checkpoint import load_weights

    # A backbone file must cover the backbone: a mismatch is a wrong file, not a partial load.
    load_weights(backbone, state, strip=("model.",), within=within, require="all", what=arch,
                 optional=("*num_batches_tracked", "fc.*", "classifier.*"))  # ImageNet head: replaced


def adapt_first_conv(conv: nn.Conv2d, in_chans: int) -> nn.Conv2d:
    """A copy of ``conv`` taking ``in_chans`` inputs; gray = sum of the RGB filters."""
    if conv.in_channels == in_chans:
        return conv
    new = nn.Conv2d(
        in_chans,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        conv.bias is not None,
    )
    with torch.no_grad():
        w = conv.weight.sum(1, keepdim=True)  # gray x through all three filters == sum of filters
        new.weight.copy_(w.repeat(1, in_chans, 1, 1) / in_chans)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def _feature_size(backbone: nn.Module, in_chans: int, input_size: int) -> int:
    with torch.no_grad():
        was = backbone.training
        backbone.eval()
        out = backbone(torch.zeros(1, in_chans, input_size, input_size))
        backbone.train(was)
    return int(out[0].numel())


# ---------------------------------------------------------------------------------------------
# models


def vgg16_features(in_chans: int = 3, weights=None) -> nn.Sequential:
    """torchvision's VGG16 conv stack (13 convs, 5 pools: (B, C, H, W) -> (B, 512, H/32, W/32)).

    Args:
        in_chans: input channels (1: the first conv sums the RGB filters).
        weights: see :func:`load_backbone_state`. A file may hold torchvision's VGG16
            (``features.*``, its classifier ignored), the stack alone (``0.weight``...),
            a ``vgg16`` TransferNet (``backbone.*``) or an awei model (``vgg.*``), with or
            without a Lightning ``model.`` prefix.

    Raises:
        FerkitError: unreadable weights, or some conv tensor missing or misshaped.
    """
    from torchvision.models import vgg as tv_vgg

    # torchvision's own VGG16 ("D") conv stack, built without the 102M-parameter ImageNet
    # classifier that vgg16() would initialise only for us to throw away; never downloads.
    features = tv_vgg.make_layers(tv_vgg.cfgs["D"], batch_norm=False)
    if (state := load_backbone_state("vgg16", weights)) is not None:
        # Only the conv sub-tree is taken: torchvision's classifier.0.* must not land on conv 0.
        _load_into(features, state, "vgg16", within=("vgg.", "backbone.", "features."))
    features[0] = adapt_first_conv(features[0], in_chans)
    return features


@register_model(InputConfig(size=197, channels=3, **IMAGENET), tags=("transfer",))
def vgg16(
    num_classes=7,
    in_chans=3,
    input_size=197,
    weights=None,
    hidden=(4096, 1024),
    dropout=0.5,
):
    """VGG16 (torchvision) conv stack + FC head (Boulis: 4096, 1024, 50% dropout; Ayadi: 4096, 4096)."""
    features = vgg16_features(in_chans, weights)
    # Keras-style Flatten of the last feature map (no adaptive pooling): the head's size
    # follows the input size, as in the papers' include_top=False models.
    feat = _feature_size(features, in_chans, input_size)
    return TransferNet(features, make_head(feat, num_classes, hidden, dropout))


class _ResNetTrunk(nn.Module):
    """torchvision ResNet without its fc: conv1..layer4 + global average pool -> (B, 2048)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        for name in (
            "conv1",
            "bn1",
            "relu",
            "maxpool",
            "layer1",
            "layer2",
            "layer3",
            "layer4",
            "avgpool",
        ):
            self.add_module(name, getattr(net, name))

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


@register_model(InputConfig(size=197, channels=3, **IMAGENET), tags=("transfer",))
def resnet50(
    num_classes=7,
    in_chans=3,
    input_size=197,
    weights=None,
    hidden=(4096, 1024),
    dropout=0.0,
):
    """ResNet50 (torchvision) + FC 4096, FC 1024 head (Boulis)."""
    import torchvision.models as tvm

    net = tvm.resnet50(weights=None)
    if (state := load_backbone_state("resnet50", weights)) is not None:
        _load_into(net, state, "resnet50")
    net.conv1 = adapt_first_conv(net.conv1, in_chans)
    trunk = _ResNetTrunk(net)
    return TransferNet(trunk, make_head(2048, num_classes, hidden, dropout))


@register_model(InputConfig(size=197, channels=3, **IMAGENET), tags=("transfer",))
def seresnet50(
    num_classes=7,
    in_chans=3,
    input_size=197,
    weights=None,
    hidden=(4096, 1024),
    dropout=0.0,
):
    """SE-ResNet50 (timm) + FC 4096, FC 1024 head (Boulis' SeNet50)."""
    import timm

    # num_classes=0: timm returns pooled (B, 2048) features; pretrained=False never downloads.
    net = timm.create_model("seresnet50", pretrained=False, num_classes=0)
    if (state := load_backbone_state("seresnet50", weights)) is not None:
        _load_into(net, state, "seresnet50")
    net.conv1 = adapt_first_conv(net.conv1, in_chans)
    return TransferNet(net, make_head(net.num_features, num_classes, hidden, dropout))
