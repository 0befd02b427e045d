"""Loading trained models from Lightning checkpoints or slim ferkit weight files.

Two formats load the same way:

* a Lightning checkpoint written by ``ferkit train`` (``best.ckpt``): weights
  under ``state_dict`` with a ``model.`` prefix, the model spec under
  ``hyper_parameters``;
* a slim file (``ferkit export --format torch`` / the shipped model):
  ``{"format": "ferkit-model", "model": ..., "state_dict": ...}``.

Constructor arguments that only point at *initial* weights (``weights``,
``pretrained``, anything ending in ``_checkpoint``) are dropped when loading:
the saved state dict already holds those weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ferkit.errors import FerkitError
from ferkit.labels import FER7
from ferkit.models.registry import InputConfig, create_model

SLIM_FORMAT = "ferkit-model"


def _init_only(key: str) -> bool:
    return key in ("weights", "pretrained") or key.endswith("_checkpoint") or key.endswith("_weights")


def model_spec_from_hparams(hp: dict) -> dict:
    return {
        "model": hp["model_name"],
        "num_classes": int(hp["num_classes"]),
        "labels": list(hp.get("labels") or FER7[: int(hp["num_classes"])]),
        "model_kwargs": dict(hp.get("model_kwargs") or {}),
        "input_config": hp.get("input_config"),
    }


def read_checkpoint(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FerkitError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise FerkitError(f"{path}: not a readable checkpoint (empty file, 0 bytes); copy or export it again")
    try:
        # Our own files hold plain containers (dicts, lists, tensors) plus Lightning's
        # metadata; weights_only=False is needed for the latter and the file is the user's.
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
        raise FerkitError(
            f"{path}: not a readable checkpoint, truncated or damaged ({load_failure(e)}); "
            "copy or export it again"
        ) from None


def load_failure(e: BaseException) -> str:
    """``Type: first sentence`` of a ``torch.load`` error (torch's run to several lines)."""
    text = str(e).strip()
    first = text.splitlines()[0].split(". ")[0][:160] if text else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def load_checkpoint(path, map_location="cpu") -> tuple[nn.Module, dict]:
    """Load a model for inference. Returns (model in eval mode, spec).

    ``spec`` has ``model``, ``labels``, ``input_config`` (InputConfig),
    ``model_kwargs`` and, for training checkpoints, ``hyper_parameters``.
    """
    ckpt = read_checkpoint(path)
    if isinstance(ckpt, dict) and ckpt.get("format") == SLIM_FORMAT:
        spec = {k: ckpt[k] for k in ("model", "num_classes", "labels", "model_kwargs", "input_config")}
        spec["meta"] = ckpt.get("meta", {})
        state = ckpt["state_dict"]
    elif isinstance(ckpt, dict) and "hyper_parameters" in ckpt and "state_dict" in ckpt:
        spec = model_spec_from_hparams(ckpt["hyper_parameters"])
        spec["hyper_parameters"] = ckpt["hyper_parameters"]
        state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    else:
        raise FerkitError(f"{path}: not a ferkit checkpoint (no model spec inside)")
    cfg = InputConfig.from_dict(spec["input_config"]) if spec.get("input_config") else None
    kwargs = {k: v for k, v in spec["model_kwargs"].items() if not _init_only(k)}
    model = create_model(
        spec["model"],
        num_classes=spec["num_classes"],
        in_chans=cfg.channels if cfg else None,
        input_size=cfg.size if cfg else None,
        **kwargs,
    )
    if cfg is not None:
        model.input_config = cfg
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise FerkitError(
            f"{path}: weights do not fit model {spec['model']!r} "
            f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})"
        )
    spec["input_config"] = model.input_config
    spec["path"] = os.fspath(path)
    return model.to(map_location).eval(), spec


def save_slim(model: nn.Module, spec: dict, path, *, half: bool = False, meta: dict | None = None) -> None:
    """Write the slim inference format (optionally fp16 weights, half the size)."""
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in model.state_dict().items()}
    out = {
        "format": SLIM_FORMAT,
        "model": spec["model"],
        "num_classes": len(spec["labels"]),
        "labels": list(spec["labels"]),
        "model_kwargs": {k: v for k, v in spec.get("model_kwargs", {}).items() if not _init_only(k)},
        "input_config": model.input_config.to_dict(),
        "meta": meta or spec.get("meta", {}),
        "state_dict": state,
    }
    tmp = Path(str(path) + ".tmp")
    torch.save(out, tmp)
    os.replace(tmp, path)
