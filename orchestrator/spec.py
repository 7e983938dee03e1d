"""Sweep files: load a YAML file, validate it, and flatten it into trial configs.

The format is the public contract in DESIGN.md ("The sweep file"). A file becomes a frozen
`SweepSpec`, or a `SpecError` that lists every problem in it at once, one line each:

    sweeps/bad.yaml: grid.depth: 21 is not a depth of cifar nets with basic blocks (allowed: ...)

Extensions beyond DESIGN.md (all optional):
- `grid.exclude`: a list of partial grid points (`{depth: 110, shortcut: none}`) left out of the
  product, for sets such as Fig. 7's (plain-20/56, ResNet-20/56/110) that are not a full product.
- `train.warmup.depths`: the depths the warm-up applies to (the paper warms up ResNet-110 only);
  default every depth.
- `synthetic`: the generated dataset's size and shape (only with `dataset: synthetic`).
- `model_options`: `stride_in` (where a bottleneck block downsamples) and `zero_init_residual`.

Model depths are checked here without importing torch (the driver never imports it): CIFAR nets
have 6n+2 layers with basic blocks and 9n+2 with bottlenecks; ImageNet nets are 18/34 (basic) and
50/101/152 (bottleneck).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import os
import re
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from orchestrator.errors import UserError

Dataset = Literal["cifar10", "cifar100", "digits", "synthetic"]
ModelFamily = Literal["cifar", "imagenet"]
Block = Literal["basic", "bottleneck"]
Shortcut = Literal["none", "A", "B", "C"]
Metric = Literal["train_loss", "train_err", "test_loss", "test_err", "val_loss", "val_err"]

AXES = ("depth", "block", "shortcut", "seed")

# Image side in pixels per dataset (synthetic: from the file's `synthetic.image_size`).
IMAGE_SIZE = {"cifar10": 32, "cifar100": 32, "digits": 8}
# The ImageNet stem (7x7/2 conv, 3x3/2 max-pool) and four stages divide the side by 32.
IMAGENET_MIN_SIZE = 32
IMAGENET_DEPTHS = {"basic": (18, 34), "bottleneck": (50, 101, 152)}
# Layers per residual unit of a CIFAR net: depth = 3 stages * n units * layers + stem + fc.
CIFAR_LAYERS_PER_UNIT = {"basic": 2, "bottleneck": 3}


def depth_allowed(model: str, block: str, depth: int) -> bool:
    """Whether a `model` net built from `block` blocks can have `depth` weighted layers."""
    if model == "imagenet":
        return depth in IMAGENET_DEPTHS[block]
    per_stage = 3 * CIFAR_LAYERS_PER_UNIT[block]
    return depth > 2 and (depth - 2) % per_stage == 0


def allowed_depths(model: str, block: str) -> str:
    if model == "imagenet":
        return ", ".join(map(str, IMAGENET_DEPTHS[block]))
    k = 3 * CIFAR_LAYERS_PER_UNIT[block]
    return f"{k}n+2 = " + ", ".join(str(k * n + 2) for n in range(1, 9)) + ", ..."


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class Exclusion(_Frozen):
    """A partial grid point: every point that matches all the keys given is left out."""

    depth: int | None = None
    block: Block | None = None
    shortcut: Shortcut | None = None
    seed: int | None = None

    def matches(self, point: dict[str, Any]) -> bool:
        given = self.model_dump(exclude_none=True)
        return bool(given) and all(point[k] == v for k, v in given.items())


class Grid(_Frozen):
    depth: list[int] = Field(min_length=1)
    block: list[Block] = Field(default=["basic"], min_length=1)
    shortcut: list[Shortcut] = Field(default=["A"], min_length=1)
    seed: list[int] = Field(default=[0], min_length=1)
    exclude: list[Exclusion] = []


class Warmup(_Frozen):
    lr: float = Field(gt=0)  # lr while warming up
    until_train_err: float = Field(gt=0, le=1)  # back to train.lr once train_err falls below this
    depths: list[int] | None = None  # only these depths warm up (default: all)


class Train(_Frozen):
    epochs: int = Field(ge=1)
    batch_size: int = Field(default=128, ge=1)
    lr: float = Field(default=0.1, gt=0)  # for batch_size 128, as in the paper
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=1.0e-4, ge=0)
    lr_milestones: list[int] = []  # epochs at which lr is divided by 10
    warmup: Warmup | None = None
    augment: bool = True
    val_size: int = Field(default=0, ge=0)  # training images held out for validation
    max_train_samples: int | None = Field(default=None, ge=1)


class Probes(_Frozen):
    every: int = Field(default=10, ge=1)  # epochs between layer-response records (and the last)


class Resources(_Frozen):
    cpu: float = Field(default=1, gt=0)
    gpu: float = Field(default=0, ge=0)  # below 1: a share of one GPU


class Distribution(_Frozen):
    """One searched hyperparameter; exactly one of the keys is given."""

    uniform: list[float] | None = Field(default=None, min_length=2, max_length=2)
    log_uniform: list[float] | None = Field(default=None, min_length=2, max_length=2)
    int_uniform: list[int] | None = Field(default=None, min_length=2, max_length=2)
    choice: list[float] | None = Field(default=None, min_length=1)

    @property
    def kind(self) -> str:
        return next(k for k, v in self.model_dump().items() if v is not None)

    @property
    def values(self) -> list:
        return getattr(self, self.kind)


class Space(_Frozen):
    lr: Distribution | None = None
    momentum: Distribution | None = None
    weight_decay: Distribution | None = None
    batch_size: Distribution | None = None

    def items(self) -> list[tuple[str, Distribution]]:
        return [(k, getattr(self, k)) for k in type(self).model_fields if getattr(self, k)]


class Search(_Frozen):
    algorithm: Literal["grid", "optuna"] = "grid"
    num_samples: int = Field(default=1, ge=1)  # grid: repeats of the grid; optuna: trials in all
    metric: Metric | None = None  # default val_err with a validation split, else test_err
    mode: Literal["min", "max"] = "min"
    space: Space = Space()


class Scheduler(_Frozen):
    type: Literal["asha"]
    grace_period: int = Field(default=1, ge=1)  # epochs every trial gets before it can be stopped
    reduction_factor: float = Field(default=4, gt=1)


class FaultTolerance(_Frozen):
    max_failures: int = Field(default=2, ge=-1)  # retries per trial; -1: without end
    checkpoint_every: int = Field(default=1, ge=1)  # epochs between checkpoints


class Synthetic(_Frozen):
    num_train: int = Field(default=512, ge=1)
    num_test: int = Field(default=256, ge=1)
    image_size: int = Field(default=32, ge=4)
    channels: int = Field(default=3, ge=1)
    num_classes: int = Field(default=10, ge=2)


class ModelOptions(_Frozen):
    stride_in: Literal["first_1x1", "3x3"] = "first_1x1"
    zero_init_residual: bool = False


class SweepSpec(_Frozen):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)
    dataset: Dataset
    data_dir: str | None = None
    model: ModelFamily
    grid: Grid
    train: Train
    probes: Probes = Probes()
    resources: Resources = Resources()
    search: Search = Search()
    scheduler: Scheduler | None = None
    fault_tolerance: FaultTolerance = FaultTolerance()
    synthetic: Synthetic | None = None
    model_options: ModelOptions = ModelOptions()

    @property
    def metric(self) -> str:
        """The metric the searcher, the scheduler and "best so far" go by."""
        if self.search.metric:
            return self.search.metric
        return "val_err" if self.train.val_size > 0 else "test_err"

    @property
    def mode(self) -> str:
        return self.search.mode

    def points(self) -> list[dict[str, Any]]:
        """The grid's points in product order (depth outermost), exclusions left out."""
        return grid_points(self.grid.model_dump())

    @property
    def num_trials(self) -> int:
        if self.search.algorithm == "optuna":
            return self.search.num_samples
        return len(self.points()) * self.search.num_samples

    def base_config(self) -> dict[str, Any]:
        """The flat trial config (internal contract) without the grid axes."""
        t = self.train
        warm = t.warmup is not None and t.warmup.depths is None
        config = {
            "dataset": self.dataset,
            "data_dir": str(Path(self.data_dir).expanduser().resolve()) if self.data_dir else None,
            "model": self.model,
            "epochs": t.epochs,
            "batch_size": t.batch_size,
            "lr": t.lr,
            "momentum": t.momentum,
            "weight_decay": t.weight_decay,
            "lr_milestones": list(t.lr_milestones),
            "warmup_lr": t.warmup.lr if warm else None,
            "warmup_until_train_err": t.warmup.until_train_err if warm else None,
            "augment": t.augment,
            "val_size": t.val_size,
            "max_train_samples": t.max_train_samples,
            "probes_every": self.probes.every,
            "checkpoint_every": self.fault_tolerance.checkpoint_every,
            "stride_in": self.model_options.stride_in,
            "zero_init_residual": self.model_options.zero_init_residual,
        }
        if self.dataset == "synthetic":
            config["synthetic"] = (self.synthetic or Synthetic()).model_dump()
        return config

    def depth_overrides(self, depth: int) -> dict[str, Any]:
        """Config values that depend on the depth (the warm-up when it is limited to some)."""
        w = self.train.warmup
        if w is None or w.depths is None:
            return {}
        on = depth in w.depths
        return {"warmup_lr": w.lr if on else None, "warmup_until_train_err": w.until_train_err if on else None}

    def trial_config(self, point: dict[str, Any]) -> dict[str, Any]:
        """The full flat config of one grid point."""
        return {**self.base_config(), **point, **self.depth_overrides(point["depth"])}


