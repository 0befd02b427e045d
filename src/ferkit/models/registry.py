"""A flat model registry: every model declares the input it expects.

Usage::

    @register_model(InputConfig(size=48, channels=1))
    def my_cnn(num_classes=7, in_chans=1, **kw) -> nn.Module: ...

    model = create_model("my-cnn", num_classes=7)
    model.input_config  # InputConfig(size=48, channels=1, mean=(0.5,), std=(0.5,))

``input_config`` travels with the model (and its checkpoints), and every
transform, the Recognizer and the ONNX export read it from there, so a model
trained on 48x48 gray never gets fed 224x224 RGB by mistake.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from torch import nn

from ferkit.errors import FerkitError

# InputConfig lives in a torch-free module so inference can read it without PyTorch;
# it is re-exported here, where model code has always imported it from.
from ferkit.models.input_config import IMAGENET, InputConfig  # noqa: F401


@dataclass
class ModelEntry:
    """One registered model: its constructor, declared input, one-line description and tags."""

    name: str
    fn: Callable[..., nn.Module]
    input_config: InputConfig
    description: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(input_config: InputConfig, name: str | None = None, tags: tuple[str, ...] = ()):
    """Decorator registering a model constructor under ``name`` (default: fn name, '_' -> '-')."""

    def deco(fn):
        key = name or fn.__name__.replace("_", "-")
        if key in _REGISTRY:
            raise ValueError(f"model {key!r} registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[key] = ModelEntry(key, fn, input_config, doc[0] if doc else "", tags)
        return fn

    return deco


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    _import_families()
    return sorted(_REGISTRY)


#: Tag marking a model trained to reconstruct its input (no class logits).
AUTOENCODER = "autoencoder"


def model_task(name: str) -> str:
    """``"reconstruct"`` for autoencoders (tagged :data:`AUTOENCODER`), else ``"classify"``.

    The one place that answers "is this an autoencoder?": training (which metrics to
    log), the end-of-run report, robustness sweeps and ``denoise-preview`` all ask it,
    for a fresh model and for a checkpoint alike (both carry the model name).

    Raises:
        FerkitError: ``name`` is not registered.
    """
    return "reconstruct" if AUTOENCODER in get_entry(name).tags else "classify"


def get_entry(name: str) -> ModelEntry:
    """The registry entry of model ``name``.

    Raises:
        FerkitError: unknown name (the message lists the available ones).
    """
    _import_families()
    if name not in _REGISTRY:
        raise FerkitError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def create_model(
    name: str,
    num_classes: int = 7,
    in_chans: int | None = None,
    input_size: int | None = None,
    **kwargs,
) -> nn.Module:
    """Build a registered model; the result carries ``.input_config`` and ``.model_name``.

    ``in_chans`` and ``input_size`` override the declared input (e.g. a gray
    VGG16 for 48x48 faces); the model constructor receives them. A model declared
    on crops keeps its ``crop_from`` frame while the new size still fits in it
    (``vgg-fer`` at 44: 44x44 crops of the 48x48 face; at 48: the whole face) and
    drops it otherwise (a larger size is a plain resize of the face).
    """
    entry = get_entry(name)
    cfg = model_input_config(name, in_chans, input_size)
    model = entry.fn(num_classes=num_classes, in_chans=cfg.channels, input_size=cfg.size, **kwargs)
    model.input_config = cfg
    model.model_name = name
    return model


def model_input_config(name: str, in_chans: int | None = None, input_size: int | None = None) -> InputConfig:
    """The input config ``create_model(name, in_chans=..., input_size=...)`` would carry,
    without building the model (no weights allocated, no checkpoints read)."""
    cfg = get_entry(name).input_config
    if in_chans is not None and in_chans != cfg.channels:
        mean = cfg.mean[:1] if in_chans == 1 else (cfg.mean * 3)[:in_chans]
        std = cfg.std[:1] if in_chans == 1 else (cfg.std * 3)[:in_chans]
        cfg = replace(cfg, channels=in_chans, mean=tuple(mean), std=tuple(std))
    if input_size is not None:
        size = int(input_size)
        keep = cfg.crop_from is not None and cfg.crop_from > size
        cfg = replace(cfg, size=size, crop_from=cfg.crop_from if keep else None)
    return cfg


def _import_families() -> None:
    # Importing the family modules runs their @register_model decorators.
    from ferkit.models import _families  # noqa: F401
