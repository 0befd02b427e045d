"""Freezing policies for fine-tuning pretrained backbones, set per recipe (``freeze:``).

Three policies, one per recipe::

    freeze: {trainable_last: 6}                 # all but the last 6 parameterised layers frozen
    freeze: {freeze_until: backbone.layer3}     # that module and everything before it frozen
    freeze: {progressive: {until: backbone, unfreeze: {5: backbone.layer4, 10: backbone.layer3},
                           lr_factor: 0.1}}     # start frozen, unfreeze stages at given epochs

A *parameterised layer* is a module holding parameters itself (a convolution,
a batch norm, a linear layer), counted in registration order, which for the
torchvision/timm backbones is the order of the forward pass. Frozen batch norms
stay in eval mode (running statistics fixed) even when Lightning puts the model
in training mode, because a forward pre-hook keeps them there while none of
their parameters is trainable.

Keras' ResNet50 "first 170 layers" (Boulis) on torchvision
----------------------------------------------------------
``keras.applications.ResNet50(include_top=False)`` has 175 layers: 7 stem
layers (input, conv1_pad, conv1_conv, conv1_bn, conv1_relu, pool1_pad,
pool1_pool), then per bottleneck block 10 layers (three conv + bn, two relu,
add, out-relu), 12 for the first block of each stage (+ shortcut conv + bn).
Stages: conv2 = 12+10+10 = 32 layers (indices 7-38), conv3 = 12+3*10 = 42
(39-80), conv4 = 12+5*10 = 62 (81-142), conv5 = 12+10+10 = 32 (143-174).
conv5_block3 occupies 165-174 in the order 1_conv, 1_bn, 1_relu, 2_conv,
2_bn, 2_relu, 3_conv, 3_bn, add, out. ``layers[:170]`` therefore ends at
index 169, ``conv5_block3_2_bn``: everything up to and including the second
conv + BN of the last block is frozen; ``conv5_block3_3_conv``/``3_bn`` and the
new head train. (Keras <= 2.1's resnet50.py gives the same boundary: 6 stem
layers, the same blocks and a trailing avg_pool = 175, index 169 =
``res5c_branch2b`` activation.) In torchvision's naming that is::

    freeze: {freeze_until: backbone.layer4.2.bn2}   # trainable: layer4.2.conv3, layer4.2.bn3, head

(= ``trainable_last: 5`` with the 3-layer FC head.)
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ferkit.errors import FerkitError

POLICIES = ("trainable_last", "freeze_until", "progressive")


def param_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(qualified name, module) of every module holding parameters itself, in order."""
    return [
        (n, m) for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))
    ]


def _keep_frozen_bn_eval(module: nn.Module, inputs) -> None:
    # Lightning calls model.train() every epoch; a frozen BN must not start updating its
    # running statistics (nor normalise with batch statistics) because of it.
    if module.training and not any(p.requires_grad for p in module.parameters(recurse=False)):
        module.training = False


def _set_frozen(modules, frozen: bool) -> None:
    for m in modules:
        for p in m.parameters(recurse=False):
            p.requires_grad = not frozen
        if isinstance(m, _BatchNorm):
            if frozen:
                m.eval()
            if not getattr(m, "_ferkit_bn_hook", False):
                m.register_forward_pre_hook(_keep_frozen_bn_eval)
                m._ferkit_bn_hook = True


def freeze_all_but_last(model: nn.Module, n: int) -> int:
    """Freeze every parameterised layer but the last ``n``; returns how many were frozen."""
    layers = param_layers(model)
    if n < 0:
        raise FerkitError(f"freeze: trainable_last must be >= 0 (got {n})")
    cut = max(0, len(layers) - int(n))
    _set_frozen([m for _, m in layers[:cut]], True)
    _set_frozen([m for _, m in layers[cut:]], False)
    return cut


def resolve_module(model: nn.Module, name: str) -> tuple[str, nn.Module]:
    """Find a submodule by qualified name, also accepting a unique suffix (``layer3``)."""
    modules = dict(model.named_modules())
    if name in modules:
        return name, modules[name]
    hits = [n for n in modules if n.endswith("." + name)]
    if len(hits) == 1:
        return hits[0], modules[hits[0]]
    stages = sorted(
        {n.split(".")[0] for n in modules if n} | {".".join(n.split(".")[:2]) for n in modules if n}
    )
    why = f"ambiguous ({', '.join(hits[:4])})" if hits else "not found"
    raise FerkitError(f"freeze: module {name!r} {why}; top-level modules: {', '.join(stages[:30])}")


def freeze_until(model: nn.Module, name: str) -> int:
    """Freeze module ``name`` and every parameterised layer registered before it."""
    qual, _ = resolve_module(model, name)
    layers = param_layers(model)
    inside = [i for i, (n, _) in enumerate(layers) if n == qual or n.startswith(qual + ".")]
    if not inside:
        raise FerkitError(f"freeze: module {name!r} has no parameters")
    cut = inside[-1] + 1
    _set_frozen([m for _, m in layers[:cut]], True)
    _set_frozen([m for _, m in layers[cut:]], False)
    return cut


