"""Argument types shared by the commands: a bad number is a usage error (exit 2) at parse
time, not a ValueError from deep inside a DataLoader after the model has loaded."""

from __future__ import annotations

import argparse
from pathlib import Path


def positive_int(text: str) -> int:
    """A whole number >= 1 (batch sizes, counts, devices)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {v}")
    return v


def non_negative_int(text: str) -> int:
    """A whole number >= 0 (camera indices: OpenCV crashed the process on --webcam -1)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {v}")
    return v


def weight(text: str) -> float:
    """A number in (0, 1]: the newest frame's weight in an average (nan, -1 or 5 printed NaN
    or 'probabilities' above 1)."""
    v = finite_float(text)
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text}")
    return v


def finite_float(text: str) -> float:
    """A finite number: nan and inf pass ``float`` (serve --max-upload-mb nan was a ValueError
    traceback, --batch-window-ms nan started a server whose batches never closed on time)."""
    import math

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
    return v


def mebibytes(text: str) -> float:
    """A positive, finite size in MiB (``export --max-file-mb``)."""
    v = finite_float(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a size in MiB above 0, got {text}")
    return v


def minutes(text: str) -> float:
    """A positive, finite number of minutes, at most a year (``--stop-after``, ``--max-time``)."""
    v = finite_float(text)
    if not 0 < v <= 525_600:
        raise argparse.ArgumentTypeError(f"expected minutes in (0, 525600], got {text}")
    return v


def _blocking_file(path: Path) -> Path | None:
    """The first existing ancestor of ``path`` that is not a folder (nothing can be made under it)."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def out_folder(text: str) -> str:
    """A folder to write into, made later: refused at parse time when it is an existing file or
    lies under one (train, evaluate and robustness ended in a FileExistsError traceback, after
    their whole run)."""
    p = Path(text)
    if p.exists() and not p.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder")
    if blocker := _blocking_file(p):
        raise argparse.ArgumentTypeError(f"{text}: {blocker} is a file, not a folder")
    return text


def out_file(text: str) -> str:
    """A file to write, made later: refused at parse time when it is an existing folder or lies
    under a file (export and ensemble ended in an IsADirectoryError traceback)."""
    p = Path(text)
    if p.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name in it")
    if blocker := _blocking_file(p):
        raise argparse.ArgumentTypeError(f"{text}: {blocker} is a file, not a folder")
    return text


def run_options() -> argparse.ArgumentParser:
    """Options of the commands that run a model over a dataset split (evaluate, compare,
    robustness, denoise-preview), for ``sub.add_parser(..., parents=[run_options()])``:
    ``--batch-size`` (faces per forward pass, default 256), ``--device`` (auto, cpu, cuda;
    default auto) and ``--no-progress``. One definition, so they cannot drift apart."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("running")  # listed after the command's own options
    g.add_argument("--batch-size", type=positive_int, default=256,
                   help="faces per forward pass (default: 256)")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where the model runs; auto = cuda when available (default: auto)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def json_option(what: str = "print one JSON object on stdout") -> argparse.ArgumentParser:
    """The ``--json`` flag as a parent parser (``what`` is its help text)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--json", action="store_true", help=what)
    return p


def split_options() -> argparse.ArgumentParser:
    """Which faces a trained model is run on (evaluate, compare, robustness,
    denoise-preview; all read them through ``ferkit.training.datamodule.checkpoint_split``):
    ``--data`` (required), ``--dataset``, ``--split`` (default test)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("data")
    g.add_argument("--data", required=True, help="dataset path")
    g.add_argument("--dataset", help="force the dataset layout (default: the checkpoint's run, else auto-detect)")
    g.add_argument("--split", default="test",
                   help="split: train, val, test, all, publictest, privatetest... (default: test; "
                   "FER2013's test is PublicTest + PrivateTest; the Kaggle folders hold "
                   "PublicTest only)")
    return p


#: ``--model`` of predict and serve: both load through ``Recognizer.from_pretrained``.
MODEL_HELP = ("a shipped model by name ('default', 'default-int8', 'fast': see 'ferkit models'), a "
              "checkpoint (.ckpt/.pt), an .onnx file or a run folder (default: default)")
#: ``--backend`` of predict and serve.
BACKEND_HELP = ("inference engine (default auto: onnxruntime on the CPU, about 4x PyTorch's CPU "
                "speed, same scores to 1e-4; torch on a GPU; torch needs the ferkit[train] extra)")
