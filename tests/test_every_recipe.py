"""Every shipped recipe, end to end: one tiny training run each on generated data.

The test is parametrized over :func:`ferkit.training.recipes.list_recipes` at collection
time, so a recipe added to ``src/ferkit/recipes/`` is covered without touching this file.
Each run is shrunk only where speed needs it (1 epoch, 2 batches of at most 8, 32x32 input,
no pretrained weights, narrow hidden layers); everything else comes from the recipe as
shipped (optimizer, scheduler, augmentation, distortion augmentation, freezing policy,
class weights, dataset and its source options), and the saved config is checked to
prove it. Recipes that start from another run's checkpoint get one from a tiny run of the
recipe that produces it; recipes bound to a dataset get a tiny fixture in that dataset's
own layout.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import re
import shutil
from importlib import resources
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="needs the train extra (PyTorch)")
import torch
import yaml
from conftest import face_like, write_class_tree, write_fer_csv
from PIL import Image

from ferkit.labels import FER7
from ferkit.models.checkpoint import load_checkpoint, read_checkpoint
from ferkit.models.registry import get_entry, model_task
from ferkit.training.recipes import Recipe, list_recipes, load_recipe

RECIPES: dict[str, Recipe] = {r.name: r for r in list_recipes()}

pytestmark = [
    # By design: train() writes config.yaml before Lightning opens the run directory, and
    # frozen parts (awei's VGG guide, hybrid A's DAE) stay in eval mode during training.
    pytest.mark.filterwarnings("ignore:.*exists and is not empty"),
    pytest.mark.filterwarnings("ignore:Found \\d+ module\\(s\\) in eval mode"),
    pytest.mark.filterwarnings("ignore:awei. VGG16 guide randomly initialised"),
]

#: Recipes whose ``init_checkpoint`` is a run of another (autoencoder) recipe.
CHECKPOINT_FROM = {
    "cae-finetune-fer2013": "cae-pretrain-fer2013",
    "wiranata-cnn": "wiranata-cae",
}
#: The DAE run given to every recipe with a ``dae_checkpoint`` model kwarg (Li's hybrid A).
DAE_RECIPE = "li-dae-tuned"

INPUT_SIZE = 32  # every model family accepts it (awei: divisible by 32; li-vgg: 5 pools)
MAX_BATCH = 8
LIMITS = {"limit_train_batches": 2, "limit_val_batches": 1}

#: Narrow layers per model family (only kwargs the family takes). Lists of hidden widths
#: (the transfer heads) are shrunk in place, keeping their length and dropout rates.
SMALL_KWARGS = {
    "boulis-baseline": {"width": 8, "hidden": 16},
    "boulis-baseline-wide": {"width": 8, "hidden": 16},
    "awei": {"hidden": 16},
    "awei-plain": {"hidden": 16},
    "awei-residual": {"hidden": 16},
    "li-vgg": {"width": 0.125, "hidden": 32},
    "li-hybrid-a": {"width": 0.125, "hidden": 32},
    "li-hybrid-b": {"width": 0.125, "hidden": 32},
    "vgg-fer": {"width": 8, "hidden": 16},
    "resnet18-fer": {"width": 8},
}

#: Recipe fields the shrinking must leave exactly as shipped.
KEPT = (
    "model",
    "dataset",
    "source_options",
    "labels",
    "in_chans",
    "optimizer",
    "lr",
    "betas",
    "momentum",
    "weight_decay",
    "scheduler",
    "plateau_factor",
    "plateau_patience",
    "early_stopping_patience",
    "augment",
    "distortion_augment",
    "class_weights",
    "label_smoothing",
    "val_fraction",
    "group_val",
    "seed",
    "precision",
    "channels_last",
    "freeze",
)

#: Measured above ~10 s each on a busy 2-core CPU (ResNet50 / SE-ResNet50 trunks).
SLOW = {"boulis-resnet50", "boulis-resnet50-weighted", "boulis-senet50", "boulis-senet50-weighted"}


# --- tiny datasets in each source's own layout ---------------------------------------------------


def _folders(root: Path) -> Path:
    return write_class_tree(root, n=6)  # root/{train,test}/<FER7 class>/*.png, 48x48 gray


def _fer2013(root: Path) -> Path:
    """The Kaggle folders: train/<class>/Training_*.png, test/<class>/PublicTest_*.png."""
    return write_class_tree(root, n=6, prefix={"train": "Training", "test": "PublicTest"})


def _fer2013_csv(root: Path) -> Path:
    root.mkdir(parents=True)
    return write_fer_csv(root / "fer2013.csv", n_per_split=42)


def _kdef(root: Path) -> Path:
    from test_kdef import write_kdef

    # Official KDEF/<AF01>/AF01ANS.JPG naming: 5 actors x 7 emotions x 2 angles = 70 photos.
    return write_kdef(
        root, subjects=("F01", "M01", "F02", "M02", "F03"), sessions=("A",), angles=("S", "HL")
    )


def _rafdb(root: Path) -> Path:
    """The official layout: EmoLabel/list_patition_label.txt + Image/aligned/<name>_aligned.jpg."""
    from ferkit.data.rafdb import RAF_LABELS

    base = root / "basic"
    (base / "EmoLabel").mkdir(parents=True)
    (base / "Image" / "aligned").mkdir(parents=True)
    lines = []
    for split, n in (("train", 6), ("test", 2)):
        i = 0
        for num, label in RAF_LABELS.items():
            for _ in range(n):
                i += 1
                name = f"{split}_{i:05d}.jpg"
                lines.append(f"{name} {num}")
                arr = face_like(FER7.index(label), 48, seed=len(lines))
                Image.fromarray(arr, "L").convert("RGB").save(
                    base / "Image" / "aligned" / f"{name[:-4]}_aligned.jpg"
                )
    (base / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return root


def _rafdb_kaggle(root: Path) -> Path:
    from ferkit.data.rafdb import RAF_LABELS

    for split, n in (("train", 6), ("test", 2)):
        for num, label in RAF_LABELS.items():
            d = root / "DATASET" / split / str(num)
            d.mkdir(parents=True)
            for i in range(n):
                arr = face_like(FER7.index(label), 48, seed=num * 100 + i)
                Image.fromarray(arr, "L").convert("RGB").save(d / f"{split}_{num}_{i}.jpg")
    return root


def _ravdess(root: Path) -> Path:
    """Video-only speech clips (02-01-EE-...-AA.mp4) of emotions 1-8 for train/val/test actors."""
    from test_ravdess import write_clip

    for actor in (1, 2, 17, 21):  # train 1-16, val 17-20, test 21-24 (the source's defaults)
        for emo in range(1, 9):
            write_clip(
                root / f"Actor_{actor:02d}" / f"02-01-{emo:02d}-01-01-01-{actor:02d}.mp4",
                n_frames=20,
                value=25 * emo,
            )
        # a song clip and an audio-visual clip: filtered out by modalities / vocal_channels
        write_clip(root / f"Actor_{actor:02d}" / f"02-02-03-01-01-01-{actor:02d}.mp4", n_frames=4)
        write_clip(root / f"Actor_{actor:02d}" / f"01-01-03-01-01-01-{actor:02d}.mp4", n_frames=4)
    return root


def _jaffe(root: Path) -> Path:
    from test_jaffe import write_jaffe

    return write_jaffe(root)


#: dataset field of a recipe (None = auto-detected folders) -> generator of a tiny fixture.
DATASETS = {
    None: _folders,
    "folders": _folders,
    "fer2013": _fer2013,
    "fer2013-csv": _fer2013_csv,
    "kdef": _kdef,
    "rafdb": _rafdb,
    "rafdb-kaggle": _rafdb_kaggle,
    "ravdess": _ravdess,
    "jaffe": _jaffe,
}


# --- shrinking and running -------------------------------------------------------------------------


def shrunk_overrides(r: Recipe) -> dict:
    kw = dict(r.model_kwargs)
    if "weights" in kw or r.model in ("awei", "vgg16", "resnet50", "seresnet50"):
        kw["weights"] = None  # never download ImageNet weights: random init
    kw.update(SMALL_KWARGS.get(r.model, {}))
    if isinstance(kw.get("hidden"), (list, tuple)):
        kw["hidden"] = [16] * len(kw["hidden"])
    return {
        "epochs": 1,
        "warmup_epochs": min(r.warmup_epochs, 0.5),  # a warm-up must end inside the one epoch
        "batch_size": min(r.batch_size, MAX_BATCH),
        "input_size": INPUT_SIZE,
        "model_kwargs": kw,
    }


class Runs:
    """Trains each recipe at most once per module; prerequisite runs are shared with their own test."""

    def __init__(self, root: Path):
        self.root = root
        self.dirs: dict[str, Path] = {}
        self.stdout: dict[str, str] = {}
        self._data: dict[str | None, Path] = {}

    def data(self, dataset: str | None) -> Path:
        if dataset not in DATASETS:
            pytest.fail(
                f"no tiny generator for dataset {dataset!r}: add one to DATASETS in {__file__}"
            )
        if dataset not in self._data:
            self._data[dataset] = DATASETS[dataset](self.root / "data" / str(dataset))
        return self._data[dataset]

    def run(self, name: str) -> Path:
        if name in self.dirs:
            return self.dirs[name]
        from ferkit.training.train import train

        r = RECIPES[name]
        overrides = shrunk_overrides(r)
        if name in CHECKPOINT_FROM:
            overrides["init_checkpoint"] = str(self.run(CHECKPOINT_FROM[name]) / "best.ckpt")
        if "dae_checkpoint" in r.model_kwargs:
            overrides["model_kwargs"]["dae_checkpoint"] = str(self.run(DAE_RECIPE) / "best.ckpt")
        data = self.data(r.dataset)
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            run = train(
                r,
                str(data),
                str(self.root / "runs"),
                overrides=overrides,
                device="cpu",
                progress=False,
                **LIMITS,
            )
        self.dirs[name], self.stdout[name] = run, buf.getvalue()
        return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("every-recipe")
    yield Runs(root)
    shutil.rmtree(root, ignore_errors=True)  # ~2 GB of toy checkpoints (VGG16, ResNet50, ...)


def _params():
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in RECIPES]


# --- the tests ----------------------------------------------------------------------------------


def test_every_recipe_has_its_data_and_checkpoints_wired():
    """Each recipe's dataset has a generator; an ``init_checkpoint`` slot has its producer listed."""
    assert RECIPES, "no shipped recipes found"
    missing = sorted(str(r.dataset) for r in RECIPES.values() if r.dataset not in DATASETS)
    assert not missing, f"add a tiny generator to DATASETS for {missing}"
    for name in RECIPES:
        raw = yaml.safe_load((resources.files("ferkit.recipes") / f"{name}.yaml").read_text())
        if "init_checkpoint" in raw:
            assert name in CHECKPOINT_FROM, (
                f"{name}: add its checkpoint-producing recipe to CHECKPOINT_FROM"
            )
    for consumer, producer in CHECKPOINT_FROM.items():
        assert consumer in RECIPES and model_task(RECIPES[producer].model) == "reconstruct", (consumer, producer)
    assert RECIPES[DAE_RECIPE].model == "li-dae"


