"""The LightningModule that trains any registered backbone.

Backbones stay plain ``nn.Module``s. A backbone that needs its own objective
(autoencoders, hybrids with auxiliary losses) defines
``compute_loss(x, y, *, class_weights, label_smoothing, noisy) -> (loss, logits | None)``
with plain arguments (it never sees this module); otherwise the loss is (weighted)
cross-entropy on the logits. A denoising model names the corruption it learns to
undo in ``train_distortion``; this module makes the ``noisy`` copy from it, so
models need nothing from ``ferkit.data``. Whether a model classifies or
reconstructs comes from the registry (:func:`ferkit.models.registry.model_task`).

Two optional regularisers for classifiers, both recipe fields:

* ``mixup`` (alpha > 0): torchvision's batch MixUp; the loss is then
  cross-entropy on the mixed soft targets.
* ``teacher``: knowledge distillation (Hinton et al., 2015) from one or more
  frozen trained models (checkpoints or shipped names such as ``default``).
  The loss is ``(1 - a) * CE(student, y) + a * T^2 * KL(teacher_T || student_T)``
  with ``a = distill_alpha`` and temperature ``T = distill_temperature``; several
  teachers are averaged in probability space. Each teacher sees the same
  augmented batch, preprocessed with its own declared input config.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import replace

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from ferkit.data.transforms import make_augment, prepare_batch, to_float
from ferkit.errors import FerkitError
from ferkit.labels import FER7
from ferkit.models.registry import create_model, model_task
from ferkit.training.recipes import Recipe
from ferkit.training.schedule import warmup_cosine


class FerLitModule(L.LightningModule):
    """Trains one registered backbone as configured by a :class:`~ferkit.training.recipes.Recipe`.

    Args:
        recipe: the run's recipe (model, optimiser, schedule, augmentation, regularisers).
        labels: class names in logit order (default: the recipe's, else FER2013's seven).
        class_weights: per-class loss weights (K,), e.g. inverse frequency; None = unweighted.

    The recipe's fields are saved flat in ``hparams`` (with ``model_name``, ``num_classes``,
    ``labels`` and the model's ``input_config``), so a checkpoint alone says how its model
    was built and trained (:func:`ferkit.models.checkpoint.load_checkpoint` reads them).
    Batches arrive as uint8 (B, C, H, W); augmentation and the model's preprocessing run
    here on whole batches on the training device (:meth:`on_after_batch_transfer`).

    Raises:
        FerkitError: the model rejects ``recipe.model_kwargs``, or mixup/teacher are asked
            of a model that defines its own loss.
    """

    def __init__(self, recipe: Recipe | dict, labels: list[str] | None = None,
                 class_weights: list[float] | None = None):
        super().__init__()
        recipe = recipe if isinstance(recipe, Recipe) else Recipe.from_dict(_recipe_fields(recipe))
        labels = list(labels or recipe.labels or FER7)
        num_classes = len(labels)
        try:
            self.model = create_model(
                recipe.model, num_classes=num_classes, in_chans=recipe.in_chans, input_size=recipe.input_size,
                **(recipe.model_kwargs or {}),
            )
        except (TypeError, ValueError) as e:
            # A wrong model_kwargs entry (unknown name, out-of-range value) is a usage error.
            raise FerkitError(
                f"model {recipe.model!r} rejects model_kwargs {recipe.model_kwargs or {}}: {e}") from None
        self.recipe = recipe
        self.cfg = self.model.input_config
        self.task = model_task(recipe.model)
        self.save_hyperparameters({
            **recipe.to_dict(), "model_name": recipe.model, "num_classes": num_classes, "labels": labels,
            "class_weights": list(class_weights) if class_weights is not None else None,
            "input_config": self.cfg.to_dict(),
        })
        self.augment = make_augment(recipe.augment, self.cfg)
        self.distort = _make_distortion(recipe.distortion_augment)
        self.register_buffer(
            "class_w", torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        )
        self.label_smoothing = recipe.label_smoothing
        if (recipe.mixup or recipe.teacher) and hasattr(self.model, "compute_loss"):
            raise FerkitError(f"mixup/teacher apply to plain classifiers; {recipe.model} defines its own loss")
        self.mixup = None
        if recipe.mixup and recipe.mixup > 0:
            from torchvision.transforms import v2

            self.mixup = v2.MixUp(alpha=float(recipe.mixup), num_classes=num_classes)
        # Teachers live in a plain list, not as submodules: they are neither trained,
        # nor averaged by EMA, nor written into this module's checkpoints.
        self._teachers = _load_teachers(recipe.teacher, labels)
        # torchmetrics averages per class ("macro") by default; *_acc is plain accuracy
        # (what evaluate reports), and the class-balanced figure is logged beside it.
        # validate_args=False: the argument checks read tensor values on the host, a
        # device synchronisation on every update.
        acc = {"num_classes": num_classes, "validate_args": False}
        self.train_acc = MulticlassAccuracy(average="micro", **acc)
        self.val_acc = MulticlassAccuracy(average="micro", **acc)
        self.val_bal_acc = MulticlassAccuracy(average="macro", **acc)
        # Total optimiser steps of the schedule; train() may shorten it for a time budget
        # (ferkit.training.schedule.TimeBudget) while the run goes on.
        self.schedule_steps: int | None = None

    @classmethod
    def for_model(cls, model: str, labels: list[str] | None = None, class_weights=None, **fields):
        """A module for ``model`` with recipe ``fields`` (tests and quick experiments)."""
        return cls(Recipe(name=fields.pop("name", model), model=model, **fields), labels, class_weights)

    def record_framing(self, face_margin: float | None) -> None:
        """Record the margin the training faces were cut with (``Index.face_margin``) as the
        model's ``InputConfig.face_margin``: checkpoints, exported files and the Recognizer
        then cut faces the way this model saw them. None (images used as given) keeps the
        model's declared framing."""
        if face_margin is None or face_margin == self.cfg.face_margin:
            return
        self.cfg = replace(self.cfg, face_margin=face_margin)
        self.model.input_config = self.cfg
        self.hparams["input_config"] = self.cfg.to_dict()

    def forward(self, x):
        return self.model(x)

    def on_fit_start(self):
        for t in self._teachers:
            t["model"].to(self.device)
        if self.recipe.channels_last:
            self.model.to(memory_format=torch.channels_last)

    # Augmentation and preprocessing run on whole batches on the training device.
    def on_after_batch_transfer(self, batch, dataloader_idx):
        x, y = batch
        x = to_float(x)
        training = self.trainer is not None and self.trainer.training
        soft = None
        if training:
            if self.augment is not None:
                x = self.augment(x)
            if self.distort is not None:
                x = self.distort(x)
            if self.mixup is not None:
                x, soft = self.mixup(x, y)
            if self._teachers:
                t = self._teacher_probs(x)
                soft = t if soft is None else (soft, t)
        x = prepare_batch(x, self.cfg)
        if self.recipe.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return (x, y) if soft is None else (x, y, soft)

    @torch.no_grad()
    def _teacher_probs(self, x01: torch.Tensor) -> torch.Tensor:
        """Mean teacher probabilities at the distillation temperature, from [0, 1] input."""
        T = self.recipe.distill_temperature
        # the trainer's precision context (bf16 autocast where the student uses it)
        ctx = self._trainer.precision_plugin.forward_context() if self._trainer is not None else nullcontext()
        probs = 0
        with ctx:
            for t in self._teachers:
                xt = prepare_batch(x01, t["cfg"])
                probs = probs + F.softmax(t["model"](xt).float() / T, dim=1)
        return probs / len(self._teachers)

    def _classify_loss(self, logits, y, soft):
        hp = self.recipe
        mix = teach = None
        if soft is not None:
            if self.mixup is not None and self._teachers:
                mix, teach = soft
            elif self.mixup is not None:
                mix = soft
            else:
                teach = soft
        if mix is not None:  # soft targets; class weights apply per class of the target
            logp = F.log_softmax(logits.float(), dim=1)
            tgt = mix * (1 - hp.label_smoothing) + hp.label_smoothing / logits.shape[1]
            w = self.class_w if self.class_w is not None else 1.0
            ce = -(tgt * logp * w).sum(1).mean()
        else:
            ce = F.cross_entropy(logits, y, weight=self.class_w, label_smoothing=hp.label_smoothing)
        if teach is None:
            return ce
        T, a = hp.distill_temperature, hp.distill_alpha
        kd = F.kl_div(F.log_softmax(logits.float() / T, dim=1), teach, reduction="batchmean") * T * T
        return (1 - a) * ce + a * kd

    def _step(self, batch, stage: str):
        x, y, soft = (*batch, None) if len(batch) == 2 else batch
        if hasattr(self.model, "compute_loss"):
            loss, logits = self.model.compute_loss(
                x, y, class_weights=self.class_w, label_smoothing=self.recipe.label_smoothing,
                noisy=self._noisy(x),
            )
        else:
            logits = self(x)
            loss = self._classify_loss(logits, y, soft)
        self.log(f"{stage}_loss", loss, on_epoch=True, on_step=False, prog_bar=True, sync_dist=True,
                 batch_size=len(y))
        if self.task == "classify":
            acc = self.train_acc if stage == "train" else self.val_acc
            acc(logits.detach(), y)
            self.log(f"{stage}_acc", acc, on_epoch=True, on_step=False, prog_bar=True, batch_size=len(y))
            if stage == "val":
                self.val_bal_acc(logits.detach(), y)
                self.log("val_bal_acc", self.val_bal_acc, on_epoch=True, on_step=False, batch_size=len(y))
        return loss

    def _noisy(self, x):
        """The distorted copy a denoising model reconstructs ``x`` from (None if it names none)."""
        spec = getattr(self.model, "train_distortion", None)
        if not spec:
            return None
        from ferkit.data.distortions import DistortionAugment, parse_distortion

        clean = x.clamp(0, 1)
        if self.training:  # every sample distorted, at the spec's severity or a random one
            return DistortionAugment.from_spec(f"{spec}:p=1")(clean)
        parts = spec.split(":")
        # Validation: a fresh seeded stream per batch, so every epoch sees the same noise.
        return parse_distortion(f"{parts[0]}:{parts[1] if len(parts) > 1 else '3'}", seed=1234)(clean)

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        return self._step(batch, "val")

    def configure_optimizers(self):
        r = self.recipe
        params = [p for p in self.parameters() if p.requires_grad]
        if r.weight_decay and not r.decay_norm_and_bias:
            # 1-D tensors are norm scales/shifts and biases: decaying them only fights BN
            params = [{"params": [p for p in params if p.ndim > 1]},
                      {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
        # fused/foreach kernels: one launch for all parameters instead of one per tensor.
        fast = {"foreach": True}
        if r.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=r.lr, betas=tuple(r.betas), weight_decay=r.weight_decay, **fast)
        elif r.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=r.lr, betas=tuple(r.betas), weight_decay=r.weight_decay, **fast)
        elif r.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=r.lr, momentum=r.momentum, weight_decay=r.weight_decay,
                                  nesterov=r.momentum > 0, **fast)
        else:
            raise FerkitError(f"unknown optimizer {r.optimizer!r} (adam, adamw, sgd)")
        if r.scheduler == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode="min", factor=r.plateau_factor, patience=r.plateau_patience
            )
            # strict=False: with validation every N epochs, epochs without a val_loss
            # leave the learning rate as it is instead of failing.
            return {"optimizer": opt,
                    "lr_scheduler": {"scheduler": sched, "monitor": "val_loss", "strict": False}}
        if r.scheduler == "cosine":
            steps_per_epoch = max(1, int(self.trainer.estimated_stepping_batches) // max(1, self.trainer.max_epochs))
            if self.schedule_steps is None:
                self.schedule_steps = int(self.trainer.estimated_stepping_batches)
            warm = round(r.warmup_epochs * steps_per_epoch)
            lam = warmup_cosine(lambda: self.schedule_steps, warm, r.min_lr / r.lr if r.lr else 0.0)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lam)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        return opt


def _load_teachers(teacher, labels: list[str]) -> list[dict]:
    if not teacher:
        return []
    from ferkit.models.checkpoint import load_model_any, require_classifier

    out = []
    for ref in [teacher] if isinstance(teacher, str) else list(teacher):
        model, spec = load_model_any(ref)  # a checkpoint, slim file, shipped name or ensemble
        require_classifier(spec, model)
        if list(spec["labels"]) != list(labels):
            raise FerkitError(f"teacher {ref}: labels {spec['labels']} differ from the student's {labels}")
        for p in model.parameters():
            p.requires_grad_(False)
        out.append({"model": model.eval(), "cfg": spec["input_config"]})
    return out


def _make_distortion(spec: str | None):
    if not spec:
        return None
    try:
        from ferkit.data.distortions import DistortionAugment
    except ModuleNotFoundError:
        raise ValueError("distortion_augment needs ferkit.data.distortions") from None
    return DistortionAugment.from_spec(spec)


def _recipe_fields(d: dict) -> dict:
    """The Recipe fields of a saved hparams dict (which also holds model_name, labels...)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(Recipe)}
    return {k: v for k, v in d.items() if k in names}