def grid_points(grid: dict[str, Any]) -> list[dict[str, Any]]:
    excludes = [Exclusion.model_validate(e) if isinstance(e, dict) else e for e in grid.get("exclude", [])]
    points = [dict(zip(AXES, values)) for values in itertools.product(*(grid[a] for a in AXES))]
    return [p for p in points if not any(e.matches(p) for e in excludes)]


def spec_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class SpecError(UserError):
    """A sweep file with problems; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def problem(source: str, key: str, what: str) -> str:
    """One problem line: `FILE: key.path: what is wrong (allowed: ...)`."""
    return f"{source}: {key}: {what}" if key else f"{source}: {what}"


def load_spec(path: str | os.PathLike) -> tuple[SweepSpec, str]:
    """Read and validate a sweep file; returns the spec and the file's text."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise SpecError([problem(str(path), "", "no such file (give the path of a sweep YAML file)")]) from None
    except OSError as exc:
        raise SpecError([problem(str(path), "", f"cannot read it ({exc.strerror})")]) from None
    return parse_spec(text, str(path)), text


def parse_spec(text: str, source: str = "<sweep>") -> SweepSpec:
    """Validate a sweep file's text; raises SpecError listing every problem."""
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}" if mark else ""
        raise SpecError([problem(source, where, f"not valid YAML: {exc.problem or exc}")]) from None
    except yaml.YAMLError as exc:
        raise SpecError([problem(source, "", f"not valid YAML: {exc}")]) from None
    if not isinstance(raw, dict):
        keys = ", ".join(SweepSpec.model_fields)
        raise SpecError([problem(source, "", f"must be a mapping of keys (allowed: {keys})")])

    problems: list[str] = []
    spec = None
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as exc:
        problems += [problem(source, _key(e["loc"]), _what(e)) for e in exc.errors()]
    problems += [problem(source, key, what) for key, what in _consistency(raw)]
    if problems:
        raise SpecError(list(dict.fromkeys(problems)))
    assert spec is not None
    return spec


