"""Dataset sources: which items exist, their labels and splits (no decoding).

A *source* turns ``(root, split)`` into an :class:`Index`: item keys, canonical
label names, optional group ids (subject/actor, for subject-independent
splits), a loader that decodes one item, and a fingerprint that changes when the
underlying files change (it keys the decode cache).

Sources register with :func:`register_source`; :func:`detect_source` picks one
from the path when ``--dataset`` is not given.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import typing
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ferkit.errors import DataError
from ferkit.values import ValueMismatch, coerce_value, describe_type


@dataclass
class Index:
    """What a split of a dataset contains. Decoding happens later, through ``loader``."""

    source: str
    root: str
    split: str
    items: list  # keys passed to ``loader`` (paths, row numbers, (video, frame) pairs...)
    labels: list[str]  # canonical label per item
    loader: Callable[[object], np.ndarray]  # item key -> uint8 (H, W, C)
    fingerprint: str  # changes whenever the files behind the items change
    groups: list[str] | None = None  # subject/actor id per item (subject-independent splits)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count, found at indexing
    notes: list[str] = field(default_factory=list)  # human-readable remarks (e.g. split fallback)
    native_size: int | None = None  # all items already this square size (FER2013: 48)
    native_channels: int | None = None  # 1 if the source is gray
    # The margin ferkit cut faces with (ferkit.faces.face_square, a loader's face_crop);
    # None: the images are used as the source gives them. Training records it in the
    # model's InputConfig.face_margin.
    face_margin: float | None = None

    def __len__(self) -> int:
        return len(self.items)

    def subset(self, positions, split: str | None = None) -> Index:
        """A new Index of the items at ``positions`` (ints, in that order), renamed to ``split``."""
        positions = list(positions)
        return Index(
            source=self.source,
            root=self.root,
            split=split or self.split,
            items=[self.items[i] for i in positions],
            labels=[self.labels[i] for i in positions],
            loader=self.loader,
            fingerprint=hashlib.sha1(
                (self.fingerprint + str(split) + ",".join(map(str, positions))).encode()
            ).hexdigest(),
            groups=[self.groups[i] for i in positions] if self.groups is not None else None,
            skipped=dict(self.skipped),
            notes=list(self.notes),
            native_size=self.native_size,
            native_channels=self.native_channels,
            face_margin=self.face_margin,
        )


@dataclass
class SourceSpec:
    """A registered dataset layout: how to index it, how to recognise it, which splits it has.

    Attributes:
        name: the ``--dataset`` name. index: ``(root, split, **options) -> Index``.
        detect: ``path -> bool`` for auto-detection (None: never auto-detected).
        splits: the splits the layout provides natively. priority: higher is tried first.
    """

    name: str
    index: Callable[..., Index]  # (root, split, **options) -> Index
    detect: Callable[[Path], bool] | None
    splits: tuple[str, ...]  # splits the source provides natively
    description: str = ""
    priority: int = 0  # higher is tried first in detection

    def option_names(self) -> list[str]:
        """The keyword options ``index`` takes (besides root and split)."""
        kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        params = inspect.signature(self.index).parameters.values()
        return [p.name for p in params if p.kind in kinds and p.name not in ("root", "split")]

    def check_options(self, options: dict) -> dict:
        """``options`` coerced to the types ``index`` declares; refuses unknown options
        (its ``**_`` would drop a misspelt ``varient: original`` in silence) and values of
        the wrong type (the string ``"false"`` is true to Python).

        Raises:
            DataError: one line naming the dataset and the option.
        """
        unknown = sorted(set(options) - set(self.option_names()))
        if unknown:
            known = ", ".join(self.option_names()) or "none"
            raise DataError(f"dataset {self.name!r}: unknown source option(s) {', '.join(unknown)} "
                            f"(its options: {known})")
        try:
            hints = typing.get_type_hints(self.index)
        except Exception:  # noqa: BLE001 - an annotation that does not resolve: no type check
            hints = {}
        out = dict(options)
        for name, value in options.items():
            if name in hints:
                try:
                    out[name] = coerce_value(value, hints[name])
                except ValueMismatch:
                    raise DataError(f"dataset {self.name!r}: option {name} must be "
                                    f"{describe_type(hints[name])}, got {value!r}") from None
        return out


_SOURCES: dict[str, SourceSpec] = {}


def register_source(name, *, splits, detect=None, description="", priority=0):
    """Decorator registering ``index(root, split, **options) -> Index`` as dataset layout ``name``.

    Args:
        name: what ``--dataset`` and recipes call it.
        splits: the splits it provides natively (``train``, ``test``, ``all``...).
        detect: ``Path -> bool``, True when a path has this layout (None: only by name).
        description: one line for ``ferkit datasets``.
        priority: detection order, highest first (specific layouts above generic ones).
    """
    def deco(fn):
        _SOURCES[name] = SourceSpec(name, fn, detect, tuple(splits), description, priority)
        return fn

    return deco


def list_sources() -> list[SourceSpec]:
    """Every registered dataset layout, sorted by name."""
    _import_sources()
    return sorted(_SOURCES.values(), key=lambda s: s.name)


def get_source(name: str) -> SourceSpec:
    """The dataset layout registered as ``name``.

    Raises:
        DataError: unknown name (the message lists the known ones).
    """
    _import_sources()
    if name not in _SOURCES:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(sorted(_SOURCES))}")
    return _SOURCES[name]


def detect_source(root: str | os.PathLike) -> SourceSpec:
    """Pick the source whose layout matches ``root`` (the generic folder source last)."""
    _import_sources()
    p = Path(root)
    if not p.exists():
        raise DataError(f"{root}: no such file or directory")
    for spec in sorted(_SOURCES.values(), key=lambda s: -s.priority):
        if spec.detect is not None and spec.detect(p):
            return spec
    if p.is_file():
        raise DataError(f"{root}: not a recognised dataset file (expected a FER2013 CSV or a folder)")
    return _SOURCES["folders"]


def file_fingerprint(paths, extra: str = "") -> str:
    """Hash of (path, size, mtime) for every file: any edit, addition or removal changes it.

    Paths are hashed with their folder resolved (absolute, links followed), so the same data
    named two ways (``../shared/datasets/fer2013`` and ``/work/shared/datasets/fer2013``, or
    through a linked folder) shares one decode-cache entry instead of being decoded twice."""
    h = hashlib.sha1(extra.encode())
    real_dirs: dict[str, str] = {}  # one realpath per folder, not per file
    for p in paths:
        st = os.stat(p)
        folder, name = os.path.split(os.fspath(p))
        if folder not in real_dirs:
            real_dirs[folder] = os.path.realpath(folder or ".")
        h.update(f"{os.path.join(real_dirs[folder], name)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def skips_with_lines(bad: dict[str, list[int]], shown: int = 3) -> Counter:
    """``{reason: [line numbers]}`` -> skip counts whose keys name the first lines.

    ``{"malformed": [4, 9, 12, 30]}`` -> ``{"malformed (lines 4, 9, 12, ... 1 more)": 4}``:
    a user can open the file at the line instead of guessing which row was dropped.
    """
    out: Counter = Counter()
    for reason, lines in bad.items():
        more = f", ... {len(lines) - shown} more" if len(lines) > shown else ""
        word = "line" if len(lines) == 1 else "lines"
        out[f"{reason} ({word} {', '.join(map(str, lines[:shown]))}{more})"] += len(lines)
    return out


def _import_sources() -> None:
    from ferkit.data import fer2013, folders  # noqa: F401

    for mod in ("kdef", "rafdb", "jaffe", "ravdess"):
        try:
            __import__(f"ferkit.data.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"ferkit.data.{mod}":
                raise
