"""Public definitions in the library's lower layers carry docstrings.

``python tests/test_docstrings.py`` prints the counts per layer (all of ``src/ferkit`` too).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "ferkit"

#: Layers held to the rule (inference/, serve/ and commands/ are not yet).
LAYERS = ("data", "models", "training/recipes.py", "evaluation")

#: Undocumented public definitions known today, in files other work is changing: remove
#: an entry when it gets its docstring.
KNOWN = {
    "data/fer2013.py:index_fer2013_csv",
    "data/fer2013.py:index_fer2013_folders",
    "data/images.py:is_image_file",
    "data/transforms.py:BatchAugment.extra_repr",
    "data/transforms.py:BatchAugment.forward",
}


def public_definitions(path: Path):
    """(qualified name, node) of module-level functions/classes and their classes' methods
    whose names do not start with ``_``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            yield node.name, node
            if isinstance(node, ast.ClassDef):
                for sub in node.body:
                    if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)) and not sub.name.startswith("_"):
                        yield f"{node.name}.{sub.name}", sub


def _files(layer: str) -> list[Path]:
    p = SRC / layer
    return [p] if p.is_file() else sorted(p.rglob("*.py"))


def undocumented(layer: str) -> tuple[int, list[str]]:
    """(public definitions, ``file:name`` of those without a docstring) in ``layer``."""
    total, missing = 0, []
    for f in _files(layer):
        for name, node in public_definitions(f):
            total += 1
            if ast.get_docstring(node) is None:
                missing.append(f"{f.relative_to(SRC).as_posix()}:{name}")
    return total, missing


@pytest.mark.parametrize("layer", LAYERS)
def test_public_definitions_have_docstrings(layer):
    _, missing = undocumented(layer)
    new = sorted(set(missing) - KNOWN)
    assert not new, "public definitions without a docstring (shapes, units, errors, sources):\n" + "\n".join(new)


def test_the_counter_sees_methods_and_skips_private_names(tmp_path):
    f = tmp_path / "m.py"
    f.write_text('class A:\n    """doc"""\n    def run(self):\n        pass\n    def _hidden(self):\n        pass\n'
                 "def _private():\n    pass\n")
    assert [n for n, _ in public_definitions(f)] == ["A", "A.run"]


if __name__ == "__main__":
    for layer in (*LAYERS, "."):
        total, missing = undocumented(layer)
        print(f"{'src/ferkit' if layer == '.' else layer:<22} {len(missing):>4} of {total:>4} public definitions "
              "without a docstring")
