"""Sweep files: load a YAML file, validate it, and flatten it into trial configs.

The format is the public contract in DESIGN.md ("The sweep file"). A file becomes a frozen
`SweepSpec`, or a `SpecError` that lists every problem in it at once, one line each:

    sweeps/bad.yaml: grid.depth: 21 is not a depth of cifar nets with basic blocks (allowed: ...)

The keys of `train:`, `probes:`, `fault_tolerance:` and `model_options:` are the fields of the one
trial config, resweep.config.TrialConfig, with their types, bounds and defaults (FILE_KEYS says
where a field is written when not as `train.<field>`); a point's flat config is its `as_dict()`.

Extensions beyond DESIGN.md (all optional):
- `grid.exclude`: a list of partial grid points (`{depth: 110, shortcut: none}`) left out of the
  product, for sets such as Fig. 7's (plain-20/56, ResNet-20/56/110) that are not a full product.
- `train.warmup.iterations`: a fixed warm-up of that many iterations at `train.warmup.lr` (ECCV
  2016's, every CIFAR net), instead of `until_train_err` (CVPR 2016's, decided by the training error);
- `train.warmup.depths`: the depths the warm-up applies to (the paper warms up ResNet-110 only);
  default every depth.
- `synthetic`: the generated dataset's size and shape (only with `dataset: synthetic`).
- `model_options`: `stride_in` (where a bottleneck block downsamples) and `zero_init_residual`.

`loggers` (DESIGN.md) names trackers to mirror results into through Ray Tune's own callbacks
(orchestrator/run/trackers.py); a logger whose package is not installed is a problem of the file.

The rules of one trial's config (a depth its family has, Nesterov with momentum, milestones within
the epochs, ...) are TrialConfig's own validators; this module gives them the file's well-formed
values for each (depth, block) that will run and reports their problems at the file's keys. Only
rules that span a sweep (exclusions, warm-up depths, the search, the scheduler) are written here.
The driver never imports torch: the depth rules live in resweep/paper.py, for trainers/models.py too.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import itertools
import os
import re
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, ValidationError, create_model

from db.models import METRIC_NAMES
from resweep.errors import UserError
from resweep.errors import shown as _shown
from resweep.config import WARMUP_MAX_ITERATIONS, Block, Dataset, ModelFamily, Shortcut, Synthetic, TrialConfig
from resweep.paper import GRID_AXES as AXES  # the grid's axes, in product order
from resweep.paper import depth_allowed  # noqa: F401  (tests and callers check a depth through here)

Metric = Literal[tuple(n for n in METRIC_NAMES if n.endswith(("_loss", "_err")))]  # what a search goes by

DEFAULT_MAX_TRIALS = 100_000  # trials in one sweep; launch --max-trials raises it

Logger = Literal["tensorboard", "mlflow", "wandb"]
# The package each of Ray Tune's logger callbacks needs, and the pyproject extra that brings it.
LOGGER_PACKAGES = {"tensorboard": "tensorboardX", "mlflow": "mlflow", "wandb": "wandb"}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class MlflowOptions(_Frozen):
    log_model: bool = False  # each trial's final model file as its run's artifact model/model.pt


class MlflowLogger(_Frozen):
    mlflow: MlflowOptions


# A `loggers:` entry: a name, or a name with options (`{mlflow: {log_model: true}}`). The tags
# are left out of problems' keys (_key), so a bad entry reads `loggers[1]: ...`.
LoggerEntry = Annotated[
    Union[Annotated[Logger, Tag("<name>")], Annotated[MlflowLogger, Tag("<options>")]],
    Discriminator(lambda v: "<options>" if isinstance(v, (dict, MlflowLogger)) else "<name>"),
]


class Exclusion(_Frozen):
    """A partial grid point: every point that matches all the keys given is left out."""

    depth: int | None = None
    block: Block | None = None
    shortcut: Shortcut | None = None
    seed: int | None = None

    def matches(self, point: dict[str, Any]) -> bool:
        given = self.model_dump(exclude_none=True)
        return bool(given) and all(point[k] == v for k, v in given.items())


# --- the trial config's keys in a sweep file ---------------------------------------------------------
# Each field of resweep.config.TrialConfig is written `train.<field>` in a sweep file unless it is
# listed here. The sections below take their keys' types, bounds and defaults from TrialConfig.
FILE_KEYS = {
    "dataset": "dataset", "data_dir": "data_dir", "model": "model",
    "depth": "grid.depth", "block": "grid.block", "shortcut": "grid.shortcut", "seed": "grid.seed",
    "warmup_lr": "train.warmup.lr", "warmup_until_train_err": "train.warmup.until_train_err",
    "warmup_max_iterations": "train.warmup.max_iterations", "warmup_iterations": "train.warmup.iterations",
    "probes_every": "probes.every", "checkpoint_every": "fault_tolerance.checkpoint_every",
    "stride_in": "model_options.stride_in", "zero_init_residual": "model_options.zero_init_residual",
    "synthetic": "synthetic",
}  # fmt: skip
REQUIRED = ...  # a key a sweep file must give (no default, and not null)
_FIELDS = TrialConfig.model_fields
_DEFAULTS = TrialConfig()
# A grid axis's values take their bounds from the trial config's field.
Depth = Annotated[int, *_FIELDS["depth"].metadata]
Seed = Annotated[int, *_FIELDS["seed"].metadata]


def file_key(field: str) -> str:
    """Where a sweep file writes the TrialConfig field `field` (dotted)."""
    return FILE_KEYS.get(field, f"train.{field}")


def _file_type(annotation: Any, required: bool) -> Any:
    """A TrialConfig field's type as a sweep file writes it: sequences as YAML lists, and without
    None when the key is required."""
    if get_origin(annotation) is tuple:
        return list[get_args(annotation)[0]]
    if required and get_origin(annotation) in (Union, types.UnionType):
        (annotation,) = [a for a in get_args(annotation) if a is not type(None)]
    return annotation


def _section(name: str, section: str, *, first: dict[str, Any] = {}, last: dict[str, Any] = {},
             subsections: dict[str, Any] = {}, **defaults: Any) -> type[BaseModel]:
    """The model of a sweep file's `section`: its TrialConfig keys in TrialConfig's order (each
    subsection at the place of its first field), between the section's own `first` and `last` keys
    (create_model definitions). `defaults` gives a key another default than TrialConfig's
    (REQUIRED: none)."""
    keys: dict[str, Any] = dict(first)
    for field, info in _FIELDS.items():
        parent, _, key = file_key(field).rpartition(".")
        if parent == section:
            default = defaults.get(key, info.default)
            tp = _file_type(info.annotation, default is REQUIRED)
            keys[key] = (Annotated[tp, *info.metadata] if info.metadata else tp, default)
        elif parent.rpartition(".")[0] == section:
            keys.setdefault(parent.rpartition(".")[2], subsections[parent.rpartition(".")[2]])
    return create_model(name, __base__=_Frozen, **keys, **last)


# `until_train_err` (CVPR's warm-up, capped at `max_iterations`) or `iterations` (ECCV's fixed one):
# TrialConfig asks for exactly one.
Warmup = _section(
    "Warmup", "train.warmup", lr=REQUIRED, max_iterations=WARMUP_MAX_ITERATIONS,
    last={"depths": (list[int] | None, None)},  # only these depths warm up (default: all)
)
Train = _section("Train", "train", subsections={"warmup": (Warmup | None, None)}, epochs=REQUIRED)
Probes = _section("Probes", "probes")
FaultTolerance = _section(
    "FaultTolerance", "fault_tolerance",
    first={"max_failures": (int, Field(default=2, ge=-1))},  # retries per trial; -1: without end
)
ModelOptions = _section("ModelOptions", "model_options")


class Grid(_Frozen):
    depth: list[Depth] = Field(min_length=1)
    block: list[Block] = Field(default=[_DEFAULTS.block], min_length=1)
    shortcut: list[Shortcut] = Field(default=[_DEFAULTS.shortcut], min_length=1)
    seed: list[Seed] = Field(default=[_DEFAULTS.seed], min_length=1)
    exclude: list[Exclusion] = []


class Resources(_Frozen):
    """What one trial asks Ray for. A trial runs on one node: more than any node has would wait forever."""

    cpu: float = Field(default=1, gt=0, le=1024, allow_inf_nan=False)
    gpu: float = Field(default=0, ge=0, le=64, allow_inf_nan=False)  # below 1: a share of one GPU


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
    reduction_factor: float = Field(default=4, gt=1, allow_inf_nan=False)


_NAME = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)]


class SweepSpec(_Frozen):
    name: _NAME
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
    loggers: list[LoggerEntry] = []  # mirrors of the results in trackers, through Ray Tune's callbacks

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
        """The flat trial config (resweep.config.TrialConfig's dict) without the grid axes, and without
        the warm-up where it depends on the depth (`depth_overrides`)."""
        values = {f: self._file_value(f) for f in _FIELDS if f not in AXES}
        values["data_dir"] = str(Path(self.data_dir).expanduser().resolve()) if self.data_dir else None
        values["synthetic"] = (self.synthetic or Synthetic()) if self.dataset == "synthetic" else None
        if self.train.warmup is not None and self.train.warmup.depths is not None:
            values.update(dict.fromkeys(_WARMUP_FIELDS))
        first = next(iter_points(self.grid.model_dump()))  # a point that runs: its (depth, block) is valid
        return {k: v for k, v in TrialConfig(**values, **first).as_dict().items() if k not in AXES}

    def depth_overrides(self, depth: int) -> dict[str, Any]:
        """Config values that depend on the depth (the warm-up when it is limited to some)."""
        w = self.train.warmup
        if w is None or w.depths is None:
            return {}
        on = depth in w.depths
        return {f: self._file_value(f) if on else None for f in _WARMUP_FIELDS}

    def trial_config(self, point: dict[str, Any]) -> dict[str, Any]:
        """The full flat config of one grid point."""
        return {**self.base_config(), **point, **self.depth_overrides(point["depth"])}

    def _file_value(self, field: str) -> Any:
        """The value this file gives the TrialConfig field `field` (None under an absent section)."""
        value: Any = self
        for part in file_key(field).split("."):
            value = getattr(value, part, None)
        return value


_WARMUP_FIELDS = [f for f in _FIELDS if file_key(f).startswith("train.warmup.")]


def grid_points(grid: dict[str, Any]) -> list[dict[str, Any]]:
    return list(iter_points(grid))


def iter_points(grid: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The grid's points in product order, exclusions left out, one at a time."""
    excludes = [Exclusion.model_validate(e) if isinstance(e, dict) else e for e in grid.get("exclude", [])]
    points = (dict(zip(AXES, values)) for values in itertools.product(*(grid[a] for a in AXES)))
    return (p for p in points if not any(e.matches(p) for e in excludes))


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


def load_spec(path: str | os.PathLike, *, max_trials: int | None = DEFAULT_MAX_TRIALS) -> tuple[SweepSpec, str]:
    """Read and validate a sweep file (at most `max_trials` trials); returns the spec and the
    file's text."""
    p = Path(path)
    try:
        data = p.read_bytes()
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SpecError([problem(str(path), "", f"not UTF-8 text (line {line}: byte {exc.start} is {data[exc.start:exc.start + 1]!r}); "
                                                 "save the sweep file as UTF-8 YAML")]) from None  # fmt: skip
    except IsADirectoryError:
        raise SpecError([problem(str(path), "", "is a directory (give the path of a sweep YAML file)")]) from None
    except FileNotFoundError:
        raise SpecError([problem(str(path), "", "no such file (give the path of a sweep YAML file)")]) from None
    except OSError as exc:
        raise SpecError([problem(str(path), "", f"cannot read it ({exc.strerror})")]) from None
    return parse_spec(text, str(path), max_trials=max_trials), text


def parse_spec(text: str, source: str = "<sweep>", *, max_trials: int | None = DEFAULT_MAX_TRIALS) -> SweepSpec:
    """Validate a sweep file's text; raises SpecError listing every problem.

    A document whose aliases expand to more than MAX_NODES values is refused before anything
    walks it (an alias bomb: a few lines that expand to gigabytes). With `max_trials`, a grid of
    more trials than that is refused (see `trial_count`) before any of its points is made.
    """
    try:
        raw = _load_bounded(text, source)
    except RecursionError:
        raise SpecError([problem(source, "", "nested too deeply to be a sweep file")]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}" if mark else ""
        raise SpecError([problem(source, where, f"not valid YAML: {exc.problem or exc}")]) from None
    except yaml.YAMLError as exc:
        raise SpecError([problem(source, "", f"not valid YAML: {exc}")]) from None
    if not isinstance(raw, dict):
        keys = ", ".join(SweepSpec.model_fields)
        raise SpecError([problem(source, "", f"must be a mapping of keys (allowed: {keys})")])
    if max_trials is not None:
        count = trial_count(raw)
        if count is not None and count > max_trials:
            raise SpecError([problem(source, "grid", f"{count:,} trials is more than the cap of {max_trials:,} "
                                                     "(allowed: a smaller grid or num_samples, or --max-trials N "
                                                     "to raise the cap)")])  # fmt: skip

    problems: list[str] = []
    bad: list[str] = []  # the keys whose values are malformed
    spec = None
    try:
        spec = SweepSpec.model_validate(raw, strict=True)  # strict in sections from resweep.config too
    except ValidationError as exc:
        bad = [_key(e["loc"]) for e in exc.errors()]
        problems += [problem(source, _key(e["loc"]), _what(e)) for e in exc.errors()]
    problems += [problem(source, key, what) for key, what in _consistency(raw, bad)]
    if problems:
        raise SpecError(list(dict.fromkeys(problems)))
    assert spec is not None
    return spec


MAX_NODES = 100_000  # values in a sweep file once its aliases are expanded (real files: < 1,000)


def _load_bounded(text: str, source: str) -> Any:
    """yaml.load with the unique-key loader, refusing documents that expand past MAX_NODES."""
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {})
        if size > MAX_NODES:
            raise SpecError([problem(source, "", f"expands to more than {MAX_NODES:,} values through its aliases "
                                                 "(&anchor / *alias); write the values out, without nesting aliases")])  # fmt: skip
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many values `node` stands for with every alias expanded; counted once per distinct
    node (aliases share nodes), so a bomb is measured without being expanded. Capped at
    MAX_NODES + 1, so a recursive alias counts as too big."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    sizes[key] = MAX_NODES + 1  # in progress: a node that contains itself is too big
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(child, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    else:
        size = 1
    sizes[key] = min(size, MAX_NODES + 1)
    return sizes[key]


def trial_count(raw: dict) -> int | None:
    """How many trials a sweep file's grid makes, worked out from its axes' lengths (no point is
    made); None when the grid is malformed (validation says so)."""
    grid = raw.get("grid")
    search = raw.get("search") if isinstance(raw.get("search"), dict) else {}
    samples = search.get("num_samples", 1)
    if not isinstance(grid, dict) or not isinstance(samples, int):
        return None
    if search.get("algorithm") == "optuna":
        return samples
    count = samples
    for axis in AXES:
        values = grid.get(axis, Grid.model_fields[axis].default)
        if not isinstance(values, list):
            return None
        count *= len(values)
    return count


def rename(text: str, source: str, new_name: str) -> tuple[SweepSpec, str]:
    """The sweep file's spec and text under `new_name` (launch --new-name).

    The name is validated as a name first. The text changes only at the span PyYAML's parser
    gives for the top-level `name` value, which becomes the name as a double-quoted YAML string;
    comments and everything else stay byte for byte, and the result is parsed again.
    """
    try:
        _adapter(_NAME).validate_python(new_name)
    except ValidationError:
        raise UserError(f"--new-name {_shown(new_name)}: not a usable sweep name (allowed: letters, digits, '.', "
                        "'_', '-', not starting with . _ -, at most 100 characters)") from None  # fmt: skip
    loader = _UniqueKeyLoader(text)
    try:
        root = loader.get_single_node()
    finally:
        loader.dispose()
    value = next((v for k, v in getattr(root, "value", ()) if isinstance(k, yaml.ScalarNode) and k.value == "name"), None)
    if value is None:
        raise UserError(f"{source}: name: missing (this key is required)")
    start, end = value.start_mark.index, value.end_mark.index
    new_text = f'{text[:start]}"{new_name}"{text[end:]}'
    spec = parse_spec(new_text, f"{source} (--new-name)", max_trials=None)
    assert spec.name == new_name, (spec.name, new_name)
    return spec, new_text


# --- consistency: rules that span keys, checked on whatever parts of the file are well formed ---


def _consistency(raw: dict, bad: list[str]) -> list[tuple[str, str]]:
    """Problems of rules that span keys, on the well-formed parts of the file (`bad`: the keys
    whose values are not)."""
    out: list[tuple[str, str]] = []
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
            out.append((f"grid.exclude[{i}]", f"{_shown(ex.model_dump(exclude_none=True))} matches no grid point"))
    points = grid_points({**grid, "exclude": [ex for _, ex in excludes]}) if full else []
    if full and not points:
        out.append(("grid.exclude", "leaves no grid point to run"))
    # Only the pairs that will run: an excluded (depth, block) pair may be impossible.
    pairs = [(p["depth"], p["block"]) for p in points] or itertools.product(grid["depth"], grid["block"])
    out += _trial_problems(raw, list(dict.fromkeys(pairs)), bad)
    dataset = _get(raw, "dataset", Dataset)
    # The file's key, given in vain: base_config leaves `synthetic` out of any other dataset's trials.
    if "synthetic" in raw and dataset and dataset != "synthetic":
        out.append(("synthetic", f"only used with dataset: synthetic (this file has dataset: {dataset})"))

    warm_depths = _get(raw, "train.warmup.depths", list[int])
    if warm_depths and grid["depth"] and not set(warm_depths) <= set(grid["depth"]):
        missing = sorted(set(warm_depths) - set(grid["depth"]))
        out.append(("train.warmup.depths", f"{_shown(missing)} not in grid.depth (allowed: {_shown(grid['depth'])})"))

    space = _get(raw, "search.space", dict) or {}
    for name, value in space.items():
        dist = _get(space, str(name), Distribution) if name in Space.model_fields else None
        if dist:
            out += _distribution_problems(f"search.space.{name}", name, dist)
    metric = _get(raw, "search.metric", Metric)
    if metric and metric.startswith("val_") and _get(raw, "train.val_size", int) in (0, None):
        without = ", ".join(sorted(m for m in get_args(Metric) if not m.startswith("val_")))
        out.append(("search.metric", f"{metric} needs a validation split (set train.val_size > 0, "
                                     f"or allowed: {without})"))
    if _get(raw, "search.algorithm", str) == "optuna" and raw_excludes:
        out.append(("grid.exclude", "not supported with search.algorithm: optuna (allowed: algorithm grid)"))
    grace = _get(raw, "scheduler.grace_period", int)
    if grace and epochs and grace > epochs:
        out.append(("scheduler.grace_period", f"{grace} is more than train.epochs (allowed: 1 to {epochs})"))
    for i, entry in enumerate(_get(raw, "loggers", list) or []):
        name = next(iter(entry), None) if isinstance(entry, dict) and len(entry) == 1 else entry
        package = LOGGER_PACKAGES.get(name) if isinstance(name, str) else None
        if package and importlib.util.find_spec(package) is None:
            out.append((f"loggers[{i}]", f"{name} needs the {package} package, which is not installed "
                                         f"(pip install -e \".[{name}]\", or remove it from loggers)"))
    gpu = _get(raw, "resources.gpu", float)
    if gpu and gpu > 1 and gpu != int(gpu):
        out.append(("resources.gpu", f"{gpu} (allowed: a share below 1, or whole GPUs)"))
    return out


_ABSENT = object()


def _trial_problems(raw: dict, pairs: list[tuple[int, str]], bad: list[str]) -> list[tuple[str, str]]:
    """The problems TrialConfig's own rules find in the file's well-formed values, once for each
    (depth, block) that will run, each at the file key of the field to change. A rule that reads a
    malformed or missing key is left out: that key's own problem is already reported."""

    def malformed(field: str) -> bool:
        key = file_key(field)
        return any(b == key or b.startswith((f"{key}.", f"{key}[")) or key.startswith(f"{b}.") for b in bad)

    values: dict[str, Any] = {}
    skipped = {f for f in _FIELDS if f not in AXES and malformed(f)}
    for field in _FIELDS:
        if field not in AXES and field not in skipped and (value := _at(raw, file_key(field))) is not _ABSENT:
            values[field] = value
    if not pairs:
        pairs, skipped = [(_DEFAULTS.depth, _DEFAULTS.block)], skipped | {"depth", "block"}
    out: list[tuple[str, str]] = []
    for depth, block in pairs:
        candidate = {**values, "depth": depth, "block": block}
        while True:
            try:
                TrialConfig.model_validate(candidate, context={"key": file_key})
            except ValidationError as exc:
                rules = [e for e in exc.errors() if e["type"] == "trial_rule"]
                other = {e["loc"][0] for e in exc.errors() if e["type"] != "trial_rule"}
                if other:  # a value the file lets through but the config does not: reported, or never reached
                    skipped |= other
                    candidate = {k: v for k, v in candidate.items() if k not in other}
                    continue
                out += [(file_key(e["loc"][0]), e["ctx"]["problem"]) for e in rules
                        if not skipped & set(e["ctx"]["fields"])]
            break
    first = {key: i for i, (key, _) in reversed(list(enumerate(out)))}
    return sorted(dict.fromkeys(out), key=lambda problem: first[problem[0]])  # one key's lines together


def _at(raw: Any, path: str) -> Any:
    """The raw value at a dotted `path`, or _ABSENT."""
    for part in path.split("."):
        if not isinstance(raw, dict) or part not in raw:
            return _ABSENT
        raw = raw[part]
    return raw


def _distribution_problems(key: str, name: str, d: Distribution) -> list[tuple[str, str]]:
    given = [k for k, v in d.model_dump().items() if v is not None]
    kinds = ", ".join(Distribution.model_fields)
    if len(given) != 1:
        return [(key, f"give exactly one distribution (allowed: {kinds})")]
    kind, values = given[0], d.values
    if name == "batch_size" and kind not in ("int_uniform", "choice"):
        return [(f"{key}.{kind}", "batch_size is a whole number (allowed: int_uniform, choice)")]
    if kind == "choice" and name == "batch_size" and any(v != int(v) or v < 1 for v in values):
        return [(f"{key}.choice", f"{_shown(values)} (allowed: positive whole numbers)")]
    # Every value the search may give must be one the trial config takes (finite, in its range).
    tp = _FIELDS[name].annotation  # batch_size: int (its values are whole, as checked above)
    bounded = _adapter(Annotated[tp, *_FIELDS[name].metadata])
    for i, value in enumerate(values):
        try:
            bounded.validate_python(int(value) if tp is int else value)
        except ValidationError as exc:
            return [(f"{key}.{kind}[{i}]", _what(exc.errors()[0]))]
    if kind == "choice":
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
    for part in (p for p in loc if not (isinstance(p, str) and p.startswith("<"))):  # union tags
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The model class whose fields live at `loc` (list indices skipped)."""
    current: Any = SweepSpec
    for part in loc:
        if isinstance(part, int) or part.startswith("<"):  # a list index, a union's tag
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
        return f"{_shown(value)} is not allowed (allowed: {allowed})"
    if kind == "finite_number":
        return f"expected a finite number, got {_shown(value)}"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        base = kind.split("_")[0]
        if kind in ("model_type", "model_attributes_type", "dict_type") and isinstance(_model_at(loc), type):
            keys = ", ".join(_model_at(loc).model_fields)
            return f"expected a mapping, got {_shown(value)} (allowed keys: {keys})"
        return f"expected {_TYPE_WORDS.get(base, base)}, got {_shown(value)}"
    if kind in ("greater_than_equal", "greater_than", "less_than", "less_than_equal"):
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than": "<", "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()))
        return f"{_shown(value)} is out of range (allowed: {op} {bound})"
    if kind == "too_short":
        if ctx.get("min_length") == 1:
            return "empty (allowed: a list of at least one value)"
        return f"has {ctx.get('actual_length')} values (allowed: exactly {ctx.get('min_length')})"
    if kind == "too_long":
        return f"has {ctx.get('actual_length')} values (allowed: at most {ctx.get('max_length')})"
    if kind == "string_pattern_mismatch":
        return f"{_shown(value)} is not a usable name (allowed: letters, digits, '.', '_', '-'; not starting with . _ -)"
    if kind == "string_too_long":
        return f"too long (allowed: at most {ctx.get('max_length')} characters)"
    return e["msg"][:200]


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {_shown(key)} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)
