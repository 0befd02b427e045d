"""Loading weights: trained models from their files, and matching tensors into any model.

Two model formats load the same way (:func:`load_checkpoint`):

* a Lightning checkpoint written by ``ferkit train`` (``best.ckpt``): weights
  under ``state_dict`` with a ``model.`` prefix, the model spec under
  ``hyper_parameters``;
* a slim file (``ferkit export --format torch`` / the shipped model):
  ``{"format": "ferkit-model", "model": ..., "state_dict": ...}``.

:func:`load_model_any` reads any of them, or a soft-voting ensemble file
(:mod:`ferkit.models.ensemble`), once and dispatches on its ``format``.

:func:`load_weights` is the one place that copies tensors from a file or state dict
into a model (initialising from a pre-training run, a DAE into a hybrid, ImageNet
backbones, a trained model's own weights): it strips prefixes with torch's
``consume_prefix_in_state_dict_if_present``, copies what matches by name and shape,
and returns a :class:`LoadReport` of what was loaded and what was not.

Constructor arguments that only point at *initial* weights (``weights``,
``pretrained``, anything ending in ``_checkpoint``) are dropped when loading:
the saved state dict already holds those weights.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

import torch
from torch import nn
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from ferkit.errors import FerkitError
from ferkit.labels import FER7
from ferkit.models.registry import InputConfig, create_model

SLIM_FORMAT = "ferkit-model"
ENSEMBLE_FORMAT = "ferkit-ensemble"  # read by ferkit.models.ensemble
#: The recipe fields that fix a run's validation carve. An exported file keeps them in its
#: meta (``meta["split"]``), so ``--split val`` of a file moved out of its run still means
#: the faces the run validated on.
SPLIT_KEYS = ("dataset", "val_fraction", "split_seed", "group_val", "source_options")


def run_split(hp: dict) -> dict:
    """The validation-carve fields of a run's saved hyper-parameters (a run saved before
    ``split_seed`` existed carved with ``seed``)."""
    return {k: (hp.get("split_seed", hp.get("seed", 0)) if k == "split_seed" else hp.get(k)) for k in SPLIT_KEYS}


def _init_only(key: str) -> bool:
    return key in ("weights", "pretrained") or key.endswith(("_checkpoint", "_weights"))


@dataclass
class LoadReport:
    """What :func:`load_weights` did, in the model's own state-dict key names.

    Attributes:
        loaded: tensors copied from the source.
        missing: model tensors the source has no tensor for (left as they were).
        mismatched: tensors present under the same name with another shape (left as they were).
        unexpected: source tensors with no place in the model (ignored).
    """

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Model tensors that were candidates for loading."""
        return len(self.loaded) + len(self.missing) + len(self.mismatched)

    def __str__(self) -> str:
        return f"{len(self.loaded)}/{self.total} tensors"


def state_dict_from(source) -> dict:
    """The tensors in ``source``: a file path, a checkpoint dict (``state_dict`` inside) or a state dict.

    Raises:
        FerkitError: missing or unreadable file, or no dict of tensors inside.
    """
    ck = read_checkpoint(source) if isinstance(source, (str, os.PathLike)) else source
    if isinstance(ck, dict) and isinstance(ck.get("state_dict"), dict):
        ck = ck["state_dict"]
    if not isinstance(ck, dict):
        raise FerkitError(f"{source}: expected a state dict, found {type(ck).__name__}")
    return ck


