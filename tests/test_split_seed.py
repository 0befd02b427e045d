"""The validation carve follows ``split_seed``, not ``seed``: runs that differ only in their
training seed (the members of an ensemble) validate on the same faces, and runs saved before
``split_seed`` existed keep the carve their ``seed`` made."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytest.importorskip("torch", reason="needs the train extra (PyTorch)")
from conftest import write_class_tree

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
        ds = checkpoint_split(ck, data, "val", labels=ds_labels(), input_config=cfg, progress=False)
        assert sorted(map(str, ds.items)) == _val(Recipe(name="m", model="boulis-baseline"), data)


def ds_labels():
    from ferkit.labels import FER7

    return FER7
