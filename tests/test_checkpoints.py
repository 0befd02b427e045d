"""best.ckpt and last.ckpt: last must follow the latest epoch even when best stops improving."""

from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="needs the train extra (PyTorch)")
import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from ferkit.training.train import checkpoint_callbacks


class _WorseningModel(L.LightningModule):
    """Trains a linear layer; reports a validation loss that grows every epoch."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)

    def training_step(self, batch, _):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.layer(x), y)

    def validation_step(self, batch, _):
        self.log("val_loss", float(self.current_epoch + 1))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_last_checkpoint_is_the_latest_epoch_when_best_stops_improving(tmp_path):
    data = TensorDataset(torch.randn(16, 4), torch.randint(0, 2, (16,)))
    trainer = L.Trainer(
        max_epochs=3, callbacks=checkpoint_callbacks(tmp_path), logger=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
    )
    trainer.fit(_WorseningModel(), DataLoader(data, batch_size=8), DataLoader(data, batch_size=8))
    best = torch.load(tmp_path / "best.ckpt", weights_only=False)
    last = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert best["epoch"] == 0, "val_loss was lowest after the first epoch"
    assert last["epoch"] == 2, "last.ckpt must hold the final epoch for --resume"
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == ["best.ckpt", "last.ckpt"]