def load_weights(
    model: nn.Module,
    source,
    *,
    strip: Sequence[str] = ("model.",),
    within: Sequence[str] = (),
    only: str | None = None,
    require: str = "any",
    optional: Sequence[str] = (),
    what: str | None = None,
    hint: str = "",
) -> LoadReport:
    """Copy every tensor of ``source`` whose name and shape match into ``model``.

    Args:
        model: the module to fill (in place; its other tensors are left as they are).
        source: a checkpoint path (Lightning ``best.ckpt``, slim ``.pt``, a plain state
            dict file), a checkpoint dict or a state dict.
        strip: prefixes removed from the source keys that carry them, in order
            (``model.``: a Lightning checkpoint of a ferkit run).
        within: candidate sub-trees, in order: the first prefix some key carries
            selects those keys (prefix removed) and drops the rest, e.g. ``("dae.",)``
            takes a hybrid's DAE out of its checkpoint; none present = all keys.
        only: consider only model keys starting with this (e.g. ``"features."``).
        require: ``"any"`` (at least one tensor loads), ``"all"`` (every considered
            model tensor loads) or ``"exact"`` (all, and nothing in the source is left over).
        optional: ``fnmatch`` patterns of model keys that may stay unloaded under
            ``"all"`` / ``"exact"`` (e.g. ``"*num_batches_tracked"``).
        what: how errors name the source (default: the path).
        hint: appended to errors (e.g. "is it a CAE checkpoint?").

    Returns:
        A :class:`LoadReport`; ``str(report)`` reads "6/20 tensors".

    Raises:
        FerkitError: unreadable file, or ``require`` not met (the message names a few
            missing, misshaped and unexpected keys).
    """
    if require not in ("any", "all", "exact"):
        raise ValueError(f"require must be 'any', 'all' or 'exact', got {require!r}")
    state = dict(state_dict_from(source))  # a copy: the prefix helper edits in place
    for prefix in strip:
        consume_prefix_in_state_dict_if_present(state, prefix)
    for prefix in within:
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            break
    own = model.state_dict()
    keys = [k for k in own if only is None or k.startswith(only)]
    rep = LoadReport()
    for k in keys:
        if k not in state:
            rep.missing.append(k)
        elif not isinstance(state[k], torch.Tensor) or tuple(state[k].shape) != tuple(own[k].shape):
            rep.mismatched.append(k)
        else:
            rep.loaded.append(k)
    rep.unexpected = [k for k in state if k not in own]
    name = getattr(model, "model_name", type(model).__name__)
    where = what or (os.fspath(source) if isinstance(source, (str, os.PathLike)) else "weights")
    tail = f"; {hint}" if hint else ""
    if not rep.loaded and require == "any":
        raise FerkitError(f"{where}: no tensor fits {name}{_detail(rep)}{tail}")
    if require in ("all", "exact"):
        left = [k for k in rep.missing + rep.mismatched if not any(fnmatchcase(k, p) for p in optional)]
        if left or (require == "exact" and rep.unexpected):
            raise FerkitError(f"{where}: weights do not fit {name}{_detail(rep, left)}{tail}")
    model.load_state_dict({k: state[k] for k in rep.loaded}, strict=False)
    return rep


def _detail(rep: LoadReport, left: list[str] | None = None) -> str:
    parts = []
    missing = [k for k in (rep.missing if left is None else left) if k not in rep.mismatched]
    if missing:
        parts.append(f"{len(missing)} missing, e.g. {missing[:3]}")
    if rep.mismatched:
        parts.append(f"{len(rep.mismatched)} misshaped, e.g. {rep.mismatched[:3]}")
    if rep.unexpected:
        parts.append(f"{len(rep.unexpected)} unexpected, e.g. {rep.unexpected[:3]}")
    return f" ({'; '.join(parts)})" if parts else ""


def model_spec_from_hparams(hp: dict) -> dict:
    """The model spec (name, classes, labels, kwargs, input config) a training run saved."""
    return {
        "model": hp["model_name"],
        "num_classes": int(hp["num_classes"]),
        "labels": list(hp.get("labels") or FER7[: int(hp["num_classes"])]),
        "model_kwargs": dict(hp.get("model_kwargs") or {}),
        "input_config": hp.get("input_config"),
    }


def read_checkpoint(path) -> dict:
    """``torch.load`` a ferkit file onto the CPU.

    Raises:
        FerkitError: no such file, or it does not unpickle (truncated, not a checkpoint).
    """
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


def build_model(spec: dict, state: dict, where: str) -> nn.Module:
    """A registered model rebuilt from a saved spec and filled with exactly ``state`` (eval mode).

    Args:
        spec: ``model``, ``num_classes``, ``model_kwargs`` and ``input_config`` (a dict).
        state: the model's state dict (fp16 tensors are cast to the model's fp32).
        where: names the file in errors.

    Raises:
        FerkitError: the weights do not fit the model (missing, misshaped or extra tensors).
    """
    cfg = InputConfig.from_dict(spec["input_config"]) if spec.get("input_config") else None
    kwargs = {k: v for k, v in (spec.get("model_kwargs") or {}).items() if not _init_only(k)}
    model = create_model(
        spec["model"],
        num_classes=spec["num_classes"],
        in_chans=cfg.channels if cfg else None,
        input_size=cfg.size if cfg else None,
        **kwargs,
    )
    if cfg is not None:
        model.input_config = cfg
    load_weights(model, state, strip=(), require="exact", what=where)
    return model.eval()


