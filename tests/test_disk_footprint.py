"""The test suite and CI leave no files behind: the CI machine keeps its disk between runs.

A run of the suite once wrote about 11 GB of toy checkpoints into pytest's temporary folders,
which pytest kept (the last three runs), and every `.ci/run` left its two virtual environments
(6 GB) in /tmp; after a few runs the disk was full and CI failed with 61 errors.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CI_RUN = REPO / ".ci" / "run"


def _project_ini_lines() -> list[str]:
    """The project's [tool.pytest.ini_options] retention settings as pytest.ini lines."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    opts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    keys = ("tmp_path_retention_policy", "tmp_path_retention_count")
    return [f"{k} = {opts[k]}" for k in keys if k in opts]


def test_a_passing_tests_temporary_files_are_deleted_and_a_failing_ones_kept(tmp_path):
    """Under the project's pytest settings, tmp_path outlives only tests that fail."""
    project = tmp_path / "inner"
    project.mkdir()
    (project / "pytest.ini").write_text("\n".join(["[pytest]", *_project_ini_lines()]) + "\n")
    record = tmp_path / "paths.txt"
    (project / "test_inner.py").write_text(
        "from pathlib import Path\n"
        f"RECORD = Path({str(record)!r})\n"
        "def _write(tmp_path, name):\n"
        "    (tmp_path / 'weights.bin').write_bytes(b'0' * 1_000_000)\n"
        "    with RECORD.open('a') as f:\n"
        "        f.write(f'{name} {tmp_path}\\n')\n"
        "def test_passes(tmp_path):\n"
        "    _write(tmp_path, 'passed')\n"
        "def test_fails(tmp_path):\n"
        "    _write(tmp_path, 'failed')\n"
        "    assert False, 'meant to fail'\n"
    )
    env = {**os.environ, "PYTEST_DEBUG_TEMPROOT": str(tmp_path / "temproot")}
    (tmp_path / "temproot").mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         str(project)],
        check=False, cwd=project, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr  # one test fails, on purpose
    paths = dict(line.split(" ", 1) for line in record.read_text().splitlines())
    assert not Path(paths["passed"]).exists(), "a passing test's tmp_path was kept"
    assert (Path(paths["failed"]) / "weights.bin").is_file(), "a failing test's files were lost"


@pytest.mark.skipif(sys.platform == "win32", reason=".ci/run is a bash script")
def test_ci_run_removes_its_temporary_folders_when_it_fails(tmp_path):
    """.ci/run's virtual environments go when it exits, even when a step fails."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    # Stands in for python3.11: `-m venv DIR` makes DIR with an activate script that puts a
    # python first on PATH which fails, as a broken pip install would.
    fake = fake_bin / "python3.11"
    fake.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then\n'
        '  mkdir -p "$3/bin"\n'
        "  printf '#!/bin/sh\\nexit 3\\n' > \"$3/bin/python\"\n"
        '  chmod +x "$3/bin/python"\n'
        '  echo "PATH=\\"$3/bin:\\$PATH\\"" > "$3/bin/activate"\n'
        "  exit 0\n"
        "fi\n"
        "exit 3\n"
    )
    fake.chmod(0o755)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERKIT_CI_")}
    env.update(PATH=f"{fake_bin}{os.pathsep}{env.get('PATH', '')}", TMPDIR=str(scratch))
    proc = subprocess.run(["bash", str(CI_RUN)], check=False, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 3, proc.stdout + proc.stderr  # the fake pip step's failure
    assert list(scratch.iterdir()) == [], f"left behind: {sorted(scratch.iterdir())}"
