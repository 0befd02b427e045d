"""One prepared GPU job: train several ferkit models side by side on one GPU, export, evaluate.

Run it through ``tools/gpu/job.sh OUT_DIR [--job NAME]`` (see ``docs/gpu.md``). It needs only
what a bare CUDA machine with PyTorch, torchvision, Lightning, torchmetrics, numpy, OpenCV and
onnx/onnxruntime has: ferkit runs from this checkout (``PYTHONPATH=src``), nothing is
installed and nothing is downloaded.

Steps, each written into OUT_DIR as soon as it is done (a job killed at its time limit
still leaves every finished result):

1. unpack the FER2013 archive (``FERKIT_GPU_DATA``, default ``.gpu/fer2013.tar.gz``, the
   Kaggle folder layout) and decode it once into a shared decode cache;
2. train the job's members concurrently, one process each, each within the time budget
   (``ferkit train --max-time``, which sizes its cosine schedule to the budget);
3. as each member finishes: export its final weights as an fp16 slim file (``NAME.pt``);
4. evaluate every member and the soft-voting ensemble on FER2013 PublicTest, plain and
   with test-time augmentation, per class (``summary.json``).

``FERKIT_GPU_SMOKE=1`` runs the very same steps on the CPU at toy scale (a few hundred
FER2013 faces, narrow networks, seconds of training), so the job is tested before a GPU
is there (``tests/test_gpu_job.py``).

OUT_DIR receives at most 8 files, none over 16 MiB, no sub-folders: ``job.log``,
``summary.json``, ``members.log`` and one ``.pt`` per shipped member.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SMOKE = os.environ.get("FERKIT_GPU_SMOKE", "") not in ("", "0")
MAX_OUT_BYTES = 16 * 2**20
# Whole-job wall limit (training budget + set-up, exports and evaluations), minutes.
DEADLINE_MIN = 4.5 if SMOKE else 8.75
# What the job keeps free of training inside DEADLINE_MIN for unpacking, exports and evaluations.
SETUP_MIN = 1.0
# H200 dense bf16 tensor-core peak, TFLOP/s (GPU.md); FERKIT_GPU_PEAK_TFLOPS for other cards.
PEAK_TFLOPS = float(os.environ.get("FERKIT_GPU_PEAK_TFLOPS", "790"))

# Each job: members trained side by side (a stage), then evaluations. A member is
# (name, recipe, --set overrides, ship its file to OUT_DIR). Smoke overrides shrink the
# networks; everything else is the same code path.
_GPU_RUN = {"val_every": 10, "ckpt_every": 20, "num_workers": 0}
_SMOKE_RUN = {"val_every": 2, "ckpt_every": 2, "batch_size": 32, "epochs": 3}
JOBS = {
    "ensemble": {
        "description": "three from-scratch FER2013 networks (two VGG seeds, one ResNet-18) and their ensemble",
        "stages": [[
            ("vgg-a", "ferkit-vgg", {"seed": 0}, True),
            ("resnet18", "ferkit-resnet18", {"seed": 0}, True),
            ("vgg-b", "ferkit-vgg", {"seed": 1}, True),
        ]],
        "smoke": {"vgg": {"model_kwargs.width": 8, "model_kwargs.hidden": 32},
                  "resnet18": {"model_kwargs.width": 8, "model_kwargs.blocks": [1, 1, 1, 1]}},
        "tta": "ten-crop",
        "ensembles": {"ensemble": ["vgg-a", "resnet18", "vgg-b"]},
    },
    "li-full": {
        "description": "Li et al.: VGG, DAE, hybrid B side by side, then hybrid A on the trained DAE; "
                       "clean and random-gray:3 accuracy",
        "stages": [
            [("li-vgg", "li-vgg", {}, False), ("li-dae", "li-dae", {}, False),
             ("li-hybrid-b", "li-hybrid-b", {}, False)],
            [("li-hybrid-a", "li-hybrid-a", {"model_kwargs.dae_checkpoint": "{run:li-dae}/best.ckpt"}, False)],
        ],
        "smoke": {"li-vgg": {"model_kwargs.width": 0.125, "model_kwargs.hidden": 16},
                  "li-hybrid": {"model_kwargs.width": 0.125, "model_kwargs.hidden": 16}},
        "stage_shares": [0.55, 0.45],  # of the training budget: hybrid A needs the trained DAE
        "tta": None,
        "distortion": "random-gray:3",
        "autoencoders": ["li-dae"],  # reported as denoising quality (PSNR/SSIM), not accuracy
        "ensembles": {},
    },
    "boulis-full": {
        "description": "Boulis et al.: the baseline and VGG16 / ResNet50 / SE-ResNet50 from scratch with "
                       "class weights, their soft-voting ensemble + TTA",
        "stages": [[
            ("baseline", "boulis-baseline-weighted", {}, True),
            # from scratch: no ImageNet weights exist offline (the recipes' default is imagenet)
            ("vgg16", "boulis-vgg16-weighted", {"model_kwargs.weights": None}, False),
            ("resnet50", "boulis-resnet50-weighted", {"model_kwargs.weights": None}, False),
            ("senet50", "boulis-senet50-weighted", {"model_kwargs.weights": None}, False),
        ]],
        "smoke": {"vgg16": {"input_size": 32}, "resnet50": {"input_size": 32}, "senet50": {"input_size": 32}},
        "tta": 4,
        "ensembles": {"ensemble": ["baseline", "vgg16", "resnet50", "senet50"]},
    },
}


class Job:
    def __init__(self, out: Path, name: str, budget_min: float, data_archive: Path, work: Path):
        self.out, self.name, self.spec = out, name, JOBS[name]
        self.budget_min, self.archive, self.work = budget_min, data_archive, work
        self.t0 = time.monotonic()
        # Whole-job wall limit: training budget + set-up, exports and evaluations.
        self.deadline = self.t0 + (8.0 * 60 if SMOKE else 8.9 * 60)
        self.summary: dict = {"job": name, "smoke": SMOKE, "description": self.spec["description"],
                              "budget_min": budget_min, "members": {}, "evaluations": {}, "errors": [],
                              "phases": {}}
        self.runs: dict[str, Path] = {}
        self.device = "cpu" if SMOKE else "cuda"
        out.mkdir(parents=True, exist_ok=True)
        self._log = open(out / "job.log", "a", buffering=1)  # noqa: SIM115 - open for the job's life

    # ---------------------------------------------------------------- bookkeeping
    def log(self, msg: str) -> None:
        line = f"[{time.monotonic() - self.t0:7.1f}s] {msg}"
        print(line, flush=True)
        self._log.write(line + "\n")

    def save(self) -> None:
        self.summary["elapsed_s"] = round(time.monotonic() - self.t0, 1)
        tmp = self.out / ".summary.json.tmp"
        tmp.write_text(json.dumps(self.summary, indent=2))
        os.replace(tmp, self.out / "summary.json")

    def phase(self, name: str, t: float) -> None:
        self.summary["phases"][name] = round(time.monotonic() - t, 1)
        self.save()

    def error(self, what: str, detail: str) -> None:
        self.summary["errors"].append({"step": what, "detail": detail[-2000:]})
        self.log(f"ERROR {what}: {detail.strip().splitlines()[-1] if detail.strip() else '?'}")
        self.save()

    def refuse(self, msg: str) -> None:
        """Stop the job on bad input: recorded in summary.json and job.log, one line on stderr,
        exit status 2 (a usage error, as ferkit's commands)."""
        self.error("input", msg)
        print(f"job: {msg}", file=sys.stderr)
        raise SystemExit(2)

    def env(self) -> dict:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
        env["FERKIT_CACHE"] = str(self.work / "cache")
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("FERKIT_RUN_DIR", None)
        return env

    def tasks(self, tasks: list[dict]):
        """Run ferkit commands in one process (``tools/gpu/tasks.py``); yields each result as it
        ends. A process still busy at the job's deadline is killed; unfinished tasks are errors."""
        if not tasks:
            return
        p = subprocess.Popen([sys.executable, str(REPO / "tools" / "gpu" / "tasks.py")], env=self.env(),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=self.work, start_new_session=True)
        p.stdin.write(json.dumps(tasks))
        p.stdin.close()
        done = set()
        import threading

        timer = threading.Timer(max(5.0, self.deadline - time.monotonic()), lambda: os.killpg(p.pid, signal.SIGKILL))
        timer.start()
        try:
            for line in p.stdout:
                if line.startswith("{"):
                    res = json.loads(line)
                    done.add(res["id"])
                    yield res
            p.wait()
        finally:
            timer.cancel()
        for t in tasks:
            if t["id"] not in done:
                yield {"id": t["id"], "rc": 124, "stdout": "", "stderr": "not finished by the job's deadline "
                       + (p.stderr.read()[-1500:] if p.stderr else "")}

    # ---------------------------------------------------------------- steps
    def prepare_data(self) -> Path:
        t = time.monotonic()
        data = self.work / "data"
        if not (data / "train").is_dir():
            if not self.archive.is_file():
                raise SystemExit(f"job: data archive {self.archive} not found (set FERKIT_GPU_DATA; "
                                 "make it with tools/gpu/pack_data.py)")
            # Unpacked beside its final place and moved there whole: an archive that fails half
            # way (a damaged file, a member refused by the "data" filter: absolute paths, ../,
            # links out of the folder) must not leave a partial data/ that a rerun with the same
            # --work would take for the dataset.
            part = self.work / "data.part"
            shutil.rmtree(part, ignore_errors=True)
            part.mkdir(parents=True)
            try:
                with tarfile.open(self.archive) as tar:
                    tar.extractall(part, filter="data")
            except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
                shutil.rmtree(part, ignore_errors=True)
                self.refuse(f"{self.archive}: cannot unpack ({type(e).__name__}: {e})")
            shutil.rmtree(data, ignore_errors=True)  # a rerun's data/ without train/ at its top
            part.rename(data)
            # The archive may hold the layout at its top or inside one folder (fer2013/train/...).
            if not (data / "train").is_dir():
                inner = next((p for p in data.iterdir() if (p / "train").is_dir()), None)
                if inner is None:
                    shutil.rmtree(data, ignore_errors=True)
                    self.refuse(f"{self.archive} has no train/ folder (Kaggle FER2013 layout)")
                data = inner
        n = sum(1 for _ in data.glob("*/*/*.jpg"))
        self.summary["data"] = {"archive": str(self.archive), "images": n}
        self.log(f"data: {n} images in {data}")
        self.phase("unpack", t)
        # Decode once into the shared cache, so the members do not decode it three times.
        t = time.monotonic()
        code = ("import sys; from ferkit.training.recipes import load_recipe; "
                "from ferkit.training.datamodule import run_splits; "
                "r = load_recipe(sys.argv[1]); run_splits(r, sys.argv[2], ['train', 'val', 'publictest'], "
                "progress=False)")
        recipe = self.spec["stages"][0][0][1]
        r = subprocess.run([sys.executable, "-c", code, recipe, str(data)], env=self.env(), capture_output=True,
                           text=True, cwd=self.work, check=False)
        if r.returncode != 0:
            self.error("decode cache", r.stderr)
        self.phase("decode", t)
        return data

    def environment(self) -> dict:
        code = ("import json, torch, lightning, torchvision, numpy; d = {'torch': torch.__version__, "
                "'lightning': lightning.__version__, 'torchvision': torchvision.__version__, "
                "'numpy': numpy.__version__, 'cuda': torch.cuda.is_available()}; "
                "d['gpu'] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None; "
                "print(json.dumps(d))")
        r = subprocess.run([sys.executable, "-c", code], env=self.env(), capture_output=True, text=True,
                           check=False, timeout=120)
        env = json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else {"error": r.stderr[-500:]}
        env.update(python=sys.version.split()[0], cpus=os.cpu_count(), peak_bf16_tflops=PEAK_TFLOPS)
        self.log(f"environment: {env}")
        if "error" in env:
            raise SystemExit(f"job: {sys.executable} cannot import PyTorch/Lightning: "
                             f"{env['error'].strip().splitlines()[-1]}")
        if not SMOKE and not env.get("cuda"):
            raise SystemExit("job: no CUDA device here; use FERKIT_GPU_SMOKE=1 for the CPU smoke run")
        return env

    def member_args(self, name: str, recipe: str, sets: dict, data: Path) -> list[str]:
        sets = {**(_SMOKE_RUN if SMOKE else _GPU_RUN), **sets}
        if SMOKE:
            for key, extra in self.spec.get("smoke", {}).items():
                if key in name or key in recipe:
                    sets = {**sets, **extra}
        args = ["train", recipe, "--data", str(data), "--out", str(self.work / "runs" / name),
                "--device", self.device, "--no-progress", "--max-time", str(self.budget_min)]
        for k, v in sets.items():
            if isinstance(v, str) and v.startswith("{run:"):
                ref, rest = v[5:].split("}", 1)
                v = str(self.runs.get(ref, "missing")) + rest
            args += ["--set", f"{k}={json.dumps(v)}"]
        return args

    def member_env(self, members: int) -> dict:
        """A member's environment. On the CPU (the smoke run) the cores are shared out: each of
        N members side by side gets cores // N threads (at least 1); with PyTorch's default,
        three members on 2 cores ran 6 threads and fought over them."""
        env = self.env()
        if self.device == "cpu":
            threads = str(max(1, (os.cpu_count() or 1) // max(1, members)))
            env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        return env

    def train_stage(self, stage: list, data: Path, budget_min: float) -> None:
        t = time.monotonic()
        procs = {}
        for name, recipe, sets, _ship in stage:
            log = self.work / f"{name}.log"
            args = self.member_args(name, recipe, sets, data)
            args[args.index("--max-time") + 1] = f"{budget_min:.3f}"
            self.log(f"start {name}: ferkit {' '.join(args)}")
            f = open(log, "w")  # noqa: SIM115 - closed when the process ends
            procs[name] = (subprocess.Popen([sys.executable, "-m", "ferkit", *args], env=self.member_env(len(stage)),
                                            stdout=f,
                                            stderr=subprocess.STDOUT, cwd=self.work, start_new_session=True), f)
        # Members shorten themselves to the budget; a member still running well past it
        # (a hung process) is stopped so the exports and evaluations still happen.
        kill_at = time.monotonic() + budget_min * 60 * 1.2 + 90
        while procs:
            for name in list(procs):
                p, f = procs[name]
                if p.poll() is None and time.monotonic() < kill_at:
                    continue
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGTERM)
                    try:
                        p.wait(20)
                    except subprocess.TimeoutExpired:
                        os.killpg(p.pid, signal.SIGKILL)
                        p.wait()
                    self.error(f"train {name}", "stopped: still running past the budget")
                f.close()
                del procs[name]
                self.finish_member(name, p.returncode, stage)
            time.sleep(1.0)
        self.phase(f"train {'+'.join(m[0] for m in stage)}", t)

    def finish_member(self, name: str, rc: int, stage: list) -> None:
        log = self.work / f"{name}.log"
        runs = sorted((self.work / "runs" / name).glob("*/"))
        info: dict = {"returncode": rc}
        self.summary["members"][name] = info
        if not runs:
            self.error(f"train {name}", log.read_text()[-2000:] if log.exists() else "no log")
            return
        run = runs[-1]
        self.runs[name] = run
        if (run / "summary.json").is_file():
            info.update(json.loads((run / "summary.json").read_text()))
        info["recipe"] = next(m[1] for m in stage if m[0] == name)
        if rc != 0:
            self.error(f"train {name}", log.read_text()[-2000:])
        self.log(f"done {name}: rc {rc}, {info.get('epochs_trained')} epochs, "
                 f"val acc {info.get('val', {}).get('accuracy')}, {info.get('train_images_per_s')} img/s")
        self.save()

    def post_stage(self, stage: list) -> None:
        """Export each trained member (fp16 slim file; shipped ones into OUT_DIR) and count its
        FLOPs for the throughput figures, in one process."""
        t = time.monotonic()
        tasks, dests = [], {}
        tta = self.spec.get("tta")
        for name, _recipe, _sets, ship in stage:
            run = self.runs.get(name)
            if run is None:
                continue
            ckpt = run / "last.ckpt" if (run / "last.ckpt").is_file() else run / "best.ckpt"
            if not ckpt.is_file():
                self.error(f"export {name}", f"{run}: no checkpoint")
                continue
            dests[name] = (self.out if ship else self.work) / f"{name}.pt"
            argv = ["export", str(ckpt), "--format", "torch", "--half", "--out", str(dests[name])]
            if isinstance(tta, str):
                argv += ["--tta", tta]
            tasks.append({"id": f"export:{name}", "argv": argv})
            r = self.summary["members"][name]
            rec = _load_recipe_dict(run)
            tasks.append({"id": f"flops:{name}", "flops": {
                "model": rec["model"], "in_chans": rec.get("in_chans"), "input_size": rec.get("input_size"),
                "model_kwargs": {k: v for k, v in (rec.get("model_kwargs") or {}).items()
                                 if not k.endswith("_checkpoint")}}})
            r["recipe_fields"] = {k: rec.get(k) for k in ("model", "model_kwargs", "epochs", "batch_size", "lr",
                                                          "optimizer", "augment", "label_smoothing", "seed")}
        for res in self.tasks(tasks):
            kind, name = res["id"].split(":", 1)
            info = self.summary["members"][name]
            if res["rc"] != 0:
                self.error(res["id"], res["stderr"] or res["stdout"])
                continue
            if kind == "flops":
                flops = int(res["stdout"].strip().splitlines()[-1])
                info["forward_gflop_per_image"] = round(flops / 1e9, 4)
                if ips := info.get("train_images_per_s"):
                    info["train_tflops"] = round(3 * flops * ips / 1e12, 3)
                    info["fraction_of_bf16_peak"] = round(3 * flops * ips / 1e12 / PEAK_TFLOPS, 4)
                continue
            dest = dests[name]
            size = dest.stat().st_size
            ship = dest.parent == self.out
            if size > MAX_OUT_BYTES and ship:
                os.replace(dest, self.work / dest.name)
                self.error(f"export {name}", f"{size} bytes is over the 16 MiB limit; kept out of OUT_DIR")
                dest, ship = self.work / dest.name, False
            info.update(file=dest.name if ship else None, file_bytes=size, file_path=str(dest))
            self.log(f"exported {name}: {dest} ({size / 2**20:.1f} MiB)")
            self.save()
        fr = [m.get("fraction_of_bf16_peak") for m in self.summary["members"].values()]
        if fr and all(f is not None for f in fr):
            self.summary["members_fraction_of_bf16_peak"] = round(sum(fr), 4)
        self.phase(f"export {'+'.join(m[0] for m in stage)}", t)

    def evaluate(self, data: Path) -> None:
        t = time.monotonic()
        tasks = []
        files = {n: Path(m["file_path"]) for n, m in self.summary["members"].items()
                 if m.get("file_path") and Path(m["file_path"]).is_file()}
        tta = self.spec.get("tta")
        views = [("plain", [])] + ([("tta", ["--tta", str(tta)])] if tta is not None else [])
        if dist := self.spec.get("distortion"):
            views.append((dist, ["--distortion", dist]))
        autoencoders = set(self.spec.get("autoencoders", []))
        for n, p in files.items():
            if n in autoencoders:
                continue
            for view, extra in views:
                tasks.append((n, view, [str(p), *extra]))
        for ens, members in self.spec.get("ensembles", {}).items():
            got = [str(files[m]) for m in members if m in files]
            if len(got) >= 2:
                for view, extra in views:
                    tasks.append((ens, view, [*got, *extra]))
        # One process for all evaluations: one PyTorch import, PublicTest decoded once (cache).
        todo = [{"id": f"{n}|{view}", "argv": ["evaluate", *args, "--data", str(data), "--split", "publictest",
                                               "--device", self.device, "--json", "--no-progress"]}
                for n, view, args in tasks]
        for n in autoencoders & set(files):
            png = self.work / f"{n}-denoise.png"
            todo.append({"id": f"{n}|denoise", "argv": [
                "denoise-preview", str(files[n]), "--data", str(data), "--split", "publictest", "--out", str(png),
                "--distortion", self.spec.get("distortion") or "random-gray:3", "--device", self.device,
                "--no-progress"]})
        for res in self.tasks(todo):
            n, view = res["id"].split("|", 1)
            if view == "denoise" and res["rc"] == 0:
                rep = json.loads((self.work / f"{n}-denoise.json").read_text())
                self.summary["evaluations"].setdefault(n, {})[view] = {k: rep.get(k) for k in ("n", "psnr", "ssim")}
                self.log(f"PublicTest {n} [denoise]: PSNR {rep.get('psnr')}, SSIM {rep.get('ssim')}")
                self.save()
                continue
            if res["rc"] != 0:
                self.error(f"evaluate {n} {view}", res["stderr"] or res["stdout"])
                continue
            rep = json.loads(res["stdout"].strip().splitlines()[-1])
            keep = {k: rep.get(k) for k in ("n", "accuracy", "loss", "macro_f1", "balanced_accuracy")}
            keep["per_class_recall"] = {c: v.get("accuracy") for c, v in rep.get("per_class", {}).items()}
            keep["confusion"] = rep.get("confusion")
            keep["seconds"] = res.get("seconds")
            self.summary["evaluations"].setdefault(n, {})[view] = keep
            self.log(f"PublicTest {n} [{view}]: accuracy {keep['accuracy']:.4f}, macro-F1 {keep['macro_f1']:.4f}")
            self.save()
        self.phase("evaluate", t)

    def collect_logs(self) -> None:
        parts = []
        for log in sorted(self.work.glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()
            parts.append(f"===== {log.name} (last 300 of {len(lines)} lines)\n" + "\n".join(lines[-300:]))
        (self.out / "members.log").write_text("\n\n".join(parts)[-MAX_OUT_BYTES // 2:])

    def run(self) -> int:
        self.log(f"job {self.name} ({'SMOKE, CPU' if SMOKE else 'GPU'}): budget {self.budget_min} min per stage")
        self.summary["env"] = self.environment()
        self.save()
        data = self.prepare_data()
        stages = self.spec["stages"]
        shares = self.spec.get("stage_shares", [1.0 / len(stages)] * len(stages))
        for stage, share in zip(stages, shares):
            # Fixed shares of the training budget: a later stage (li-full's hybrid A needs the
            # trained DAE) keeps its share however long the earlier one's start-up took.
            self.train_stage(stage, data, max(0.05, self.budget_min * share))
            self.post_stage(stage)
        self.evaluate(data)
        self.collect_logs()
        self.summary["ok"] = not self.summary["errors"]
        self.save()
        self.log(f"job done in {time.monotonic() - self.t0:.0f} s, {len(self.summary['errors'])} error(s)")
        return 0 if self.summary["ok"] else 1


def _load_recipe_dict(run: Path) -> dict:
    import yaml  # present wherever ferkit trains

    return yaml.safe_load((run / "config.yaml").read_text())["recipe"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="tools/gpu/job.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="folder for the results (at most 8 files, none over 16 MiB)")
    p.add_argument("--job", default="ensemble", choices=sorted(JOBS), help="which job (default: ensemble)")
    p.add_argument("--budget", type=float, default=None,
                   help="training minutes (default: 7 on a GPU, 0.4 in smoke mode)")
    p.add_argument("--work", default=None, help="scratch folder (default: a fresh temporary folder)")
    a = p.parse_args(argv)
    budget = a.budget if a.budget is not None else (0.4 if SMOKE else 7.0)
    # Absolute paths: members run with the scratch folder as their working directory, where a
    # relative --work or FERKIT_GPU_DATA would point somewhere else.
    archive = Path(os.environ.get("FERKIT_GPU_DATA", REPO / ".gpu" / "fer2013.tar.gz")).absolute()
    work = Path(a.work) if a.work else Path(os.environ.get("TMPDIR", "/tmp")) / f"ferkit-gpu-{os.getpid()}"
    work, out = work.absolute(), Path(a.out).absolute()
    # Checked before anything starts: on the device machine a bad value found after the
    # environment probe and the unpacking costs minutes of a 15-minute allowance.
    most = DEADLINE_MIN - SETUP_MIN
    if not 0 < budget <= most:  # also nan
        p.error(f"--budget must be minutes in (0, {most:g}] (the whole job ends within {DEADLINE_MIN:g}), "
                f"got {a.budget}")
    for path, what in ((out, "OUT"), (work, "--work")):
        if path.exists() and not path.is_dir():
            p.error(f"{what} {path} is a file, not a folder")
    if not (work / "data" / "train").is_dir():
        if not archive.is_file():
            p.error(f"data archive {archive} not found (set FERKIT_GPU_DATA; make it with tools/gpu/pack_data.py)")
        if not tarfile.is_tarfile(archive):
            p.error(f"data archive {archive} is not a tar archive (make it with tools/gpu/pack_data.py)")
    try:  # OUT first: a refused OUT leaves no scratch folder behind
        out.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        p.error(f"cannot make {e.filename}: {e.strerror}")
    job = Job(out, a.job, budget, archive, work)
    try:
        return job.run()
    finally:
        job.save()
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
