"""Recipe overrides that apply (--set, flags, resume) and values checked however they are set."""

from __future__ import annotations

import csv
import dataclasses
import re
from pathlib import Path

import pytest

# Trains or loads checkpoints: the train extra (PyTorch, Lightning).
pytest.importorskip("lightning", reason="needs the train extra (PyTorch, Lightning)")
import yaml
from conftest import write_class_tree

from ferkit.cli import build_parser, main
from ferkit.errors import FerkitError
from ferkit.training.recipes import Recipe, load_recipe, parse_set

FAST = ["--no-progress", "--device", "cpu"]


def _resolve(argv: list[str]) -> dict:
    from ferkit.commands.train import resolve_overrides

    return resolve_overrides(build_parser().parse_args(["train", "boulis-baseline", *argv]))


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("ferkit: error:")
    return err[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_class_tree(tmp_path_factory.mktemp("ovr") / "data", n=4)


def test_set_values_reach_config_and_the_run(data, tmp_path):
    """The named case: --set epochs=2 --set lr=0.5 used to end as the recipe's 60 and 0.001,
    because the unset --epochs/--lr flags overwrote them with None-turned-default."""
    argv = ["train", "boulis-baseline", "--data", str(data), "--out", str(tmp_path), "--set", "epochs=2",
            "--set", "lr=0.5", "--set", "batch_size=8", "--limit-batches", "1", *FAST]
    assert main(argv) == 0
    (run,) = tmp_path.iterdir()
    saved = yaml.safe_load((run / "config.yaml").read_text())["recipe"]
    assert (saved["epochs"], saved["lr"], saved["batch_size"]) == (2, 0.5, 8)
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted({int(float(r["epoch"])) for r in rows if r.get("val_loss")}) == [0, 1]
    lrs = [float(v) for r in rows for k, v in r.items() if k.startswith("lr-") and v]
    assert lrs and lrs[0] == 0.5, lrs  # the optimizer really started at the --set learning rate


def test_unset_flags_leave_set_values_alone():
    ov = _resolve(["--set", "epochs=2", "--set", "lr=0.5", "--set", "seed=7", "--set", "class_weights=true",
                   "--set", "dataset=fer2013"])
    assert ov == {"epochs": 2, "lr": 0.5, "seed": 7, "class_weights": True, "dataset": "fer2013"}


def test_dedicated_flag_wins_over_set_and_says_so(capsys):
    ov = _resolve(["--set", "epochs=2", "--epochs", "5", "--set", "lr=0.5", "--no-class-weights"])
    assert ov == {"epochs": 5, "lr": 0.5, "class_weights": False}
    assert "--epochs 5 wins over --set epochs=2" in capsys.readouterr().err


def test_repeated_set_key_later_wins_and_dotted_keys_merge():
    assert parse_set(["lr=0.1", "epochs=3", "lr=0.2"]) == {"epochs": 3, "lr": 0.2}
    r = load_recipe("boulis-vgg16")
    assert r.model_kwargs.get("weights") == "imagenet"
    r2 = r.override(**parse_set(["model_kwargs.hidden=[16]", "model_kwargs.weights=null"]))
    assert r2.model_kwargs == {**r.model_kwargs, "hidden": [16], "weights": None}
    # a plain key replaces the whole mapping, and a later dotted key then edits that
    r3 = r.override(**parse_set(["model_kwargs.hidden=[16]", "model_kwargs={a: 1}", "model_kwargs.b=2"]))
    assert r3.model_kwargs == {"a": 1, "b": 2}


def test_null_is_applied_not_ignored():
    """--set ema_decay=null used to be dropped (None meant 'flag not given'), so EMA stayed on."""
    r = load_recipe("boulis-baseline").override(ema_decay=0.999, early_stopping_patience=3)
    r2 = r.override(**parse_set(["ema_decay=null", "early_stopping_patience=null"]))
    assert r2.ema_decay is None and r2.early_stopping_patience is None


def test_yaml_number_spellings_are_numbers():
    r = load_recipe("boulis-baseline").override(**parse_set(["lr=1e-3", "epochs=3.0", "precision=32"]))
    assert (r.lr, r.epochs, r.precision) == (0.001, 3, "32")
    assert isinstance(r.epochs, int)


BAD_SETS = [
    ("epochs=abc", "epochs must be an integer >= 1, got 'abc'"),
    ("epochs=0", "epochs must be an integer >= 1"),
    ("epochs=2.5", "epochs must be an integer"),
    ("lr=-1", "lr must be a number > 0"),
    ("lr=fast", "lr must be a number > 0"),
    ("batch_size=0", "batch_size must be an integer >= 1"),
    ("class_weights=maybe", "class_weights must be true or false"),
    ("class_weights=1", "class_weights must be true or false"),
    ("optimizer=rmsprop", "optimizer must be one of adam, adamw, sgd"),
    ("scheduler=step", "scheduler must be one of plateau, cosine, none"),
    ("augment=off", "augment must be one of none"),
    ("augment=rotate", "augment must be one of none"),
    ("val_fraction=1.5", "val_fraction must be a number in [0, 1)"),
    ("ema_decay=1", "ema_decay must be a number in (0, 1)"),
    ("betas=[0.9]", "betas must be two numbers"),
    ("label_smoothing=1", "label_smoothing must be a number in [0, 1)"),
    ("seed=-3", "seed must be an integer in [0, "),
    ("num_workers=-1", "num_workers must be an integer >= 0"),
    ("precision=fp8", "precision must be one of auto"),
    ("labels=[happy]", "labels must be a list of at least 2 distinct"),
    ("in_chans=2", "in_chans must be 1 (gray) or 3 (RGB)"),
    ("model_kwargs=7", "model_kwargs must be a mapping"),
    ("extra.width=8", "extra must be empty (no code reads it"),
    ("epochs=null", "epochs must be an integer >= 1, got None"),
    ("epochs.x=1", "epochs is not a mapping"),
    ("nonsense=1", "unknown recipe field 'nonsense'"),
    ("lr={", "--set lr={: the value is not valid YAML"),
]


@pytest.mark.parametrize(("pair", "msg"), BAD_SETS)
def test_bad_set_values_are_one_line_errors_naming_the_field(pair, msg, tmp_path, capsys):
    argv = ["train", "boulis-baseline", "--data", str(tmp_path), "--out", str(tmp_path / "runs"), "--set", pair,
            *FAST]
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert msg in line, line
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("argv", "msg"), [
    (["--epochs", "0"], "epochs must be an integer >= 1, got 0"),
    (["--lr", "0"], "lr must be a number > 0, got 0.0"),
    (["--batch-size", "-4"], "batch_size must be an integer >= 1"),
    (["--seed", "-1"], "seed must be an integer in [0, "),
])
def test_bad_flag_values_are_checked_like_set_values(argv, msg, tmp_path, capsys):
    assert main(["train", "boulis-baseline", "--data", str(tmp_path), *argv, *FAST]) == 2
    assert msg in _one_error_line(capsys)


