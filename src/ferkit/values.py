"""Settings from YAML and the command line, coerced to the types their code declares.

Recipe fields (:mod:`ferkit.training.recipe_checks`) and dataset source options
(:meth:`ferkit.data.sources.SourceSpec.check_options`) arrive as YAML values; both
are checked against their annotations here, the same way.
"""

from __future__ import annotations

import math
import types
import typing


def describe_type(tp) -> str:
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    if tp is dict:
        return "a mapping {key: value}"
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        args = typing.get_args(tp)
        n = f"{len(args)} " if origin is tuple else ""
        return f"a list of {n}{describe_type(args[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin in (typing.Union, types.UnionType):
        parts = [describe_type(a) for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(parts)
    return getattr(tp, "__name__", str(tp))


class ValueMismatch(Exception):
    """A value that does not fit the declared type (callers phrase the error)."""


def coerce_value(value, tp):
    """``value`` as type ``tp`` (from an annotation), or raise :class:`ValueMismatch`.

    Lenient only where YAML is surprising: ``1e-3`` (a string to YAML 1.1) is a
    number, ``2.0`` is the integer 2, ``32`` is the string ``"32"`` where a string
    is expected of a number-like choice (``precision``). Booleans are never numbers.
    """
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce_value(value, a)
            except ValueMismatch:
                pass
        raise ValueMismatch
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValueMismatch
    if tp is int:
        if isinstance(value, bool):
            raise ValueMismatch
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueMismatch
    if tp is float:
        if isinstance(value, bool):
            raise ValueMismatch
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ValueMismatch from None
        if isinstance(value, (int, float)) and math.isfinite(value):
            return float(value)
        raise ValueMismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise ValueMismatch
    if tp is dict:
        if isinstance(value, dict):
            return value
        raise ValueMismatch
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, (list, tuple)):
            return [coerce_value(v, item) for v in value]
        raise ValueMismatch
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, (list, tuple)) and len(value) == len(args):
            return tuple(coerce_value(v, a) for v, a in zip(value, args, strict=True))
        raise ValueMismatch
    return value


def env_number(env, name: str, default, kind=float, low: float = 0.0, low_open: bool = True):
    """The number in environment variable ``name`` (``default`` when unset or empty).

    Args:
        env: the environment mapping (``os.environ``). kind: ``float`` or ``int``.
        low, low_open: the value must be ``> low`` (``>= low`` when ``low_open`` is False).

    Raises:
        FerkitError: one line naming the variable for text that is not a finite number of
            ``kind`` in range (``int("abc")`` or ``int(nan)`` were tracebacks in every worker).
    """
    from ferkit.errors import FerkitError

    text = env.get(name)
    if not text:
        return default
    try:
        v = kind(text)
    except ValueError:
        v = None
    if v is None or not math.isfinite(v) or (v <= low if low_open else v < low):
        what = "a whole number" if kind is int else "a finite number"
        raise FerkitError(f"{name}={text!r}: must be {what} {'>' if low_open else '>='} {low:g}")
    return v
