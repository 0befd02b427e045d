"""``precision: auto`` on a CPU is decided by a measured probe of the run's own network,
cached per CPU and network; not by a CPU flag alone (bf16 is 10x slower than fp32 on an
AVX2-only EPYC, 2.9x faster on one with AVX512-BF16)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("lightning", reason="needs the train extra (PyTorch, Lightning)")
import torch

from ferkit.training import precision as P
from ferkit.training.recipes import Recipe

TINY = Recipe(name="tiny", model="boulis-baseline", model_kwargs={"width": 4, "hidden": 8}, batch_size=8)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FERKIT_CACHE", str(tmp_path))
    return tmp_path / "precision.json"


@pytest.mark.parametrize("fp32, bf16, want", [(1.0, 0.35, "bf16-mixed"), (1.0, 10.0, "32-true"),
                                              (1.0, 0.95, "32-true"), (1.0, None, "32-true")])
def test_the_faster_precision_wins_by_measurement(cache, monkeypatch, fp32, bf16, want):
    times = {False: fp32, True: bf16}
    monkeypatch.setattr(P, "_time_steps", lambda model, x, y, bf16, give_up_s: times[bf16])
    assert P.auto_cpu_precision(TINY, 32, 1, verbose=False) == want
    entry = next(iter(json.loads(cache.read_text()).values()))
    assert entry["precision"] == want and entry["fp32_s_per_step"] == fp32 and entry["cpu"] == P.cpu_model()


def test_the_answer_is_cached_per_network(cache, monkeypatch, capsys):
    assert P.auto_cpu_precision(TINY, 32, 1) in ("32-true", "bf16-mixed")  # a real probe, tiny network
    assert "precision auto: fp32" in capsys.readouterr().out

    def no_probe(*a, **k):
        raise AssertionError("probed again")

    monkeypatch.setattr(P, "probe_cpu_precision", no_probe)
    P.auto_cpu_precision(TINY, 32, 1)  # cached
    other = Recipe(name="tiny", model="boulis-baseline", model_kwargs={"width": 8, "hidden": 8}, batch_size=8)
    with pytest.raises(AssertionError, match="probed again"):
        P.auto_cpu_precision(other, 32, 1)  # another network is probed on its own
    with pytest.raises(AssertionError, match="probed again"):
        P.auto_cpu_precision(TINY, 40, 1)  # and another input size


def test_the_probe_leaves_the_runs_random_stream_alone(cache):
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    P.probe_cpu_precision(TINY, 32, 1)
    assert torch.equal(torch.rand(3), expected)


def test_a_damaged_cache_is_probed_again(cache):
    cache.write_text("{not json")
    assert P.auto_cpu_precision(TINY, 32, 1, verbose=False) in ("32-true", "bf16-mixed")
    assert len(json.loads(cache.read_text())) == 1
