"""The trial config: every hyperparameter of one training trial, once, with its default and meaning.

One flat, typed, frozen record (`TrialConfig`) that every package shares:
- a sweep file's `train:` section validates into it (orchestrator/run/spec.py derives the file's keys,
  types, bounds and defaults from the fields below; a field is written `train.<name>` in the file
  unless spec.FILE_KEYS places it elsewhere, e.g. `probes_every` as `probes.every`);
- `TrialConfig.as_dict()` is a trial's Ray Tune config and what `trials.config` stores;
- trainers/trainable.py and trainers/loop.py read it.

Adding a hyperparameter: a field here, and the code in trainers/ that uses it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Dataset = Literal["cifar10", "cifar100", "digits", "synthetic"]
ModelFamily = Literal["cifar", "imagenet"]  # cifar: 6n+2 / 9n+2, 16/32/64 filters; imagenet: 18..152
Block = Literal["basic", "bottleneck", "preact", "preact_bottleneck"]
Shortcut = Literal["none", "A", "B", "C"]  # none: a plain net; A, B, C: the paper's options (Table 3)
Precision = Literal["fp32", "bf16"]
StrideIn = Literal["first_1x1", "3x3"]

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
    depth: int = 20  # weighted layers (convs and the fc); resweep.paper says which each family has
    block: Block = "basic"  # preact, preact_bottleneck: pre-activation units (He et al., ECCV 2016)
    shortcut: Shortcut = "A"
    seed: int = 0  # model init, shuffling and augmentation

    # How it is trained: SGD with momentum and weight decay, the lr divided by 10 at milestones.
    epochs: int = Field(default=164, ge=1)  # passes over the training set (the paper: 164 = 64k iterations)
    batch_size: int = Field(default=128, ge=1)  # images per iteration
    lr: float = Field(default=0.1, gt=0)  # per batch of batch_size (0.1 for 128, as in the paper)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    nesterov: bool = False  # SGD with Nesterov momentum (torch's nesterov=True; needs momentum > 0)
    weight_decay: float = Field(default=1.0e-4, ge=0)  # on every parameter, BN's included, as in the paper
    lr_milestones: tuple[int, ...] = ()  # epochs after which the lr is divided by 10, at each
    # The optional warm-up (the paper's ResNet-110): this lr until the running training error (over
    # trainers.loop.WARMUP_WINDOW iterations) is below warmup_until_train_err, or after
    # warmup_max_iterations iterations (None: no cap); warmup_lr None: no warm-up.
    warmup_lr: float | None = Field(default=None, gt=0)
    warmup_until_train_err: float | None = Field(default=None, gt=0, le=1)  # a fraction
    warmup_max_iterations: int | None = Field(default=None, ge=1)  # iterations (batches)
    # fp32: the paper's arithmetic (on CUDA, TF32 off too); bf16: autocast, and channels_last on CUDA.
    precision: Precision = "fp32"
    augment: bool = True  # pad + random crop (+ horizontal flip where it keeps the class)
    val_size: int = Field(default=0, ge=0)  # training images held out for validation
    max_train_samples: int | None = Field(default=None, ge=1)  # cap on the training set, for quick looks

    # What is recorded, and the model's options.
    probes_every: int = Field(default=10, ge=1)  # epochs between layer-response records (and the last)
    checkpoint_every: int = Field(default=1, ge=1)  # epochs between checkpoints (and the last)
    stride_in: StrideIn = "first_1x1"  # where a bottleneck downsamples: its first 1x1 (paper) or 3x3 (torchvision)
    zero_init_residual: bool = False  # zero the last BN of each residual branch (not for preact units)
    synthetic: Synthetic | None = None  # dataset synthetic only: its size and shape

    @field_validator("lr_milestones", mode="before")
    @classmethod
    def _no_milestones(cls, value: Any) -> Any:
        return () if value is None else value

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
