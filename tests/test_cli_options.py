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
