"""The trial config: every hyperparameter of one training trial, once, with its default and meaning.

One flat, typed, frozen record (`TrialConfig`) that every package shares:
- a sweep file's `train:` section validates into it (orchestrator/run/spec.py derives the file's keys,
  types, bounds and defaults from the fields below; a field is written `train.<name>` in the file
  unless spec.FILE_KEYS places it elsewhere, e.g. `probes_every` as `probes.every`);
- `TrialConfig.as_dict()` is a trial's Ray Tune config and what `trials.config` stores;
- trainers/trainable.py and trainers/loop.py read it.

Each field carries its bounds, and the rules that span fields (a depth the family has, Nesterov
with momentum, milestones within the epochs, zero-init without pre-activation units, images large
enough for the ImageNet stem) are the model's own validators: a TrialConfig made anywhere is
checked, and spec.py reports the same problems at the sweep file's keys.

Adding a hyperparameter: a field here, and the code in trainers/ that uses it.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from resweep.errors import shown
from resweep.paper import MAX_DEPTH, PREACT_BLOCKS, allowed_depths, depth_allowed

Dataset = Literal["cifar10", "cifar100", "digits", "synthetic"]
ModelFamily = Literal["cifar", "imagenet"]  # cifar: 6n+2 / 9n+2, 16/32/64 filters; imagenet: 18..152
Block = Literal["basic", "bottleneck", "preact", "preact_bottleneck"]
Shortcut = Literal["none", "A", "B", "C"]  # none: a plain net; A, B, C: the paper's options (Table 3)
Precision = Literal["fp32", "bf16"]
StrideIn = Literal["first_1x1", "3x3"]

# Image side in pixels of each dataset read from files (synthetic: its own `image_size`). Here, not in
# trainers/data.py, so that the driver checks a sweep without importing torch; data.py uses it too.
IMAGE_SIZE = {"cifar10": 32, "cifar100": 32, "digits": 8}
IMAGENET_MIN_SIZE = 32  # the ImageNet stem (7x7/2 conv, 3x3/2 max-pool) and its stages divide the side by 32

# Caps far above any study and low enough that a typo (10^20) is refused before it reaches a tensor,
# a 32-bit database column or a month of GPU time.
MAX_EPOCHS = 100_000  # 600x the paper's 164; CIFAR at batch 128 for 39 M iterations
MAX_BATCH_SIZE = 2**20  # 1,048,576 images: 16x the largest published ImageNet batches (about 64k)
MAX_IMAGES = 10**8  # held out or kept of a training set: 7x ImageNet-21k's 14 M images
MAX_SEED = 2**31 - 1  # trials.seed is an INTEGER column: 32 bits on PostgreSQL

# The warm-up's cap when a sweep file's `train.warmup` names none: the paper's "about 400 iterations".
WARMUP_MAX_ITERATIONS = 400


class Synthetic(BaseModel):
    """The generated dataset's size and shape (dataset: synthetic)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    num_train: int = Field(default=512, ge=1)  # training images
    num_test: int = Field(default=256, ge=1)  # test images
    image_size: int = Field(default=32, ge=4)  # side in pixels
    channels: int = Field(default=3, ge=1)
    num_classes: int = Field(default=10, ge=2)


