"""README is a guide that starts with two commands, and .ci/run runs exactly those two, in order."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.DOTALL)
    assert block, "README has no bash block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_two_commands_light_first():
    first, second = _readme_commands()  # exactly two
    assert first == "pip install . && ferkit predict --demo"  # no PyTorch to see it work
    assert "torch" not in first and "pytest" in second and ".[dev]" in second


def test_ci_runs_the_readme_commands_verbatim_and_in_order():
    ci = (ROOT / ".ci" / "run").read_text()
    lines = [line.replace("pip install -q ", "pip install ") for line in ci.splitlines()]  # quiet pip only
    at = []
    for cmd in _readme_commands():
        hits = [i for i, line in enumerate(lines) if line.strip() == cmd]
        assert hits, f".ci/run does not run README's {cmd!r}"
        at.append(hits[0])
    assert at == sorted(at), "README's commands run out of order in .ci/run"


def test_readme_is_a_guide_of_at_most_200_lines_whose_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), f"README links to a missing {target}"