@pytest.mark.parametrize("name", _params())
def test_recipe_trains_end_to_end(name, runs):
    shipped = load_recipe(name)  # the file name and the recipe's name agree (``ferkit train NAME``)
    assert shipped.name == name
    run = runs.run(name)
    for f in ("best.ckpt", "last.ckpt", "metrics.csv", "config.yaml", "summary.json"):
        assert (run / f).is_file(), f

    saved = yaml.safe_load((run / "config.yaml").read_text())["recipe"]
    assert saved["name"] == name and saved["epochs"] == 1 and saved["input_size"] == INPUT_SIZE
    want = shipped.to_dict()
    for field in KEPT:
        assert saved[field] == want[field], f"{field}: {saved[field]!r} != shipped {want[field]!r}"

    with open(run / "metrics.csv", newline="") as f:
        val_losses = [float(row["val_loss"]) for row in csv.DictReader(f) if row.get("val_loss")]
    assert val_losses and all(math.isfinite(v) for v in val_losses), val_losses
    # it trained: both allowed optimizer steps were taken, and every tensor the optimizer holds
    # got a gradient (a layer cut off from the loss, or a recipe that freezes everything, fails)
    last = read_checkpoint(run / "last.ckpt")
    assert last["global_step"] == LIMITS["limit_train_batches"]
    for opt in last["optimizer_states"]:
        n_params = sum(len(g["params"]) for g in opt["param_groups"])
        assert n_params > 0 and len(opt["state"]) == n_params, (n_params, len(opt["state"]))
    summary = json.loads((run / "summary.json").read_text())

    model, spec = load_checkpoint(run / "best.ckpt")
    cfg = spec["input_config"]
    channels = shipped.in_chans or get_entry(shipped.model).input_config.channels
    assert (cfg.size, cfg.channels) == (INPUT_SIZE, channels)
    x = torch.rand(3, cfg.channels, cfg.size, cfg.size)
    with torch.no_grad():
        out = model(x)
    assert torch.isfinite(out).all()
    if model_task(shipped.model) == "reconstruct":
        assert out.shape == x.shape
        assert "val" not in summary
    else:
        labels = list(shipped.labels or FER7)
        assert out.shape == (3, len(labels)) and spec["labels"] == labels
        # the report counts what it saw: per-class counts add up and the accuracy is theirs
        val = summary["val"]
        per_class = [c for c in val["per_class"].values() if c["n"]]
        assert val["n"] == sum(c["n"] for c in per_class) > 0
        assert val["accuracy"] == pytest.approx(sum(c["accuracy"] * c["n"] for c in per_class) / val["n"])

    if name in CHECKPOINT_FROM:  # the features really came from the autoencoder run
        src = runs.run(CHECKPOINT_FROM[name]) / "best.ckpt"
        assert saved["init_checkpoint"] == str(src)
        assert re.search(
            rf"initialised [1-9]\d*/\d+ tensors of {re.escape(shipped.model)} from "
            rf"{re.escape(str(src))}",
            runs.stdout[name],
        ), runs.stdout[name]
    if "dae_checkpoint" in shipped.model_kwargs:  # hybrid A: the trained DAE, frozen, is inside
        src = runs.run(DAE_RECIPE) / "best.ckpt"
        assert saved["model_kwargs"]["dae_checkpoint"] == str(src)
        assert int(model.dae_loaded) == 1
        dae = read_checkpoint(src)["state_dict"]
        for k, v in model.dae.state_dict().items():
            assert torch.equal(v, dae[f"model.{k}"].float()), k
