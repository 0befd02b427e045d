"""Plots written next to runs: files are closed, figures are real PNGs."""

from __future__ import annotations

import gc
import warnings

import pytest

pytest.importorskip("matplotlib")

from ferkit.evaluation.plots import plot_confusion, plot_curves


def test_plot_curves_closes_the_metrics_file(tmp_path):
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text("epoch,step,train_loss,val_loss,val_acc\n0,10,1.5,,\n0,10,,1.4,0.3\n1,20,1.2,1.1,0.4\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert plot_curves(csv_path, tmp_path / "curves.png")
        gc.collect()  # a leaked handle warns when it is collected
    leaks = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks, [str(w.message) for w in leaks]
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_plot_curves_without_epochs_draws_nothing(tmp_path):
    (tmp_path / "metrics.csv").write_text("epoch,step,train_loss\n")
    assert plot_curves(tmp_path / "metrics.csv", tmp_path / "c.png") is False
    assert not (tmp_path / "c.png").exists()


def test_plot_confusion_writes_a_png(tmp_path):
    plot_confusion([[3, 1], [0, 0]], ["a", "b"], tmp_path / "cm.png", "t")  # an empty row must not divide by 0
    assert (tmp_path / "cm.png").read_bytes()[:4] == b"\x89PNG"