@pytest.mark.parametrize("argv", [["--devices", "0"], ["--limit-batches", "0"], ["--limit-batches", "-1"],
                                  ["--limit-batches", "2.5"]])
def test_bad_run_flags_are_usage_errors(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "boulis-baseline", "--data", str(tmp_path), *argv])
    assert e.value.code == 2
    assert "expected" in capsys.readouterr().err


def test_yaml_recipe_file_is_checked(tmp_path, capsys):
    f = tmp_path / "mine.yaml"
    f.write_text(yaml.safe_dump({**load_recipe("boulis-baseline").to_dict(), "name": "mine", "momentum": "high"}))
    assert main(["train", str(f), "--data", str(tmp_path), *FAST]) == 2
    assert "recipe mine: momentum must be a number in [0, 1), got 'high'" in _one_error_line(capsys)
    f.write_text("- just\n- a list\n")
    assert main(["train", str(f), "--data", str(tmp_path), *FAST]) == 2
    assert "must be a YAML mapping" in _one_error_line(capsys)


def test_every_field_is_type_checked():
    """A new recipe field gets a type check from its annotation: a value of no sensible type is
    refused for every field, naming it."""
    base = load_recipe("boulis-baseline").to_dict()
    for f in dataclasses.fields(Recipe):
        with pytest.raises(FerkitError, match=rf"^recipe \S+: {f.name} must be "):
            Recipe.from_dict({**base, f.name: {1, 2}})


def test_every_shipped_recipe_passes_its_checks():
    from ferkit.training.recipes import list_recipes

    assert len(list_recipes()) > 10


