"""Recipes: named experiment configs kept as data.

Each recipe is a YAML file in ``ferkit/recipes/`` (shipped with the package);
``ferkit recipes`` lists them and every run saves its fully resolved
:class:`Recipe` as ``config.yaml`` next to its checkpoints. There is no
inheritance between recipes: every value in use is visible in the file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from ferkit.errors import FerkitError
from ferkit.training.recipe_checks import validate as _validate


@dataclass
class Recipe:
    """A named experiment as data: model, data, optimisation and regularisation settings.

    Shipped recipes are ``ferkit/recipes/<name>.yaml`` (``ferkit recipes NAME`` prints one);
    every run saves its resolved Recipe in ``config.yaml``. Fields are documented inline;
    units: ``lr`` per step, ``epochs`` full passes, ``val_fraction`` a share of train in (0, 1).
    Whether the model classifies or reconstructs comes from the model's registry entry.

    Raises:
        FerkitError: a value out of range (one line naming the recipe and the field).
    """

    name: str
    model: str
    description: str = ""
    paper: str = ""
    model_kwargs: dict = field(default_factory=dict)
    dataset: str | None = None  # source name; None = auto-detect from --data
    source_options: dict = field(default_factory=dict)
    labels: list[str] | None = None  # None = FER7
    in_chans: int | None = None  # override the model's declared channels
    input_size: int | None = None  # override the model's declared size
    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.9
    weight_decay: float = 0.0
    # false: no weight decay on BatchNorm/LayerNorm scales and biases (the 1-D parameters),
    # only on conv and linear weights (Goyal et al. 2017; airbench, timm)
    decay_norm_and_bias: bool = True
    scheduler: str = "plateau"  # plateau | cosine (per step, after warmup_epochs) | none
    warmup_epochs: float = 0.0  # cosine: linear warm-up over this many epochs
    min_lr: float = 0.0  # cosine: the learning rate the decay ends at
    plateau_factor: float = 0.5
    plateau_patience: int = 5
    early_stopping_patience: int | None = 10  # None = no early stopping
    augment: str = "none"  # preset name in ferkit.data.transforms.PRESETS
    distortion_augment: str | None = None  # e.g. "random-gray:3" or "mix" (noise-robust training)
    class_weights: bool = False
    label_smoothing: float = 0.0
    mixup: float = 0.0  # MixUp alpha; 0 = off
    ema_decay: float | None = None  # e.g. 0.999: validate/save an exponential moving average of weights
    teacher: str | list[str] | None = None  # distil from these trained models (paths or "default")
    distill_alpha: float = 0.5  # weight of the distillation term (1 - alpha on the labels)
    distill_temperature: float = 2.0
    val_fraction: float = 0.1
    group_val: bool = False  # carve val by subject/actor when the source has groups
    seed: int = 0  # initialisation, shuffling, augmentation
    # the validation carve's seed, apart from ``seed``: runs that differ only in ``seed``
    # (ensemble members) validate on the same faces, so an ensemble's weights and
    # temperature are fitted on faces none of its members trained on
    split_seed: int = 0
    num_workers: int = 0
    data_on_device: bool | str = "auto"  # keep decoded faces on the training device (auto: if they fit)
    val_every: int = 1  # validate every N epochs (and after the last)
    ckpt_every: int = 1  # write last.ckpt every N epochs (and after the last)
    max_time: float | None = None  # minutes: shorten the run (and its cosine) to end within this
    precision: str = "auto"  # auto = bf16-mixed on CUDA and on CPUs with AMX/AVX512-BF16, else 32-true
    channels_last: bool = True  # NHWC memory format: faster convolutions on CPU (oneDNN) and GPU
    init_checkpoint: str | None = None  # initialise the backbone from this checkpoint
    freeze: dict = field(default_factory=dict)  # freezing policy, see ferkit.training.freezing
    extra: dict = field(default_factory=dict)  # must stay empty: kept so old config.yaml files load

    def __post_init__(self):
        _validate(self)

    def to_dict(self) -> dict:
        """Every field as plain YAML-ready values (``betas`` as a list)."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Recipe:
        """A Recipe from a YAML mapping (a shipped recipe or a run's ``config.yaml``).

        Raises:
            FerkitError: unknown fields, a ``task`` that contradicts the model, or an invalid value.
        """
        if not isinstance(d, dict):
            raise FerkitError(f"a recipe must be a YAML mapping of field: value, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known - {"task"}
        if unknown:
            raise FerkitError(f"recipe {d.get('name', '?')}: unknown field(s) {sorted(unknown)}")
        missing = [f for f in ("name", "model") if f not in d]
        if missing:
            raise FerkitError(f"recipe {d.get('name', '?')}: missing field(s) {missing}")
        d = dict(d)
        if "task" in d:
            # Recipes before 0.x carried ``task``; the model's registry entry decides it now
            # (one answer), so an old config.yaml still loads and a contradiction is caught.
            _check_legacy_task(d)
        return cls(**d)

    def override(self, **kv) -> Recipe:
        """A copy with fields replaced, applied in the order given (later wins).

        ``None`` is a value like any other (``ema_decay=None`` turns EMA off); callers
        pass only what the user set. A dotted key (``model_kwargs.width=64``) replaces
        one entry of a dict field and keeps the others; a plain key replaces the whole
        value. Raises :class:`FerkitError` naming the field for an unknown field or a
        value of the wrong type or range.
        """
        d = self.to_dict()
        for k, v in kv.items():
            field_name, _, sub = k.partition(".")
            if field_name not in d:
                raise FerkitError(f"unknown recipe field {field_name!r}; fields: {', '.join(sorted(d))}")
            if not sub:
                d[k] = v
                continue
            if not isinstance(d[field_name], dict):
                raise FerkitError(f"{k}: {field_name} is not a mapping, so it has no entry {sub!r}")
            d[field_name] = _set_dotted(dict(d[field_name]), sub.split("."), v)
        return Recipe.from_dict(d)


def _check_legacy_task(d: dict) -> None:
    from ferkit.models.registry import model_task

    task = d.pop("task")
    if "model" in d and task != model_task(d["model"]):
        raise FerkitError(
            f"recipe {d.get('name', '?')}: task {task!r} contradicts model {d['model']!r}, which is a "
            f"{model_task(d['model'])!r} model (drop 'task': the model decides it)"
        )


def _set_dotted(d: dict, path: list[str], value) -> dict:
    head, rest = path[0], path[1:]
    if rest:
        inner = d.get(head)
        d[head] = _set_dotted(dict(inner) if isinstance(inner, dict) else {}, rest, value)
    else:
        d[head] = value
    return d


def _recipe_files() -> dict[str, object]:
    files = {}
    for f in resources.files("ferkit.recipes").iterdir():
        if f.name.endswith(".yaml"):
            files[f.name[:-5]] = f
    return files


def list_recipes() -> list[Recipe]:
    """Every shipped recipe, sorted by name."""
    return [load_recipe(n) for n in sorted(_recipe_files())]


def saved_recipe(d):
    """A recipe dict saved by a run (config.yaml, a checkpoint's hyper-parameters) as this
    version reads it: one saved before ``split_seed`` existed carved validation with ``seed``,
    so that carve is kept."""
    if isinstance(d, dict) and "split_seed" not in d:
        d = {**d, "split_seed": d.get("seed", 0)}
    return d


def load_recipe(name_or_path: str) -> Recipe:
    """A shipped recipe by name, or a YAML file path (e.g. a run's config.yaml)."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        text = p.read_text()
    else:
        files = _recipe_files()
        if name_or_path not in files:
            raise FerkitError(f"unknown recipe {name_or_path!r}; available: {', '.join(sorted(files))}")
        text = files[name_or_path].read_text()
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as e:
        raise FerkitError(f"recipe {name_or_path}: not valid YAML ({yaml_error_line(e)})") from None
    return Recipe.from_dict(data)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last one
    in silence, so ``epochs: 10`` ... ``epochs: 60`` trained 60 epochs)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                a, b = seen[key] + 1, key_node.start_mark.line + 1
                where = f"line {a}" if a == b else f"lines {a} and {b}"
                raise yaml.constructor.ConstructorError(None, None, f"{key!r} given twice ({where})", None)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def yaml_error_line(e: yaml.YAMLError) -> str:
    """A YAML error on one line: what went wrong and where (PyYAML's own text spans several)."""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    mark = getattr(e, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def parse_set(pairs: list[str] | None) -> dict:
    """``["lr=0.01", "model_kwargs={width: 64}"]`` -> dict, values parsed as YAML.

    Keys keep the order they were given in, and a repeated key moves to its last
    place, so :meth:`Recipe.override` applies them left to right (the later wins).
    """
    out = {}
    for p in pairs or []:
        k, eq, v = p.partition("=")
        if not eq or not k.strip():
            raise FerkitError(f"--set expects key=value, got {p!r}")
        try:
            value = yaml.load(v, Loader=_StrictLoader)
        except yaml.YAMLError as e:
            raise FerkitError(f"--set {p}: the value is not valid YAML ({yaml_error_line(e)})") from None
        out.pop(k.strip(), None)
        out[k.strip()] = value
    return out
