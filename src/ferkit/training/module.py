"""The LightningModule that trains any registered backbone.

Backbones stay plain ``nn.Module``s. A backbone that needs its own objective
(autoencoders, hybrids with auxiliary losses) defines
``compute_loss(x, y, module) -> (loss, logits | None)``; otherwise the loss is
(weighted) cross-entropy on the logits.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from ferkit.data.transforms import make_augment, prepare_batch, to_float
from ferkit.labels import FER7
from ferkit.models.registry import create_model


class FerLitModule(L.LightningModule):
    def __init__(
        self,
        model_name: str,
        num_classes: int = 7,
        labels: list[str] | None = None,
        model_kwargs: dict | None = None,
        in_chans: int | None = None,
        input_size: int | None = None,
        optimizer: str = "adam",
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        scheduler: str = "plateau",
        plateau_factor: float = 0.5,
        plateau_patience: int = 5,
        max_epochs: int = 30,
        augment: str = "none",
        distortion_augment: str | None = None,
        class_weights: list[float] | None = None,
        label_smoothing: float = 0.0,
        task: str = "classify",
        channels_last: bool = False,
        input_config: dict | None = None,  # filled in from the model, saved for loading
    ):
        super().__init__()
        self.model = create_model(
            model_name, num_classes=num_classes, in_chans=in_chans, input_size=input_size,
            **(model_kwargs or {}),
        )
        self.cfg = self.model.input_config
        self.save_hyperparameters()
        self.hparams.input_config = self.cfg.to_dict()
        self.hparams.labels = list(labels or FER7[:num_classes])
        self.augment = make_augment(augment)
        self.distort = _make_distortion(distortion_augment)
        self.register_buffer(
            "class_w", torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        )
        # torchmetrics averages per class ("macro") by default; *_acc is plain accuracy
        # (what evaluate reports), and the class-balanced figure is logged beside it.
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_bal_acc = MulticlassAccuracy(num_classes, average="macro")

    def forward(self, x):
        return self.model(x)

    def on_fit_start(self):
        if self.hparams.channels_last:
            self.model.to(memory_format=torch.channels_last)

    # Augmentation and preprocessing run on whole batches on the training device.
    def on_after_batch_transfer(self, batch, dataloader_idx):
        x, y = batch
        x = to_float(x)
        if self.trainer is not None and self.trainer.training:
            if self.augment is not None:
                x = self.augment(x)
            if self.distort is not None:
                x = self.distort(x)
        x = prepare_batch(x, self.cfg)
        if self.hparams.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def _step(self, batch, stage: str):
        x, y = batch
        if hasattr(self.model, "compute_loss"):
            loss, logits = self.model.compute_loss(x, y, self)
        else:
            logits = self(x)
            loss = F.cross_entropy(logits, y, weight=self.class_w, label_smoothing=self.hparams.label_smoothing)
        self.log(f"{stage}_loss", loss, on_epoch=True, on_step=False, prog_bar=True, sync_dist=True,
                 batch_size=len(y))
        if logits is not None:
            acc = self.train_acc if stage == "train" else self.val_acc
            acc(logits.detach(), y)
            self.log(f"{stage}_acc", acc, on_epoch=True, on_step=False, prog_bar=True, batch_size=len(y))
            if stage == "val":
                self.val_bal_acc(logits.detach(), y)
                self.log("val_bal_acc", self.val_bal_acc, on_epoch=True, on_step=False, batch_size=len(y))
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        return self._step(batch, "val")

    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        if hp.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay)
        elif hp.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay)
        elif hp.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay,
                                  nesterov=hp.momentum > 0)
        else:
            raise ValueError(f"unknown optimizer {hp.optimizer!r} (adam, adamw, sgd)")
        if hp.scheduler == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode="min", factor=hp.plateau_factor, patience=hp.plateau_patience
            )
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_loss"}}
        if hp.scheduler == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, hp.max_epochs))
            return {"optimizer": opt, "lr_scheduler": sched}
        return opt


def _make_distortion(spec: str | None):
    if not spec:
        return None
    try:
        from ferkit.data.distortions import DistortionAugment
    except ModuleNotFoundError:
        raise ValueError("distortion_augment needs ferkit.data.distortions") from None
    return DistortionAugment.from_spec(spec)