# --- consistency: rules that span keys, checked on whatever parts of the file are well formed ---


def _consistency(raw: dict) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    model = _get(raw, "model", ModelFamily)
    dataset = _get(raw, "dataset", Dataset)
    epochs = _get(raw, "train.epochs", int)

    grid = {a: _items(raw, f"grid.{a}", Grid.model_fields[a].annotation, Grid.model_fields[a].default)
            for a in AXES}
    raw_excludes = _get(raw, "grid.exclude", list) or []
    excludes = [(i, ex) for i, ex in enumerate(raw_excludes) if _get(raw_excludes, str(i), Exclusion)]
    full = grid_points({**grid, "exclude": []}) if all(grid.values()) else []
    for i, ex in excludes:
        ex = Exclusion.model_validate(ex)
        if not ex.model_dump(exclude_none=True):
            out.append((f"grid.exclude[{i}]", "empty (allowed: some of depth, block, shortcut, seed)"))
        elif full and not any(ex.matches(p) for p in full):
            out.append((f"grid.exclude[{i}]", f"{ex.model_dump(exclude_none=True)} matches no grid point"))
    points = grid_points({**grid, "exclude": [ex for _, ex in excludes]}) if full else []
    if full and not points:
        out.append(("grid.exclude", "leaves no grid point to run"))
    if model:
        # Only the pairs that will run: an excluded (depth, block) pair may be impossible.
        pairs = [(p["depth"], p["block"]) for p in points] or itertools.product(grid["depth"], grid["block"])
        for depth, block in dict.fromkeys(pairs):
            if not depth_allowed(model, block, depth):
                out.append(("grid.depth", f"{depth} is not a depth of {model} nets with {block} blocks "
                                          f"(allowed: {allowed_depths(model, block)})"))

    if dataset and model == "imagenet":
        size = IMAGE_SIZE.get(dataset) or _get(raw, "synthetic.image_size", int) or Synthetic().image_size
        if size < IMAGENET_MIN_SIZE:
            out.append(("model", f"imagenet's stem and stages shrink images 32-fold; {dataset}'s {size}x{size} "
                                 f"images are too small (allowed: model: cifar, or images of at least "
                                 f"{IMAGENET_MIN_SIZE} px)"))
    if "synthetic" in raw and dataset and dataset != "synthetic":
        out.append(("synthetic", f"only used with dataset: synthetic (this file has dataset: {dataset})"))

    milestones = _get(raw, "train.lr_milestones", list[int])
    if milestones and epochs and any(m < 1 or m > epochs for m in milestones):
        out.append(("train.lr_milestones", f"{milestones} (allowed: epochs from 1 to train.epochs = {epochs})"))
    elif milestones and milestones != sorted(set(milestones)):
        out.append(("train.lr_milestones", f"{milestones} (allowed: strictly increasing epochs)"))
    warm_depths = _get(raw, "train.warmup.depths", list[int])
    if warm_depths and grid["depth"] and not set(warm_depths) <= set(grid["depth"]):
        missing = sorted(set(warm_depths) - set(grid["depth"]))
        out.append(("train.warmup.depths", f"{missing} not in grid.depth (allowed: {grid['depth']})"))

    space = _get(raw, "search.space", dict) or {}
    for name, value in space.items():
        dist = _get(space, str(name), Distribution) if name in Space.model_fields else None
        if dist:
            out += _distribution_problems(f"search.space.{name}", name, dist)
    metric = _get(raw, "search.metric", Metric)
    if metric and metric.startswith("val_") and _get(raw, "train.val_size", int) in (0, None):
        out.append(("search.metric", f"{metric} needs a validation split (set train.val_size > 0, "
                                     "or allowed: test_err, test_loss, train_err, train_loss)"))
    if _get(raw, "search.algorithm", str) == "optuna" and raw_excludes:
        out.append(("grid.exclude", "not supported with search.algorithm: optuna (allowed: algorithm grid)"))
    grace = _get(raw, "scheduler.grace_period", int)
    if grace and epochs and grace > epochs:
        out.append(("scheduler.grace_period", f"{grace} is more than train.epochs (allowed: 1 to {epochs})"))
    gpu = _get(raw, "resources.gpu", float)
    if gpu and gpu > 1 and gpu != int(gpu):
        out.append(("resources.gpu", f"{gpu} (allowed: a share below 1, or whole GPUs)"))
    return out


