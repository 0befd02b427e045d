"""Argument types shared by the commands: a bad number is a usage error (exit 2) at parse
time, not a ValueError from deep inside a DataLoader after the model has loaded."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """A whole number >= 1 (batch sizes, counts, devices)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {v}")
    return v
