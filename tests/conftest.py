"""Shared fixtures: tiny generated datasets in official layouts, and ../shared when present."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ferkit.labels import FER7

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FERKIT_SHARED", REPO.parent / "shared"))
FER2013_DIR = SHARED / "datasets" / "fer2013"
FIXTURES = SHARED / "fixtures"


#: Packages of the ``train`` extra: the light CI install (base + serve) has none of them.
TRAIN_EXTRA = ("torch", "torchvision", "lightning", "torchmetrics", "onnx", "matplotlib")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """Without the train extra, a test module that imports it is skipped, not an error.

    Modules should say so themselves (``pytest.importorskip("torch")`` at the top);
    this net keeps the light CI run (no PyTorch) green when a new test file forgets,
    and still fails on any other import error.
    """
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and isinstance(collector, pytest.Module):
        text = str(rep.longrepr)
        missing = [m for m in TRAIN_EXTRA if f"No module named '{m}" in text]
        if missing and _missing(missing[0]):
            rep.outcome = "skipped"
            rep.longrepr = (str(collector.path), 0, f"Skipped: needs the train extra ({missing[0]})")


def _missing(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return True
    return False


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    # Every test session gets its own decode cache: tests never read or fill a user's cache.
    # Session scope: module- and session-scoped fixtures (a trained run shared by a file's
    # tests) are set up before any function-scoped one, and used to decode into
    # ~/.cache/ferkit (a hundred stale entries after a few runs of the suite).
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FERKIT_CACHE", str(tmp_path_factory.getbasetemp() / "ferkit-cache"))
        yield


@pytest.fixture(scope="session")
def fer2013_dir():
    if not (FER2013_DIR / "train").is_dir():
        pytest.skip(f"real FER2013 not available at {FER2013_DIR} (../shared is absent)")
    return FER2013_DIR


@pytest.fixture(scope="session")
def shared_fixtures():
    if not FIXTURES.is_dir():
        pytest.skip(f"{FIXTURES} not available (../shared is absent)")
    return FIXTURES


def face_like(label: int, size: int = 48, seed: int = 0) -> np.ndarray:
    """A synthetic 'face' whose pattern depends on the label, so tiny models can learn it."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 60, (size, size)).astype(np.float32)
    band = size // len(FER7)
    img[label * band : (label + 1) * band, :] += 180
    return np.clip(img, 0, 255).astype(np.uint8)


def load_script(path: Path):
    """A script outside the package (benchmarks/, tools/) imported as a module, to call its main()."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write_fer_csv(path: Path, n_per_split: int = 10, header: str = "emotion,pixels,Usage") -> Path:
    """A tiny FER2013 CSV (10 rows per Usage by default) in either header variant."""
    cols = [c.strip().lower() for c in header.split(",")]
    lines = [header]
    i = 0
    for usage in ("Training", "PublicTest", "PrivateTest"):
        for k in range(n_per_split):
            lab = k % 7
            px = " ".join(map(str, face_like(lab, seed=i).ravel()))
            row = {"emotion": str(lab), "pixels": px, "usage": usage}
            lines.append(",".join(row[c] for c in cols))
            i += 1
    path.write_text("\n".join(lines) + "\n")
    return path


def write_class_tree(root: Path, classes=FER7, n: int = 6, size: int = 48, splits=("train", "test"),
                     prefix=None, mode: str = "L") -> Path:
    """``root/<split>/<class>/img.png`` (or ``root/<class>/`` when splits is empty)."""
    i = 0
    for split in splits or (None,):
        for ci, cls in enumerate(classes):
            d = root / split / cls if split else root / cls
            d.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                arr = face_like(ci % 7, size, seed=i)
                im = Image.fromarray(arr, "L").convert(mode)
                pre = prefix[split] if prefix else "img"
                im.save(d / f"{pre}_{i:05d}.png")
                i += 1
    return root


@pytest.fixture
def tiny_fer_csv(tmp_path):
    return write_fer_csv(tmp_path / "fer2013.csv")


@pytest.fixture
def tiny_tree(tmp_path):
    return write_class_tree(tmp_path / "tree")