def _distribution_problems(key: str, name: str, d: Distribution) -> list[tuple[str, str]]:
    given = [k for k, v in d.model_dump().items() if v is not None]
    kinds = ", ".join(Distribution.model_fields)
    if len(given) != 1:
        return [(key, f"give exactly one distribution (allowed: {kinds})")]
    kind, values = given[0], d.values
    if name == "batch_size" and kind not in ("int_uniform", "choice"):
        return [(f"{key}.{kind}", "batch_size is a whole number (allowed: int_uniform, choice)")]
    if kind == "choice":
        if name == "batch_size" and any(v != int(v) or v < 1 for v in values):
            return [(f"{key}.choice", f"{values} (allowed: positive whole numbers)")]
        return []
    lo, hi = values
    if lo >= hi:
        return [(f"{key}.{kind}", f"bounds [{lo}, {hi}] are reversed or equal (allowed: [low, high], low < high)")]
    if kind == "log_uniform" and lo <= 0:
        return [(f"{key}.{kind}", f"lower bound {lo} (allowed: > 0 on a log scale)")]
    return []


_STRICT = ConfigDict(strict=True)


def _get(raw: Any, path: str, tp: Any) -> Any:
    """The value at a dotted `path` if it is there and of type `tp`, else None."""
    value = raw
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    try:
        return _adapter(tp).validate_python(value)
    except ValidationError:
        return None