def test_resume_overrides_are_checked_and_cannot_change_the_network(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    rec = load_recipe("boulis-baseline").to_dict()
    (run / "config.yaml").write_text(yaml.safe_dump({"recipe": rec, "data": str(tmp_path)}))
    assert main(["train", "--resume", str(run), "--set", "epochs=abc", *FAST]) == 2
    assert "epochs must be an integer >= 1, got 'abc'" in _one_error_line(capsys)
    assert main(["train", "--resume", str(run), "--set", "model_kwargs.width=8", *FAST]) == 2
    line = _one_error_line(capsys)
    assert "model_kwargs cannot change in a resumed run" in line and "start a new run" in line
    assert main(["train", "--resume", str(run), "--seed", "3", *FAST]) == 2
    assert "seed cannot change in a resumed run (the run's random streams continue" in _one_error_line(capsys)
    assert main(["train", "--resume", str(run), "--set", "split_seed=3", *FAST]) == 2
    assert "split_seed cannot change in a resumed run (the validation split would change" in _one_error_line(capsys)
    assert main(["train", "--resume", str(run), "--set", "val_fraction=0.3", *FAST]) == 2
    assert "val_fraction cannot change" in _one_error_line(capsys)


def test_help_states_the_override_rule(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "later rows win" in out and "more specific option wins over --set" in out


def test_docs_state_the_override_rule():
    root = Path(__file__).resolve().parents[1]
    for doc in (root / "docs" / "training.md", root / "README.md"):
        assert "--set" in doc.read_text() and "wins over" in doc.read_text(), doc


def test_misspelt_source_option_is_refused_not_ignored(data, tmp_path, capsys):
    """Sources take ``**_``, so --set source_options.varient=original used to be dropped silently."""
    argv = ["train", "boulis-baseline", "--data", str(data), "--out", str(tmp_path / "runs"),
            "--set", "source_options.varient=original", *FAST]
    assert main(argv) == 2
    assert "dataset 'folders': unknown source option(s) varient (its options: none)" in _one_error_line(capsys)
    from ferkit.data.sources import get_source

    assert get_source("rafdb").option_names() == ["variant"]
    assert "angles" in get_source("kdef").option_names()


def test_val_fraction_out_of_range_is_a_data_error(data):
    from ferkit.data.dataset import load_index
    from ferkit.errors import DataError

    with pytest.raises(DataError, match=r"val_fraction must be in \[0, 1\)"):
        load_index(data, "val", val_fraction=1.5)  # ferkit evaluate --val-fraction 1.5 (was a ValueError)


def test_recipe_and_resume_together_is_refused(tmp_path, capsys):
    """The positional recipe was ignored in silence when --resume was given."""
    assert main(["train", "li-vgg", "--resume", str(tmp_path), *FAST]) == 2
    assert "not both" in _one_error_line(capsys)


def test_source_option_values_are_type_checked(tmp_path):
    """The string "false" is true to Python: source_options={face_crop: "false"} cropped faces."""
    from ferkit.data.sources import get_source
    from ferkit.errors import DataError

    kdef = get_source("kdef")
    with pytest.raises(DataError, match="dataset 'kdef': option face_crop must be true or false, got 'false'"):
        kdef.check_options({"face_crop": "false"})
    with pytest.raises(DataError, match="option split_mode must be a string, got 3"):
        kdef.check_options({"split_mode": 3})
    assert kdef.check_options({"test_fraction": "0.3", "face_crop": False}) == {"test_fraction": 0.3,
                                                                                 "face_crop": False}
    assert get_source("jaffe").check_options({"face_crop": "auto"}) == {"face_crop": "auto"}  # undeclared: as given


def test_a_field_given_twice_in_a_recipe_file_is_refused(tmp_path, capsys):
    """PyYAML keeps the last of two equal keys in silence: 'epochs: 10' ... 'epochs: 60' trained 60."""
    f = tmp_path / "mine.yaml"
    f.write_text("name: mine\nmodel: boulis-baseline\nepochs: 10\nlr: 0.01\nepochs: 60\n")
    assert main(["train", str(f), "--data", str(tmp_path), *FAST]) == 2
    assert "not valid YAML ('epochs' given twice (lines 3 and 5))" in _one_error_line(capsys)
    with pytest.raises(FerkitError, match=r"'width' given twice \(line 1\)"):
        parse_set(["model_kwargs={width: 8, width: 16}"])


def test_broken_yaml_is_one_line_with_its_position(tmp_path, capsys):
    f = tmp_path / "mine.yaml"
    f.write_text("name: mine\nmodel: [boulis-baseline\nepochs: 3\n")
    assert main(["train", str(f), "--data", str(tmp_path), *FAST]) == 2
    assert "not valid YAML (expected ',' or ']'" in _one_error_line(capsys)


def test_evaluating_a_run_on_another_layout_drops_the_runs_source_options(tmp_path):
    """A KDEF run's source options (face_crop, angles) would be refused by the folder layout."""
    from ferkit.labels import FER7
    from ferkit.models.input_config import InputConfig
    from ferkit.training.datamodule import checkpoint_split

    run = tmp_path / "run"
    run.mkdir()
    rec = {**load_recipe("boulis-baseline").to_dict(), "dataset": "kdef",
           "source_options": {"face_crop": False, "angles": ["S"]}}
    (run / "config.yaml").write_text(yaml.safe_dump({"recipe": rec, "data": "/elsewhere"}))
    data = write_class_tree(tmp_path / "d", n=2, splits=())
    ds = checkpoint_split(run / "best.ckpt", data, "all", labels=list(FER7), input_config=InputConfig(),
                          dataset="folders", progress=False)
    assert len(ds) == 14


@pytest.mark.parametrize("argv", [
    ["evaluate", "default", "--data", ".", "--batch-size", "0"],
    ["compare", "default", "--data", ".", "--batch-size", "-1"],
    ["robustness", "default", "--data", ".", "--limit", "0"],
    ["denoise-preview", "x.ckpt", "--data", ".", "--n", "0"],
])
def test_other_commands_check_their_numbers_at_parse_time(argv, capsys):
    """evaluate --batch-size 0 was a ValueError traceback from the DataLoader."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and "expected a whole number >= 1" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "what", "msg"), [
    # Folders: a FileExistsError traceback after the whole run, evaluation or sweep.
    (["train", "boulis-baseline", "--data", "."], "afile", "afile is a file, not a folder"),
    (["train", "boulis-baseline", "--data", "."], "afile/runs", "afile is a file, not a folder"),
    (["evaluate", "default", "--data", "."], "afile", "afile is a file, not a folder"),
    (["robustness", "default", "--data", "."], "afile/r", "afile is a file, not a folder"),
    # Files: an IsADirectoryError traceback from the final rename, a .tmp left behind.
    (["export", "default"], "adir", "adir is a folder; give a file name in it"),
    (["export", "default"], "afile/m.onnx", "afile is a file, not a folder"),
    (["ensemble", "a.pt", "b.pt"], "adir", "adir is a folder; give a file name in it"),
    (["denoise-preview", "x.ckpt", "--data", "."], "afile/p.png", "afile is a file, not a folder"),
])
def test_out_paths_that_cannot_be_written_are_usage_errors(argv, what, msg, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    with pytest.raises(SystemExit) as e:
        main([*argv, "--out", str(tmp_path / what)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "argument --out" in err and msg in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "afile"]


@pytest.mark.parametrize(("policy", "msg"), [
    ({"progressive": {"until": "backbone", "unfreez": {1: "head"}}}, "progressive has no key(s) unfreez"),
    ({"progressive": {"until": "backbone", "unfreeze": {"one": "head"}}}, "whole-number epochs"),
    ({"progressive": {"until": "backbone", "lr_factor": "fast"}}, "number lr_factor"),
    ({"trainable_last": "two"}, "trainable_last must be a whole number"),
])
def test_freeze_policy_mistakes_are_one_line_errors(policy, msg):
    """A misspelt 'unfreez' never unfroze anything; 'two' or 'fast' were ValueError tracebacks."""
    from torch import nn

    from ferkit.training.freezing import apply_freeze

    model = nn.Sequential()
    model.add_module("backbone", nn.Linear(2, 2))
    model.add_module("head", nn.Linear(2, 2))
    with pytest.raises(FerkitError, match=re.escape(msg)):
        apply_freeze(model, policy)


@pytest.mark.parametrize(("argv", "msg"), [
    # A year of minutes at most: 1e13 minutes overflowed the trainer's timedelta hard stop
    # (an OverflowError traceback after the run folder was made).
    (["--max-time", "1e13"], "max_time must be a number in (0, 525600], got 10000000000000.0"),
    (["--max-time", "1e308"], "max_time must be a number in (0, 525600]"),
    # The cosine's floor above its start climbed the learning rate from 1e-3 to 0.75 silently.
    (["--set", "scheduler=cosine", "--set", "min_lr=1"], "min_lr must be <= lr with scheduler cosine"),
    (["--set", "scheduler=cosine", "--lr", "1e-4", "--set", "min_lr=1e-3"], "got min_lr 0.001 > lr 0.0001"),
    # A warm-up as long as the run: the learning rate never reached its peak nor decayed.
    (["--set", "scheduler=cosine", "--epochs", "2", "--set", "warmup_epochs=5"],
     "warmup_epochs must be less than epochs with scheduler cosine"),
    (["--set", "scheduler=cosine", "--epochs", "2", "--set", "warmup_epochs=2"], "got 2 >= 2"),
])
def test_schedule_fields_that_cannot_work_are_refused(argv, msg, data, tmp_path, capsys):
    assert main(["train", "boulis-baseline", "--data", str(data), "--out", str(tmp_path / "runs"),
                 *argv, *FAST]) == 2
    assert msg in _one_error_line(capsys)
    assert not (tmp_path / "runs").exists()


def test_schedule_fields_are_free_where_they_are_not_read():
    # min_lr and warmup_epochs belong to the cosine: under plateau they change nothing
    r = load_recipe("boulis-baseline").override(scheduler="plateau", min_lr=1.0, warmup_epochs=100.0, epochs=2)
    assert r.min_lr == 1.0
    load_recipe("boulis-baseline").override(scheduler="cosine", lr=1e-3, min_lr=1e-3, warmup_epochs=1.5, epochs=2)
