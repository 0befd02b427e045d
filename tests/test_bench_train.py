"""benchmarks/bench_train.py: the rows and fields it reports (never its timings)."""

import pytest

pytest.importorskip("lightning")

import json
from pathlib import Path

from conftest import load_script

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_train.py"
QUICK = ["--quick", "--device", "cpu", "--recipes", "ferkit-default", "--steps", "2", "--batch-size", "4",
         "--threads", "1"]


def _bench():
    return load_script(BENCH)


@pytest.fixture(scope="module")
def bench():
    import torch

    threads = torch.get_num_threads()
    yield _bench()
    torch.set_num_threads(threads)  # main() applies --threads to this process


def test_quick_cpu_run_reports_each_precision(bench, capsys):
    from ferkit.models.flops import forward_flops

    result = bench.main([*QUICK, "--precisions", "fp32", "bf16", "--json"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["rows"] == json.loads(json.dumps(result["rows"]))  # --json prints what main returns
    rows = result["rows"]
    assert [(r["recipe"], r["model"], r["precision"]) for r in rows] == [
        ("ferkit-default", "boulis-baseline", "fp32"), ("ferkit-default", "boulis-baseline", "bf16")]
    assert (result["device"], result["steps"], result["warmup"], result["peak_tflops"]) == ("cpu", 2, 1, None)
    # the recipe's own network (hidden=1024 from model_kwargs), not the registry default
    gflop = forward_flops("boulis-baseline", hidden=1024) / 1e9
    fp32, bf16 = rows
    for r in rows:
        assert (r["batch_size"], r["steps"], r["copies"]) == (4, 2, 1)
        assert r["images_per_s"] > 0 and r["ms_per_step"] > 0
        assert r["images_per_s"] == pytest.approx(4 * 1000 / r["ms_per_step"])
        assert r["forward_gflop"] == pytest.approx(gflop)
        assert r["achieved_tflops"] == pytest.approx(3 * gflop * r["images_per_s"] / 1000)
        assert r["peak_fraction"] is None  # no peak on a CPU unless given
    assert fp32["vs_fp32"] is None
    assert bf16["vs_fp32"] == pytest.approx(bf16["images_per_s"] / fp32["images_per_s"])


def test_table_has_a_row_per_configuration_and_the_peak_column(bench, capsys):
    result = bench.main([*QUICK, "--precisions", "fp32", "--peak-tflops", "2"])
    out = capsys.readouterr().out
    assert "| recipe | model | precision | batch | copies | images/s | ms/step | CPU ms/step |" in out
    assert "% of 2 TFLOP/s" in out
    (row,) = result["rows"]
    assert row["peak_fraction"] == pytest.approx(row["achieved_tflops"] / 2)
    lines = [ln for ln in out.splitlines() if ln.startswith("| ferkit-default |")]
    assert len(lines) == 1 and lines[0].startswith("| ferkit-default | boulis-baseline | fp32 | 4 | 1 |")
    assert lines[0].rstrip().endswith(f"| {100 * row['peak_fraction']:.1f}% | - |")


def test_concurrent_copies_are_summed_over_the_union_of_their_windows(bench):
    copies = [
        {"recipe": "r", "model": "m", "precision": "bf16", "batch_size": 10, "forward_gflop": 1.0, "steps": 5,
         "images_per_s": 50.0, "ms_per_step": 200.0, "cpu_ms_per_step": 100.0, "window": [100.0, 101.0]},
        {"recipe": "r", "model": "m", "precision": "bf16", "batch_size": 10, "forward_gflop": 1.0, "steps": 5,
         "images_per_s": 25.0, "ms_per_step": 400.0, "cpu_ms_per_step": 300.0, "window": [100.0, 102.0]},
    ]
    row = bench._combine(copies)
    assert row["copies"] == 2
    assert row["images_per_s"] == pytest.approx(100 / 2.0)  # 100 images in 2 s, not 50 + 25
    assert row["per_copy_images_per_s"] == [50.0, 25.0]
    assert row["ms_per_step"] == pytest.approx(300.0)
    assert row["achieved_tflops"] == pytest.approx(3 * 1e9 * 50 / 1e12)


def test_bad_arguments_exit_2_with_one_line(bench, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--device", "cpu", "--recipes", "no-such-recipe", "--quick"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: unknown recipe 'no-such-recipe'")
    for bad in (["--steps", "0"], ["--warmup", "0"], ["--concurrent", "0"], ["--peak-tflops", "-1"]):
        with pytest.raises(SystemExit) as e:
            bench.main(["--device", "cpu", *bad])
        assert e.value.code == 2


def test_concurrent_barrier_holds_each_copy_until_all_arrive(bench, tmp_path):
    import threading

    arrived = []

    def copy(i):
        bench._Barrier(str(tmp_path), 2, i).wait("cfg")
        arrived.append(i)

    first = threading.Thread(target=copy, args=(0,))
    first.start()
    first.join(0.2)
    assert first.is_alive() and arrived == []  # waits for the second copy
    copy(1)
    first.join(5)
    assert sorted(arrived) == [0, 1]


def test_pilot_recipe_runs_a_recipe_with_and_without_batch_size(tiny_tree, capsys):
    """benchmarks/pilot_recipe.py broke when build_module lost max_epochs and Recipe.override
    began to take None as a value (--batch-size left unset sent batch_size=None)."""
    import math

    import torch

    pilot = load_script(BENCH.with_name("pilot_recipe.py"))
    threads = torch.get_num_threads()
    try:
        for size in (["--batch-size", "4"], ["--set", "batch_size=4"]):
            losses = pilot.main(["ferkit-default", "--data", str(tiny_tree), "--steps", "2", "--every", "1",
                                 "--set", "model_kwargs.hidden=16", *size])
            assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
            out = capsys.readouterr().out
            assert "batch 4," in out and "2 steps: mean loss of the first 1" in out
    finally:
        torch.set_num_threads(threads)


def test_reports_the_cpu_its_flags_and_the_load_and_flags_a_busy_machine(bench, capsys, monkeypatch):
    import os

    from ferkit.training.precision import cpu_flags, cpu_model

    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 9.0, 9.0))  # eight jobs beside it
    result = bench.main([*QUICK, "--precisions", "fp32"])
    out = capsys.readouterr().out
    assert result["cpu"] == cpu_model() and result["cpu_flags"] == cpu_flags()
    assert result["load_average_before"] == [9.0, 9.0, 9.0] and result["noisy"] is True
    assert "load average 9.00 before, 9.00 after" in out and "NOISY" in out
    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.1, 0.1))
    assert bench.main([*QUICK, "--precisions", "fp32"])["noisy"] is False
    assert "NOISY" not in capsys.readouterr().out
