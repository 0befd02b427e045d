"""The validation carve follows ``split_seed``, not ``seed``: runs that differ only in their
training seed (the members of an ensemble) validate on the same faces, and runs saved before
``split_seed`` existed keep the carve their ``seed`` made."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytest.importorskip("torch", reason="needs the train extra (PyTorch)")
from conftest import write_class_tree

from ferkit.labels import FER7
from ferkit.training.datamodule import checkpoint_split, run_recipe_of, run_splits
from ferkit.training.recipes import Recipe, saved_recipe


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_class_tree(tmp_path_factory.mktemp("carve") / "data", n=20, size=8)


def _val(recipe: Recipe, data) -> list:
    (val,) = run_splits(recipe, data, ["val"], size=8, channels=1, progress=False)
    return sorted(map(str, val.items))


def _run(tmp_path: Path, name: str, recipe: dict) -> Path:
    run = tmp_path / name
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"recipe": recipe, "data": "x"}))
    return run / "best.ckpt"


def test_members_of_other_seeds_share_one_validation_carve(data):
    base = Recipe(name="m", model="boulis-baseline")
    carves = [_val(base.override(seed=s), data) for s in (0, 1, 7)]
    assert carves[0] == carves[1] == carves[2]
    assert len(carves[0]) == 14  # 10% of 7 classes x 20 faces
    assert _val(base.override(split_seed=1), data) != carves[0]  # the carve's own seed moves it


def test_a_run_saved_before_split_seed_keeps_its_seeds_carve(data, tmp_path):
    old = Recipe(name="m", model="boulis-baseline", seed=3).to_dict()
    del old["split_seed"]
    recipe, _ = run_recipe_of(_run(tmp_path, "old", old))
    assert recipe.split_seed == 3 and recipe.seed == 3
    assert saved_recipe({"seed": 5})["split_seed"] == 5
    assert saved_recipe({"seed": 5, "split_seed": 0})["split_seed"] == 0  # a new run's value stands


def test_evaluation_sees_the_val_faces_its_run_validated_on(data, tmp_path):
    from ferkit.models.input_config import InputConfig

    cfg = InputConfig(size=8, channels=1)
    for seed in (0, 4):
        ck = _run(tmp_path, f"seed{seed}", Recipe(name="m", model="boulis-baseline", seed=seed).to_dict())
        ds = checkpoint_split(ck, data, "val", labels=FER7, input_config=cfg, progress=False)
        assert sorted(map(str, ds.items)) == _val(Recipe(name="m", model="boulis-baseline"), data)


def _member_run(tmp_path: Path, name: str, **recipe) -> str:
    """A run folder with its config.yaml and a small trained-model file as best.ckpt."""
    import torch

    from ferkit.models.checkpoint import save_slim
    from ferkit.models.registry import create_model

    ck = _run(tmp_path, name, Recipe(name="m", model="boulis-baseline", **recipe).to_dict())
    torch.manual_seed(len(name))
    kw = {"width": 8, "hidden": 16}
    save_slim(create_model("boulis-baseline", **kw), {"model": "boulis-baseline", "labels": FER7,
                                                       "model_kwargs": kw}, ck)
    return str(ck)


def test_an_ensemble_of_seeds_is_evaluated_on_its_members_shared_carve(data, tmp_path):
    """`ferkit calibrate ens.pt --split val` fits the temperature on the members' own carve
    (here 30%, not the 10% default), which none of them trained on."""
    from ferkit.cli import main
    from ferkit.models.input_config import InputConfig

    members = [_member_run(tmp_path, f"seed{s}", seed=s, val_fraction=0.3) for s in (0, 1, 2)]
    ens = tmp_path / "ens.pt"
    assert main(["ensemble", *members, "--out", str(ens)]) == 0
    ds = checkpoint_split(ens, data, "val", labels=FER7, input_config=InputConfig(size=8), progress=False)
    want = _val(Recipe(name="m", model="boulis-baseline", val_fraction=0.3), data)
    assert sorted(map(str, ds.items)) == want and len(want) == 42


def test_an_ensemble_of_runs_that_carved_differently_is_flagged(data, tmp_path):
    from ferkit.cli import main
    from ferkit.models.input_config import InputConfig

    members = [_member_run(tmp_path, "a", split_seed=0), _member_run(tmp_path, "b", split_seed=5)]
    ens = tmp_path / "ens.pt"
    assert main(["ensemble", *members, "--out", str(ens)]) == 0
    with pytest.warns(UserWarning, match="carved validation differently"):
        checkpoint_split(ens, data, "val", labels=FER7, input_config=InputConfig(size=8), progress=False)


def test_a_slim_file_exported_from_a_run_keeps_its_carve(data, tmp_path):
    """`ferkit export best.ckpt --format torch` used to drop the run's split: the slim file,
    evaluated on 'val', got the default 10% carve, partly faces the model trained on."""
    import torch

    from ferkit.inference.export import export_model
    from ferkit.models.input_config import InputConfig
    from ferkit.models.registry import create_model

    kw = {"width": 8, "hidden": 16}
    model = create_model("boulis-baseline", **kw)
    hp = {**Recipe(name="m", model="boulis-baseline", val_fraction=0.3, split_seed=4).to_dict(),
          "model_name": "boulis-baseline", "num_classes": 7, "labels": list(FER7), "model_kwargs": kw,
          "input_config": model.input_config.to_dict()}
    ck = tmp_path / "best.ckpt"  # a training checkpoint away from its run folder
    torch.save({"hyper_parameters": hp, "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}},
               ck)
    slim = export_model(ck, "torch", tmp_path / "m.pt", half=True)["path"]
    cfg = InputConfig(size=8)
    want = _val(Recipe(name="m", model="boulis-baseline", val_fraction=0.3, split_seed=4), data)
    for f in (ck, slim):
        ds = checkpoint_split(f, data, "val", labels=FER7, input_config=cfg, progress=False)
        assert sorted(map(str, ds.items)) == want, f
