"""The GPU job's CPU smoke run: the same script, toy scale, checked for what it leaves behind.

``FERKIT_GPU_SMOKE=1 tools/gpu/job.sh OUT`` must leave at most 8 plain files, none over 16 MiB,
a complete ``summary.json``, and fp16 model files that the Recognizer loads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")  # the job trains: not part of the light (no-torch) CI stage
pytest.importorskip("lightning")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools" / "gpu"))

from pack_data import pack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke_run(fer2013_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu-job")
    archive = pack(fer2013_dir, tmp / "fer2013-small.tar.gz", per_class=20)
    assert archive == 2 * 7 * 20
    out = tmp / "out"
    env = dict(os.environ, FERKIT_GPU_SMOKE="1", FERKIT_GPU_DATA=str(tmp / "fer2013-small.tar.gz"),
               PYTHON=sys.executable, OMP_NUM_THREADS="1")
    r = subprocess.run(["bash", str(REPO / "tools" / "gpu" / "job.sh"), str(out), "--work", str(tmp / "work")],
                       env=env, capture_output=True, text=True, timeout=900, check=False)
    return out, r, tmp


def test_smoke_job_writes_the_promised_files(smoke_run):
    out, r, _ = smoke_run
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    entries = list(out.iterdir())
    assert len(entries) <= 8 and all(e.is_file() for e in entries)  # no sub-folders
    assert all(e.stat().st_size <= 16 * 2**20 for e in entries)
    assert {e.name for e in entries} == {"job.log", "summary.json", "members.log", "vgg-a.pt", "resnet18.pt",
                                         "vgg-b.pt"}


def test_smoke_summary_has_every_figure(smoke_run):
    out, _, _ = smoke_run
    s = json.loads((out / "summary.json").read_text())
    assert s["ok"] and s["errors"] == [] and s["smoke"] is True and s["job"] == "ensemble"
    assert set(s["members"]) == {"vgg-a", "resnet18", "vgg-b"}
    for name, m in s["members"].items():
        assert m["returncode"] == 0 and m["epochs_trained"] >= 1, name
        assert m["file"] == f"{name}.pt" and m["file_bytes"] > 0
        assert m["val"]["n"] > 0 and m["train_images_per_s"] > 0 and m["forward_gflop_per_image"] > 0
        assert m["max_time_min"] == pytest.approx(0.4)  # the budget reached the trainer
    for name in ("vgg-a", "resnet18", "vgg-b", "ensemble"):
        for view in ("plain", "tta"):
            ev = s["evaluations"][name][view]
            assert ev["n"] == 7 * 20  # every PublicTest face of the small archive
            assert set(ev["per_class_recall"]) == {"angry", "disgust", "fear", "happy", "sad", "surprise",
                                                   "neutral"}
            assert np.array(ev["confusion"]).sum() == ev["n"]
    assert set(s["phases"]) >= {"unpack", "decode", "evaluate"}
    assert "gpu" in s["env"] and s["elapsed_s"] > 0


def test_smoke_models_load_in_the_recognizer(smoke_run):
    from ferkit import Recognizer

    out, _, _ = smoke_run
    face = np.random.default_rng(0).integers(0, 255, (48, 48), dtype=np.uint8)
    for f in ("vgg-a.pt", "resnet18.pt", "vgg-b.pt"):
        rec = Recognizer.from_pretrained(str(out / f), detector="none", backend="torch")
        faces = rec.predict(face)
        assert len(faces) == 1 and abs(sum(faces[0].scores.values()) - 1) < 1e-3
    vgg = Recognizer.from_pretrained(str(out / "vgg-a.pt"), detector="none", backend="torch")
    assert vgg.input_config.tta == "ten-crop"  # the job records the test-time views in the file


def test_job_refuses_a_missing_archive(tmp_path):
    env = dict(os.environ, FERKIT_GPU_SMOKE="1", FERKIT_GPU_DATA=str(tmp_path / "nope.tar.gz"),
               PYTHON=sys.executable)
    r = subprocess.run(["bash", str(REPO / "tools" / "gpu" / "job.sh"), str(tmp_path / "out")], env=env,
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode != 0 and "nope.tar.gz not found" in r.stderr


@pytest.mark.parametrize("job", ["ensemble", "li-full", "boulis-full"])
@pytest.mark.parametrize("smoke", [False, True])
def test_every_job_definition_resolves(job, smoke):
    """Each job's members are valid recipes with the job's overrides (GPU and smoke alike) and
    build their networks offline; the full smoke runs of li-full and boulis-full are in
    docs/gpu.md (minutes each, so not in the suite)."""
    import job as gpu_job  # tools/gpu/job.py

    from ferkit.models.registry import create_model
    from ferkit.training.recipes import load_recipe

    spec = gpu_job.JOBS[job]
    assert len(spec.get("stage_shares", [1.0])) == len(spec["stages"])
    names = [m[0] for stage in spec["stages"] for m in stage]
    assert len(names) == len(set(names))
    for members in spec.get("ensembles", {}).values():
        assert set(members) <= set(names)
    for stage in spec["stages"]:
        for name, recipe, sets, _ship in stage:
            sets = {**(gpu_job._SMOKE_RUN if smoke else gpu_job._GPU_RUN), **sets}
            if smoke:
                for key, extra in spec.get("smoke", {}).items():
                    if key in name or key in recipe:
                        sets = {**sets, **extra}
            sets = {k: (None if isinstance(v, str) and v.startswith("{run:") else v) for k, v in sets.items()}
            r = load_recipe(recipe).override(**sets)
            if smoke:  # the toy-scale networks are built (no ImageNet or DAE weights needed)
                create_model(r.model, in_chans=r.in_chans, input_size=r.input_size, **r.model_kwargs)