def _items(raw: Any, path: str, list_tp: Any, default: Any) -> list:
    """The well-formed items of the list at `path` (its default when the key is absent)."""
    head, _, last = path.rpartition(".")
    parent = _get(raw, head, dict) if head else raw
    if parent is None or last not in parent:
        return list(default) if isinstance(default, list) else []
    (item_tp,) = get_args(list_tp)
    values = parent[last] if isinstance(parent[last], list) else []
    return [v for i, v in enumerate(values) if _get(values, str(i), item_tp) is not None]


@functools.cache
def _adapter(tp: Any) -> TypeAdapter:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return TypeAdapter(tp)
    return TypeAdapter(tp, config=_STRICT)


# --- one line per pydantic error ---


def _key(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The model class whose fields live at `loc` (list indices skipped)."""
    current: Any = SweepSpec
    for part in loc:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part) if isinstance(current, type) else None
        if field is None:
            return None
        current = _inner_model(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _inner_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


_TYPE_WORDS = {
    "int": "a whole number", "float": "a number", "bool": "true or false", "string": "a string",
    "list": "a list", "dict": "a mapping", "model": "a mapping",
}


def _what(e: dict) -> str:
    kind, loc, ctx, value = e["type"], e["loc"], e.get("ctx", {}), e.get("input")
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        allowed = ", ".join(model.model_fields) if model else "?"
        return f"unknown key (allowed: {allowed})"
    if kind == "missing":
        return "missing (this key is required)"
    if kind == "literal_error":
        allowed = ", ".join(re.findall(r"'([^']*)'", ctx.get("expected", "")))
        return f"{value!r} is not allowed (allowed: {allowed})"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        base = kind.split("_")[0]
        if kind in ("model_type", "model_attributes_type", "dict_type") and isinstance(_model_at(loc), type):
            keys = ", ".join(_model_at(loc).model_fields)
            return f"expected a mapping, got {value!r} (allowed keys: {keys})"
        return f"expected {_TYPE_WORDS.get(base, base)}, got {value!r}"
    if kind in ("greater_than_equal", "greater_than", "less_than", "less_than_equal"):
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than": "<", "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()))
        return f"{value!r} is out of range (allowed: {op} {bound})"
    if kind == "too_short":
        if ctx.get("min_length") == 1:
            return "empty (allowed: a list of at least one value)"
        return f"has {ctx.get('actual_length')} values (allowed: exactly {ctx.get('min_length')})"
    if kind == "too_long":
        return f"has {ctx.get('actual_length')} values (allowed: at most {ctx.get('max_length')})"
    if kind == "string_pattern_mismatch":
        return f"{value!r} is not a usable name (allowed: letters, digits, '.', '_', '-'; not starting with . _ -)"
    if kind == "string_too_long":
        return f"too long (allowed: at most {ctx.get('max_length')} characters)"
    return e["msg"]


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)