class TrialConfig(BaseModel):
    """One trial's every hyperparameter. The field order is the order of a trial's Tune config."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # What is trained: the data and the net (depth, block, shortcut, seed are the grid's axes).
    dataset: Dataset = "cifar10"
    data_dir: str | None = None  # CIFAR (read or downloaded) and the digits split live here; None: ~/.cache/resweep
    model: ModelFamily = "cifar"
    depth: int = Field(default=20, ge=1, le=MAX_DEPTH)  # weighted layers (convs and the fc); resweep.paper says which each family has
    block: Block = "basic"  # preact, preact_bottleneck: pre-activation units (He et al., ECCV 2016)
    shortcut: Shortcut = "A"
    seed: int = Field(default=0, ge=0, le=MAX_SEED)  # model init, shuffling and augmentation

    # How it is trained: SGD with momentum and weight decay, the lr divided by 10 at milestones.
    epochs: int = Field(default=164, ge=1, le=MAX_EPOCHS)  # passes over the training set (the paper: 164 = 64k iterations)
    batch_size: int = Field(default=128, ge=1, le=MAX_BATCH_SIZE)  # images per iteration
    lr: float = Field(default=0.1, gt=0, allow_inf_nan=False)  # per batch of batch_size (0.1 for 128, as in the paper)
    momentum: float = Field(default=0.9, ge=0, lt=1, allow_inf_nan=False)
    nesterov: bool = False  # SGD with Nesterov momentum (torch's nesterov=True; needs momentum > 0)
    # On every parameter, BN's included, as in the paper; at 1, one step at lr 1 would zero every weight.
    weight_decay: float = Field(default=1.0e-4, ge=0, le=1, allow_inf_nan=False)
    lr_milestones: tuple[int, ...] = ()  # epochs after which the lr is divided by 10, at each
    # The optional warm-up at warmup_lr (None: no warm-up), one of two kinds. CVPR's (ResNet-110): until
    # the running training error (over trainers.loop.WARMUP_WINDOW iterations) is below
    # warmup_until_train_err, or after warmup_max_iterations iterations (None: no cap). ECCV's (every
    # CIFAR net, appendix): exactly warmup_iterations iterations, whatever the training error.
    warmup_lr: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    warmup_until_train_err: float | None = Field(default=None, gt=0, le=1)  # a fraction
    warmup_max_iterations: int | None = Field(default=None, ge=1)  # iterations (batches)
    warmup_iterations: int | None = Field(default=None, ge=1)  # iterations (batches): a fixed warm-up
    # fp32: the paper's arithmetic (on CUDA, TF32 off too); bf16: autocast, and channels_last on CUDA.
    precision: Precision = "fp32"
    augment: bool = True  # pad + random crop (+ horizontal flip where it keeps the class)
    val_size: int = Field(default=0, ge=0, le=MAX_IMAGES)  # training images held out for validation
    max_train_samples: int | None = Field(default=None, ge=1, le=MAX_IMAGES)  # cap on the training set, for quick looks

    # What is recorded, and the model's options.
    probes_every: int = Field(default=10, ge=1, le=MAX_EPOCHS)  # epochs between layer-response records (and the last)
    checkpoint_every: int = Field(default=1, ge=1, le=MAX_EPOCHS)  # epochs between checkpoints (and the last)
    stride_in: StrideIn = "first_1x1"  # where a bottleneck downsamples: its first 1x1 (paper) or 3x3 (torchvision)
    zero_init_residual: bool = False  # zero the last BN of each residual branch (not for preact units)
    synthetic: Synthetic | None = None  # dataset synthetic only: its size and shape

    @field_validator("lr_milestones", mode="before")
    @classmethod
    def _no_milestones(cls, value: Any) -> Any:
        return () if value is None else value

    @model_validator(mode="after")
    def _rules(self, info: ValidationInfo) -> TrialConfig:
        """Every problem of the rules that span fields, at once, each at the field to change. The
        validation context's `key` says how a message names a field (spec.py: by its sweep-file key)."""
        key = (info.context or {}).get("key", str)
        problems = [
            InitErrorDetails(type=PydanticCustomError("trial_rule", "{problem}", {"problem": what, "fields": fields}),
                             loc=(fields[0],), input=self.__dict__[fields[0]])
            for fields, what in self._problems(key)
        ]
        if problems:
            raise ValidationError.from_exception_data(type(self).__name__, problems)
        return self

    def _problems(self, key: Callable[[str], str]) -> list[tuple[tuple[str, ...], str]]:
        """(the field to change and the fields the rule read, what is wrong) per broken rule."""
        # The values through __dict__, not attributes: tests/trainers/test_trainable.py records the
        # fields the trainer reads, and a check here is not a use.
        c = SimpleNamespace(**self.__dict__)
        out = []
        if not depth_allowed(c.model, c.block, c.depth):
            out.append((("depth", "model", "block"), f"{c.depth} is not a depth of {c.model} nets with "
                                                     f"{c.block} blocks (allowed: {allowed_depths(c.model, c.block)})"))
        side = _image_size(c.dataset, c.synthetic)
        if c.model == "imagenet" and side < IMAGENET_MIN_SIZE:
            out.append((("model", "dataset", "synthetic"),
                        f"imagenet's stem and stages shrink images 32-fold; {c.dataset}'s {side}x{side} images "
                        f"are too small (allowed: {key('model')}: cifar, or images of at least {IMAGENET_MIN_SIZE} px)"))
        milestones = list(c.lr_milestones)
        if any(m < 1 or m > c.epochs for m in milestones):
            out.append((("lr_milestones", "epochs"), f"{shown(milestones)} (allowed: epochs from 1 to "
                                                     f"{key('epochs')} = {c.epochs})"))
        elif milestones != sorted(set(milestones)):
            out.append((("lr_milestones",), f"{shown(milestones)} (allowed: strictly increasing epochs)"))
        if c.nesterov and c.momentum <= 0:
            # torch.optim.SGD refuses it too, but only once a trial has started.
            out.append((("nesterov", "momentum"), f"true needs a momentum above 0 ({key('momentum')} is "
                                                  f"{c.momentum}; allowed: nesterov false, or momentum > 0)"))
        if c.warmup_iterations is not None and c.warmup_until_train_err is not None:
            out.append((("warmup_iterations", "warmup_until_train_err"),
                        f"a fixed warm-up of {c.warmup_iterations} iterations and one until the training error "
                        f"is below {c.warmup_until_train_err} (allowed: one of {key('warmup_iterations')} and "
                        f"{key('warmup_until_train_err')})"))
        if c.warmup_lr is not None and c.warmup_iterations is None and c.warmup_until_train_err is None:
            out.append((("warmup_lr", "warmup_iterations", "warmup_until_train_err"),
                        f"a warm-up needs its end (allowed: {key('warmup_iterations')} for a fixed one, or "
                        f"{key('warmup_until_train_err')} for one decided by the training error)"))
        if c.zero_init_residual and c.block in PREACT_BLOCKS:
            out.append((("zero_init_residual", "block"),
                        f"zeroes the last BN of each residual branch, and {c.block} units end in a conv "
                        "(allowed: false with pre-activation blocks)"))
        return out

    @property
    def image_size(self) -> int:
        """The side of the trial's images in pixels."""
        return _image_size(self.dataset, self.synthetic)

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> TrialConfig:
        """A Tune config (or a stored trials.config) as a TrialConfig, missing keys at their defaults;
        a key this config does not have is a ValueError (a typo would go unseen)."""
        unknown = sorted(set(config) - set(cls.model_fields))
        if unknown:
            raise ValueError(f"unknown trial config keys {unknown}; known: {sorted(cls.model_fields)}")
        return cls.model_validate(config)

    def as_dict(self) -> dict[str, Any]:
        """The config as Ray Tune carries it and `trials.config` stores it: JSON-ready (lists, not
        tuples), with `synthetic` only for the synthetic dataset."""
        config = self.model_dump(mode="json")
        if config["synthetic"] is None:
            del config["synthetic"]
        return config


def _image_size(dataset: str, synthetic: Synthetic | None) -> int:
    return IMAGE_SIZE.get(dataset) or (synthetic or Synthetic()).image_size
