"""Options several commands share are defined once (argparse ``parents=``), so their
names, defaults and checks cannot drift apart between commands."""

from __future__ import annotations

import pytest

from ferkit.cli import build_parser

RUNNERS = {"evaluate": ["ckpt", "--data", "d"], "compare": ["a", "b", "--data", "d"],
           "robustness": ["ckpt", "--data", "d"], "denoise-preview": ["ckpt", "--data", "d"]}


@pytest.mark.parametrize("cmd", sorted(RUNNERS))
def test_run_options_are_the_same_everywhere(cmd):
    p = build_parser()
    a = p.parse_args([cmd, *RUNNERS[cmd]])
    assert (a.batch_size, a.device, a.no_progress) == (256, "auto", False)
    a = p.parse_args([cmd, *RUNNERS[cmd], "--batch-size", "8", "--device", "cpu", "--no-progress"])
    assert (a.batch_size, a.device, a.no_progress) == (8, "cpu", True)
    for bad in (["--batch-size", "0"], ["--device", "tpu"]):
        with pytest.raises(SystemExit) as e:
            p.parse_args([cmd, *RUNNERS[cmd], *bad])
        assert e.value.code == 2


@pytest.mark.parametrize("cmd", ["evaluate", "compare"])
def test_json_flag(cmd):
    assert build_parser().parse_args([cmd, *RUNNERS[cmd], "--json"]).json is True


@pytest.mark.parametrize(("argv", "unknown", "hint"), [
    (["predict", "x.jpg", "--min-faces", "3"], "--min-faces 3", "did you mean --min-face?"),
    (["evaluate", "ckpt", "--data", "d", "--splt", "test"], "--splt test", "did you mean --split?"),
    (["serve", "--prot", "80"], "--prot 80", "did you mean --port?"),
    (["recipes", "--zzz"], "--zzz", None),
])
def test_unknown_option_is_reported_by_its_command(argv, unknown, hint, capsys):
    # argparse used to answer with the top-level usage ("usage: ferkit [-h] [--version]
    # COMMAND ..."), which hides the options the user was looking for.
    from ferkit.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2
    command = argv[0]
    assert f"usage: ferkit {command} " in err
    assert f"ferkit {command}: error: unrecognized arguments: {unknown}" in err
    assert (hint in err) if hint else ("did you mean" not in err)


def test_predict_json_is_format_jsonl():
    p = build_parser()
    assert p.parse_args(["predict", "x.jpg", "--json"]).format == "jsonl"
    assert p.parse_args(["predict", "x.jpg"]).format is None  # --demo still picks text


@pytest.mark.parametrize("cmd", sorted(RUNNERS))
def test_split_options_are_the_same_everywhere(cmd):
    p = build_parser()
    a = p.parse_args([cmd, *RUNNERS[cmd]])
    assert (a.data, a.dataset, a.split) == ("d", None, "test")
    a = p.parse_args([cmd, *RUNNERS[cmd], "--dataset", "kdef", "--split", "val"])
    assert (a.dataset, a.split) == ("kdef", "val")
    with pytest.raises(SystemExit) as e:  # --data is required
        p.parse_args([cmd, *[x for x in RUNNERS[cmd] if x not in ("--data", "d")]])
    assert e.value.code == 2


def test_every_help_page_fits_80_columns(monkeypatch):
    # 'ferkit train --help' printed its description as one 193-character line (a raw
    # formatter does not wrap); every command is checked, so a new one cannot regress.
    monkeypatch.setenv("COLUMNS", "80")
    p = build_parser()
    pages = {"ferkit": p.format_help(), **{n: c.format_help() for n, c in p.command_parsers.items()}}
    assert len(pages) > 10
    for name, text in pages.items():
        long = [line for line in text.splitlines() if len(line) > 80]
        assert not long, (name, long)


def test_recipes_list_cuts_descriptions_at_words(capsys):
    # the list cut each description at 70 characters, mid-word ("... projected ", "(neutral, calm, h")
    from ferkit.cli import main
    from ferkit.commands.listing import shorten
    from ferkit.training.recipes import list_recipes

    assert shorten("a  b\n c", 70) == "a b c"
    assert shorten("one two three four", 12) == "one two..."
    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    full = {r.name: " ".join(r.description.split()) for r in list_recipes()}
    assert len(lines) == len(full)
    cut = 0
    for line in lines:
        name, desc = line.split()[0], line.split(maxsplit=3)[3]
        assert len(desc) <= 70
        if desc.endswith("..."):
            cut += 1
            head = desc[:-3]
            assert full[name].startswith(head) and full[name][len(head)] in " ,;:(", (name, desc)
        else:
            assert desc == full[name]
    assert cut > 0


def test_predict_and_serve_describe_model_and_backend_alike():
    # serve's --model said "'default' (shipped model) or a checkpoint path" although it loads
    # .onnx files, run folders and default-int8 exactly as predict does
    p = build_parser()
    helps = {}
    for cmd in ("predict", "serve"):
        helps[cmd] = {a.dest: a.help for a in p.command_parsers[cmd]._actions if a.dest in ("model", "backend")}
    assert helps["predict"] == helps["serve"]
    assert "'ferkit models'" in helps["serve"]["model"] and ".onnx" in helps["serve"]["model"]
    assert all(a.help for a in p.command_parsers["serve"]._actions)  # --log-level had none