def trainable_summary(model: nn.Module) -> str:
    total = sum(p.numel() for p in model.parameters())
    train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return f"{train:,} of {total:,} parameters trainable ({100.0 * train / max(total, 1):.1f}%)"


def apply_freeze(model: nn.Module, policy: dict | None):
    """Apply a recipe's freezing policy to ``model`` (the backbone, not the LightningModule).

    Args:
        model: the network.
        policy: ``{}`` (nothing), ``{"trainable_last": N}``, ``{"freeze_until": NAME}`` or
            ``{"progressive": {"until": NAME, "unfreeze": {EPOCH: NAME, ...}, "lr_factor": F}}``.

    Returns:
        ``None``, or for ``progressive`` the Lightning callback that unfreezes the stages
        (add it to the Trainer's callbacks); the initial freeze is applied here already so
        the optimizer built next only sees trainable parameters.
    """
    if not policy:
        return None
    if not isinstance(policy, dict) or len(policy) != 1 or next(iter(policy)) not in POLICIES:
        raise FerkitError(
            f"freeze: expected one of {', '.join(POLICIES)} as the only key, got {policy!r}"
        )
    kind, value = next(iter(policy.items()))
    if kind == "trainable_last":
        if isinstance(value, bool) or not isinstance(value, int):
            raise FerkitError(f"freeze: trainable_last must be a whole number of modules, got {value!r}")
        freeze_all_but_last(model, value)
    elif kind == "freeze_until":
        freeze_until(model, str(value))
    else:
        cb = ProgressiveUnfreeze.from_policy(value)
        cb.freeze_model(model)
        print(f"freeze {policy}: {trainable_summary(model)}")
        return cb
    print(f"freeze {policy}: {trainable_summary(model)}")
    return None


def freeze_callback(policy: dict | None):
    """The Lightning callback a policy needs (only ``progressive`` has one), else None."""
    if policy and "progressive" in policy:
        return ProgressiveUnfreeze.from_policy(policy["progressive"])
    return None


def _base_finetuning():
    from lightning.pytorch.callbacks import BaseFinetuning

    return BaseFinetuning


class ProgressiveUnfreeze(_base_finetuning()):
    """Lightning ``BaseFinetuning`` callback: start with ``until`` frozen, then unfreeze.

    At the start of each epoch listed in ``schedule`` the named module's parameters
    become trainable and join the optimizer as a new param group at
    ``lr_factor`` x the current learning rate (small steps for pretrained layers).

    Args:
        until: module frozen (with everything before it) at the start.
        schedule: ``{epoch: module name}``.
        lr_factor: learning-rate multiplier for newly unfrozen groups.
    """

    def __init__(self, until: str, schedule: dict, lr_factor: float = 0.1):
        super().__init__()
        self.until = until
        self.schedule = {int(k): str(v) for k, v in (schedule or {}).items()}
        self.lr_factor = float(lr_factor)

    @classmethod
    def from_policy(cls, spec: dict) -> ProgressiveUnfreeze:
        if not isinstance(spec, dict) or "until" not in spec:
            raise FerkitError(
                "freeze: progressive needs {until: MODULE, unfreeze: {EPOCH: MODULE}}"
            )
        unknown = sorted(set(spec) - {"until", "unfreeze", "lr_factor"})
        if unknown:  # a misspelt 'unfreez' would otherwise never unfreeze anything
            raise FerkitError(f"freeze: progressive has no key(s) {', '.join(map(str, unknown))} "
                              "(keys: until, unfreeze, lr_factor)")
        try:
            return cls(spec["until"], spec.get("unfreeze", {}), spec.get("lr_factor", 0.1))
        except (TypeError, ValueError, AttributeError):
            raise FerkitError(
                f"freeze: progressive expects unfreeze: {{EPOCH: MODULE}} with whole-number epochs and a "
                f"number lr_factor, got {spec!r}"
            ) from None

    def freeze_model(self, model: nn.Module) -> None:
        freeze_until(model, self.until)
        for name in self.schedule.values():
            resolve_module(model, name)  # fail now, not at epoch N, on a misspelt stage

    @staticmethod
    def _net(pl_module) -> nn.Module:
        return getattr(pl_module, "model", pl_module)

    def freeze_before_training(self, pl_module) -> None:
        self.freeze_model(self._net(pl_module))

    def finetune_function(self, pl_module, current_epoch: int, optimizer) -> None:
        name = self.schedule.get(int(current_epoch))
        if name is None:
            return
        _, module = resolve_module(self._net(pl_module), name)
        lr = optimizer.param_groups[0]["lr"] * self.lr_factor
        self.unfreeze_and_add_param_group(module, optimizer, lr=lr, train_bn=True)
        _set_frozen([m for _, m in param_layers(module)], False)
        module.train()
