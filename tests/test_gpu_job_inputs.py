"""Bad input to the GPU job's tools: one line, exit status 2, nothing half-made left behind.

``tools/gpu/job.sh`` runs on a device machine whose minutes are counted: a wrong argument must
be refused before the environment probe and the unpacking, and a bad archive must not leave a
partial dataset that a rerun would train on. ``pack_data.py`` must not write a wrong archive.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools" / "gpu"))

import job
import pack_data


def _tar(path: Path, members) -> Path:
    with tarfile.open(path, "w:gz") as t:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            if data is None:  # a symbolic link out of the folder
                ti.type, ti.linkname = tarfile.SYMTYPE, "/etc"
                t.addfile(ti)
            else:
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
    return path


@pytest.fixture
def kaggle(tmp_path) -> Path:
    for split in ("train", "test"):
        for cls in ("happy", "sad"):
            d = tmp_path / "fer" / split / cls
            d.mkdir(parents=True)
            for i in range(3):
                (d / f"{i}.jpg").write_bytes(b"jpg")
    return tmp_path / "fer"


def _job_main(argv, monkeypatch, archive: Path, capsys) -> str:
    monkeypatch.setenv("FERKIT_GPU_DATA", str(archive))
    with pytest.raises(SystemExit) as e:
        job.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    return err[-1]


@pytest.mark.parametrize(("budget", "msg"), [("0", "got 0.0"), ("-1", "got -1.0"), ("nan", "got nan"),
                                             ("inf", "got inf"), ("1000", "got 1000.0")])
def test_job_refuses_a_budget_it_cannot_keep(budget, msg, tmp_path, kaggle, monkeypatch, capsys):
    # before: a 0 / negative budget unpacked, decoded and started every member to fail;
    # nan stopped every member at once; a budget past the job's wall limit trained on and
    # then had no time left for any export or evaluation (the scratch folder is deleted)
    archive = tmp_path / "a.tar.gz"
    pack_data.pack(kaggle, archive)
    line = _job_main([str(tmp_path / "out"), "--budget", budget], monkeypatch, archive, capsys)
    assert "--budget must be minutes in (0, " in line and msg in line, line
    assert not (tmp_path / "out").exists()


def test_job_refuses_out_or_work_that_is_a_file(tmp_path, kaggle, monkeypatch, capsys):
    archive = pack_data.pack(kaggle, tmp_path / "a.tar.gz") and tmp_path / "a.tar.gz"
    f = tmp_path / "afile"
    f.write_text("x")
    assert "OUT " + str(f) + " is a file" in _job_main([str(f)], monkeypatch, archive, capsys)  # was a traceback
    assert "--work " + str(f) + " is a file" in _job_main([str(tmp_path / "o"), "--work", str(f)], monkeypatch,
                                                          archive, capsys)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "scratch"))
    assert f"cannot make {f / 'sub'}" in _job_main([str(f / "sub")], monkeypatch, archive, capsys)
    # the default scratch folder (TMPDIR/ferkit-gpu-PID) was made before OUT and left behind
    assert not (tmp_path / "scratch").exists()


def test_job_refuses_a_missing_or_foreign_archive_before_starting(tmp_path, monkeypatch, capsys):
    assert "not found" in _job_main([str(tmp_path / "o")], monkeypatch, tmp_path / "none.tar.gz", capsys)
    bad = tmp_path / "bad.tar.gz"
    bad.write_text("not an archive")
    assert "is not a tar archive" in _job_main([str(tmp_path / "o")], monkeypatch, bad, capsys)  # was a traceback


@pytest.mark.parametrize(("members", "msg"), [
    ([("train/happy/a.jpg", b"x"), ("../../escaped.jpg", b"x")], "OutsideDestinationError"),
    ([("train", None)], "AbsoluteLinkError"),
    ([("test/happy/a.jpg", b"x")], "has no train/ folder"),
])
def test_job_unpacks_safely_and_leaves_no_partial_data(members, msg, tmp_path, capsys):
    archive = _tar(tmp_path / "a.tar.gz", members)
    work = tmp_path / "work" / "w"
    work.mkdir(parents=True)
    j = job.Job(tmp_path / "out", "ensemble", 0.1, archive, work)
    with pytest.raises(SystemExit) as e:
        j.prepare_data()
    assert e.value.code == 2  # was a tarfile traceback (exit 1) for the refused members
    assert msg in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "escaped.jpg").exists() and not (tmp_path / "work" / "escaped.jpg").exists()
    assert list(work.iterdir()) == []  # no data/ a rerun with this --work would take for the dataset
    assert msg in (tmp_path / "out" / "summary.json").read_text()


def test_job_refuses_a_truncated_archive(tmp_path, kaggle, capsys):
    archive = tmp_path / "a.tar.gz"
    pack_data.pack(kaggle, archive)
    raw = archive.read_bytes()
    archive.write_bytes(raw[: len(raw) // 2])
    j = job.Job(tmp_path / "out", "ensemble", 0.1, archive, tmp_path / "work")
    with pytest.raises(SystemExit) as e:
        j.prepare_data()
    assert e.value.code == 2 and "cannot unpack" in capsys.readouterr().err


def _pack_cli(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "tools" / "gpu" / "pack_data.py"), *map(str, argv)],
                          capture_output=True, text=True, check=False)


@pytest.mark.parametrize(("src", "dest", "extra", "msg"), [
    ("{tmp}/missing", "{tmp}/a.tar.gz", [], "is not a FER2013 Kaggle folder"),
    ("{tmp}/afile", "{tmp}/a.tar.gz", [], "is not a FER2013 Kaggle folder"),
    ("{tmp}/empty", "{tmp}/a.tar.gz", [], "no images in train/<class>/ and test/<class>/"),
    # files[:0] kept every image and files[:-1] dropped one per class, both with exit 0
    ("{kaggle}", "{tmp}/a.tar.gz", ["--per-class", "0"], "--per-class must be a whole number >= 1, got 0"),
    ("{kaggle}", "{tmp}/a.tar.gz", ["--per-class", "-1"], "got -1"),
    # a folder or a path under a file as the archive: tracebacks (and a stray .tmp file)
    ("{kaggle}", "{tmp}/outdir", [], "is a folder; give the archive's file name"),
    ("{kaggle}", "{tmp}/afile/a.tar.gz", [], "cannot make the folder for"),
])
def test_pack_data_refuses_bad_input_in_one_line(src, dest, extra, msg, tmp_path, kaggle):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "outdir").mkdir()
    for split in ("train", "test"):
        (tmp_path / "empty" / split / "happy").mkdir(parents=True)
    before = set(tmp_path.rglob("*"))
    fill = {"tmp": tmp_path, "kaggle": kaggle}
    r = _pack_cli(src.format(**fill), dest.format(**fill), *extra)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert msg in lines[-1] and "Traceback" not in r.stderr, r.stderr
    assert set(tmp_path.rglob("*")) == before  # no archive, no .tmp left


def test_pack_data_per_class_keeps_that_many(tmp_path, kaggle):
    assert pack_data.pack(kaggle, tmp_path / "a.tar.gz", per_class=2) == 2 * 2 * 2
    with tarfile.open(tmp_path / "a.tar.gz") as t:
        assert sorted(t.getnames()) == sorted(f"{s}/{c}/{i}.jpg" for s in ("train", "test")
                                              for c in ("happy", "sad") for i in (0, 1))


def test_job_sh_paths_are_relative_to_where_it_runs(tmp_path, kaggle):
    # job.sh used to cd into the checkout first: 'job.sh out' run elsewhere wrote out/ into the
    # repository and FERKIT_GPU_DATA=a.tar.gz was looked for there ("not found").
    pack_data.pack(kaggle, tmp_path / "a.tar.gz")
    (tmp_path / "afile").write_text("x")
    r = subprocess.run(["bash", str(REPO / "tools" / "gpu" / "job.sh"), "afile"], cwd=tmp_path,
                       env={"PATH": "/usr/bin:/bin", "FERKIT_GPU_DATA": "a.tar.gz", "FERKIT_GPU_SMOKE": "1",
                            "PYTHON": sys.executable},
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 2 and f"OUT {tmp_path / 'afile'} is a file" in r.stderr, r.stderr
    r = subprocess.run(["bash", str(REPO / "tools" / "gpu" / "job.sh"), "o"], cwd=tmp_path,
                       env={"PATH": "/usr/bin:/bin", "FERKIT_GPU_DATA": "none.tar.gz", "PYTHON": sys.executable},
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 2 and f"{tmp_path / 'none.tar.gz'} not found" in r.stderr, r.stderr
