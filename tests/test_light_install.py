"""The base install predicts without PyTorch (issue 18).

Each test runs ferkit in a subprocess whose ``sitecustomize`` makes the packages of
the ``train`` and ``plot`` extras unimportable (a meta-path finder that refuses
them), so the full development environment checks what a ``pip install ferkit``
user gets; in the light CI environment, where they are really absent, the blocker
changes nothing. The subprocess then asserts that none of them got imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import pytest

REPO = Path(__file__).resolve().parents[1]
ASTRONAUT = REPO / "src" / "ferkit" / "assets" / "astronaut.png"

#: The packages of the ``train`` / ``plot`` extras: never needed to predict or serve.
HEAVY = ("torch", "torchvision", "lightning", "torchmetrics", "matplotlib", "onnx")

_BLOCKER = f"""
import sys
from importlib.abc import MetaPathFinder

class _Blocker(MetaPathFinder):
    # Refuse the extras' packages as if they were not installed.
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {HEAVY!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        return None

sys.meta_path.insert(0, _Blocker())
"""

_CHECK = f"""
import sys
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
assert not heavy, f"imported without need: {{heavy}}"
"""


@pytest.fixture(scope="module")
def light_env(tmp_path_factory):
    site = tmp_path_factory.mktemp("light-site")
    (site / "sitecustomize.py").write_text(_BLOCKER)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(site), str(REPO / "src"), env.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)
    return env


def run_light(env, code: str, timeout: int = 120) -> subprocess.CompletedProcess:
    code = textwrap.dedent(code) + _CHECK
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_the_blocker_blocks(light_env):
    r = run_light(light_env, "import importlib.util\ntry:\n import torch\nexcept ImportError: pass\n")
    assert r.returncode == 0, r.stderr[-800:]


def test_predict_demo_folder_and_video_without_torch(light_env, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.png").write_bytes(ASTRONAUT.read_bytes())
    (folder / "broken.jpg").write_bytes(b"not an image")
    bgr = cv2.imread(str(ASTRONAUT))
    video = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, bgr.shape[1::-1])
    for _ in range(4):
        w.write(bgr)
    w.release()
    out = tmp_path / "faces.jsonl"
    r = run_light(
        light_env,
        f"""
        from ferkit.cli import main
        assert main(["predict", "--demo", "--no-progress"]) == 0
        rc = main(["predict", {str(folder)!r}, {str(video)!r}, "--no-progress", "-o", {str(out)!r}])
        assert rc == 1, rc  # the broken file is counted and reported, the rest is done
        """,
    )
    assert r.returncode == 0, r.stderr[-1500:]
    assert "happy" in r.stdout  # the demo's readable output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    photo = [d for d in records if d["source"].endswith("a.png")]
    frames = [d for d in records if d["source"].endswith("clip.avi")]
    assert len(photo) == 1 and photo[0]["label"] == "happy"
    assert len(frames) == 4 and all(d["label"] == "happy" for d in frames)
    assert "broken.jpg" in r.stderr


def test_recognizer_defaults_to_the_shipped_onnx_without_torch(light_env):
    r = run_light(
        light_env,
        f"""
        from ferkit import Recognizer
        rec = Recognizer.from_pretrained("default", device="auto")
        assert rec.backend == "onnx", rec
        faces = rec.predict({str(ASTRONAUT)!r})
        assert len(faces) == 1 and faces[0].label == "happy", faces
        print(rec.version)
        """,
    )
    assert r.returncode == 0, r.stderr[-1500:]
    assert r.stdout.strip().startswith("vgg-fer-")


def test_service_page_and_api_without_torch(light_env):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    r = run_light(
        light_env,
        f"""
        from fastapi.testclient import TestClient
        from ferkit.serve.app import create_app
        with TestClient(create_app(model="default")) as c:
            assert c.get("/").status_code == 200
            with open({str(ASTRONAUT)!r}, "rb") as f:
                resp = c.post("/v1/predict", files={{"file": ("a.png", f, "image/png")}})
            assert resp.status_code == 200, resp.text
            faces = resp.json()["faces"]
            assert len(faces) == 1 and faces[0]["label"] == "happy", faces
            assert c.get("/v1/models").json()["models"][0]["backend"] == "onnx"
        """,
    )
    assert r.returncode == 0, r.stderr[-1500:]


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "ferkit-default", "--data", "."],
        ["evaluate", "default", "--data", "."],
        ["export", "default"],
        ["export", "--shipped"],
        ["predict", "--demo", "--backend", "torch"],
        ["predict", "--demo", "--model", str(REPO / "src" / "ferkit" / "weights" / "default.pt")],
    ],
    ids=lambda a: "-".join(a[:2]),
)
def test_commands_that_need_torch_name_the_extra(light_env, argv):
    r = run_light(
        light_env,
        f"""
        from ferkit.cli import main
        raise SystemExit(main({argv!r}))
        """,
    )
    assert r.returncode == 2, (r.returncode, r.stderr[-1500:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'ferkit[train]'" in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_python_api_names_the_extra_for_torch_parts(light_env):
    r = run_light(
        light_env,
        """
        import ferkit
        try:
            ferkit.create_model("boulis-baseline")
        except ModuleNotFoundError as e:
            assert "pip install 'ferkit[train]'" in str(e) and e.name == "torch", e
        else:
            raise SystemExit("create_model worked without torch")
        assert ferkit.Recognizer.from_pretrained("default").backend == "onnx"
        """,
    )
    assert r.returncode == 0, r.stderr[-1500:]


def test_models_lists_the_shipped_models_without_torch(light_env):
    r = run_light(
        light_env,
        """
        from ferkit.cli import main
        raise SystemExit(main(["models"]))
        """,
    )
    assert r.returncode == 0, r.stderr[-1500:]
    assert "default-int8" in r.stdout and "version=" in r.stdout and " MB" in r.stdout
    assert "pip install 'ferkit[train]'" in r.stdout  # where the architectures went


def test_help_imports_no_heavy_module(light_env):
    r = run_light(
        light_env,
        """
        import contextlib, io, sys
        from ferkit.cli import main
        for argv in (["--help"], ["predict", "--help"], ["serve", "--help"]):
            with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
                main(argv)
        slow = sorted(m for m in ("cv2", "onnxruntime", "fastapi", "numpy") if m in sys.modules)
        assert not slow, f"--help imported {slow}"
        """,
    )
    assert r.returncode == 0, r.stderr[-1500:]


def test_light_ci_environment_has_no_torch():
    """In CI's light environment (FERKIT_LIGHT_CI=1) the extras must really be absent."""
    if os.environ.get("FERKIT_LIGHT_CI") != "1":
        pytest.skip("only meaningful in the light CI environment (FERKIT_LIGHT_CI=1)")
    import importlib.util

    present = [m for m in HEAVY if importlib.util.find_spec(m) is not None]
    assert not present, f"the light install pulled in {present}"
    assert importlib.util.find_spec("onnxruntime") is not None


def test_missing_extra_message_maps_packages_to_extras():
    from ferkit.cli import missing_extra_message

    def err(name):
        return ModuleNotFoundError(f"No module named {name!r}", name=name)

    assert "ferkit[train]" in missing_extra_message("train", err("lightning.pytorch"))
    assert "ferkit[serve]" in missing_extra_message("serve", err("fastapi"))
    assert "ferkit[plot]" in missing_extra_message("predict", err("matplotlib.pyplot"))
    assert missing_extra_message("predict", err("some_unrelated_module")) is None


def test_an_unrelated_import_error_is_not_disguised(monkeypatch):
    from ferkit import cli

    def boom(args):
        raise ModuleNotFoundError("No module named 'nonexistent_thing'", name="nonexistent_thing")

    parser = cli.build_parser()
    real = parser.parse_known_args  # main() parses with it, to report unknown options per command
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    monkeypatch.setattr(parser, "parse_known_args", lambda argv: (_with_func(real(argv)[0], boom), []))
    with pytest.raises(ModuleNotFoundError):
        cli.main(["recipes"])


def _with_func(ns, func):
    ns.func = func
    return ns


def test_inference_modules_import_without_torch():
    # The layering this issue relies on: inference, image decoding and the predict
    # command import nothing from the train extra, even indirectly.
    code = (
        _BLOCKER
        + "import ferkit.inference.recognizer, ferkit.inference.video, ferkit.inference.faces\n"
        + "import ferkit.inference.onnx_runtime, ferkit.inference.pretrained, ferkit.data.images\n"
        + "import ferkit.models.input_config, ferkit.commands.predict\n"
        + _CHECK
    )
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    r = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert r.returncode == 0, r.stderr[-1500:]


def test_base_dependencies_leave_torch_to_the_train_extra():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

    def names(reqs):
        return {r.split(";")[0].split("[")[0].split(">")[0].split("<")[0].split("=")[0].strip().lower()
                for r in reqs}

    base = names(meta["dependencies"])
    extras = {k: names(v) for k, v in meta["optional-dependencies"].items()}
    assert {"numpy", "pillow", "opencv-python-headless", "onnxruntime"} <= base
    assert not base & {"torch", "torchvision", "lightning", "torchmetrics", "matplotlib", "onnx"}
    assert {"torch", "torchvision", "lightning", "torchmetrics", "matplotlib", "onnx"} <= extras["train"]
    assert {"fastapi", "uvicorn", "python-multipart"} <= extras["serve"]
    assert "ferkit[train,serve,timm]" in meta["optional-dependencies"]["all"]
    # torch is never pinned: README's `pip install torch==... torchvision==...` (or the
    # CPU-only build) must stay installable next to it.
    torch_req = next(r for r in meta["optional-dependencies"]["train"] if r.startswith("torch>"))
    assert "==" not in torch_req and "<" not in torch_req