def _model_from_checkpoint(ckpt, path, map_location="cpu") -> tuple[nn.Module, dict]:
    if isinstance(ckpt, dict) and ckpt.get("format") == SLIM_FORMAT:
        spec = {k: ckpt[k] for k in ("model", "num_classes", "labels", "model_kwargs", "input_config")}
        spec["meta"] = ckpt.get("meta", {})
        state = ckpt["state_dict"]
    elif isinstance(ckpt, dict) and "hyper_parameters" in ckpt and "state_dict" in ckpt:
        spec = model_spec_from_hparams(ckpt["hyper_parameters"])
        spec["hyper_parameters"] = ckpt["hyper_parameters"]
        # Only the backbone's tensors: the LightningModule's own buffers (class weights) stay out.
        state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    else:
        raise FerkitError(f"{path}: not a ferkit checkpoint (no model spec inside)")
    model = build_model(spec, state, os.fspath(path))
    spec["input_config"] = model.input_config
    spec["path"] = os.fspath(path)
    return model.to(map_location), spec


def load_checkpoint(path, map_location="cpu") -> tuple[nn.Module, dict]:
    """Load one trained model (Lightning checkpoint or slim file) for inference.

    Returns:
        ``(model in eval mode, spec)``; ``spec`` has ``model``, ``labels``,
        ``input_config`` (:class:`InputConfig`), ``model_kwargs``, ``path`` and, for
        training checkpoints, ``hyper_parameters``.

    Raises:
        FerkitError: missing or unreadable file, not a model file, or weights that do not fit.
    """
    return _model_from_checkpoint(read_checkpoint(path), path, map_location)


def require_classifier(spec: dict, model: nn.Module | None = None) -> None:
    """Refuse a loaded model that reconstructs images instead of scoring classes.

    Evaluation, comparison, ensembles and robustness sweeps need class scores; an
    autoencoder (:func:`ferkit.models.registry.model_task`) would fail deep inside them.

    Raises:
        FerkitError: one line naming the file and pointing to ``ferkit denoise-preview``.
    """
    from ferkit.models.registry import model_task

    name = spec.get("model") or getattr(model, "model_name", None)
    if name in (None, "ensemble"):  # an ensemble's members were checked when it was built
        return
    if model_task(name) != "classify":
        raise FerkitError(
            f"{spec.get('path') or name}: a {name} model reconstructs images and has no "
            "class scores (use 'ferkit denoise-preview' for autoencoders)"
        )


#: File format name -> reader ``(loaded dict, path, map_location) -> (model, spec)`` for model
#: files that are not one network (an ensemble); modules register theirs with
#: :func:`register_format_reader`.
FORMAT_READERS: dict = {}


def register_format_reader(fmt: str, reader) -> None:
    """Let :func:`load_model_any` read files whose ``format`` is ``fmt`` with ``reader``."""
    FORMAT_READERS[fmt] = reader


def _import_format_readers() -> None:
    """Import the modules that register a format reader (the registry pattern of
    :func:`ferkit.models.registry._import_families`: they import this module, not it them)."""
    import ferkit.models.ensemble  # noqa: F401 - registers ENSEMBLE_FORMAT


def load_model_any(ref, map_location="cpu") -> tuple[nn.Module, dict]:
    """Any saved model, read from disk once: a checkpoint, slim or ensemble file, a run
    folder, or a shipped name such as ``default``.

    Returns:
        ``(model in eval mode, spec)`` as :func:`load_checkpoint` returns; an ensemble's
        spec has ``model == "ensemble"`` and its ``members``.

    Raises:
        FerkitError: unknown name, missing or unreadable file, a format nothing registered.
    """
    from ferkit.models.pretrained import resolve_pretrained

    path = resolve_pretrained(ref)
    ckpt = read_checkpoint(path)
    fmt = ckpt.get("format") if isinstance(ckpt, dict) else None
    if isinstance(fmt, str) and fmt != SLIM_FORMAT:
        _import_format_readers()
        if fmt in FORMAT_READERS:
            return FORMAT_READERS[fmt](ckpt, path, map_location)
        raise FerkitError(f"{path}: a {fmt!r} file, not a ferkit model ({SLIM_FORMAT!r}, a training "
                          f"checkpoint) or ensemble ({ENSEMBLE_FORMAT!r})")
    return _model_from_checkpoint(ckpt, path, map_location)


def save_slim(model: nn.Module, spec: dict, path, *, half: bool = False, meta: dict | None = None) -> None:
    """Write the slim inference format (optionally fp16 weights, half the size), atomically.

    Args:
        model: a model from :func:`create_model` / :func:`load_checkpoint` (carries ``input_config``).
        spec: ``model``, ``labels`` and optionally ``model_kwargs`` and ``meta``.
        path: destination file; written to ``path.tmp`` then renamed.
        half: store floating tensors as fp16 (loading casts them back to fp32).
        meta: free-form metadata (e.g. ``version``) saved beside the weights.
    """
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
