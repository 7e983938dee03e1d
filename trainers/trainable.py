"""One trial: a flat config in, one result per epoch out, checkpointed and resumable.

:func:`train_trial` is the Ray Tune function trainable. It is a thin shell around :func:`run_trial`,
which does the work and talks to the outside only through a :class:`Reporter`: Tune's
(:class:`TuneReporter`) inside a sweep, :class:`LocalReporter` in tests and benchmarks.

Each result is the loop's metrics plus ``epoch`` (1-based, epochs completed) and ``params_count``, and
on probe epochs (every ``probes_every`` and always the last) ``layer_stats``. A checkpoint (model,
optimizer, schedule, epoch, every RNG state) goes with the result every ``checkpoint_every`` epochs
and at the last; a restarted trial resumes after the checkpointed epoch and so repeats none of them.
"""

from __future__ import annotations

import io
import os
import random
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from trainers.data import load_data
from trainers.loop import Loop, LoopConfig
from trainers.models import build_model, count_params
from trainers.probes import layer_responses

CHECKPOINT_FILE = "checkpoint.pt"
FAULT_DIR_ENV = "RESWEEP_TEST_FAULT_DIR"


@dataclass(frozen=True)
class TrialConfig:
    """The flat trial config: the same keys in the sweep's Tune config and in trials.config."""

    dataset: str = "cifar10"  # cifar10 | cifar100 | digits | synthetic
    data_dir: str | None = None  # where CIFAR lives or is downloaded to; None: ~/.cache/resweep
    model: str = "cifar"  # cifar | imagenet
    depth: int = 20
    block: str = "basic"  # basic | bottleneck
    shortcut: str = "A"  # none | A | B | C
    seed: int = 0  # model init, shuffling and augmentation
    epochs: int = 164
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_milestones: tuple[int, ...] = (82, 123)  # epochs after which lr /= 10
    warmup_lr: float | None = None  # lr until train_err < warmup_until_train_err; None: no warm-up
    warmup_until_train_err: float | None = None
    augment: bool = True  # pad + random crop (+ flip where it keeps the class)
    val_size: int = 0  # training images held out for validation
    max_train_samples: int | None = None  # cap on the training set, for quick looks
    probes_every: int = 10  # layer_stats every N epochs and at the last; 0: only at the last
    checkpoint_every: int = 1  # checkpoint every N epochs and at the last; 0: only at the last
    stride_in: str = "first_1x1"  # a bottleneck's stride in its first 1x1 (paper) or its 3x3 (torchvision)
    zero_init_residual: bool = False
    synthetic: dict | None = None  # dataset=synthetic: {num_train, num_test, image_size, channels, num_classes}

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> TrialConfig:
        """Fill in defaults; a key this config does not have is a ValueError (a typo would go unseen)."""
        unknown = sorted(set(config) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown trial config keys {unknown}; known: {sorted(DEFAULTS)}")
        values = dict(config)
        if "lr_milestones" in values:
            values["lr_milestones"] = tuple(values["lr_milestones"] or ())
        return cls(**values)

    def loop_config(self) -> LoopConfig:
        return LoopConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            lr_milestones=tuple(self.lr_milestones),
            warmup_lr=self.warmup_lr,
            warmup_until_train_err=self.warmup_until_train_err,
        )


DEFAULTS: dict[str, Any] = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(TrialConfig()).items()}


class Reporter(Protocol):
    """Where a trial sends its results and checkpoints, and finds the checkpoint to resume from."""

    def report(self, metrics: dict[str, Any], checkpoint: dict | None = None) -> None: ...

    def load_checkpoint(self) -> dict | None: ...


class LocalReporter:
    """Keeps results in a list and the latest checkpoint as serialised bytes (as a file would hold it)."""

    def __init__(self, checkpoint: bytes | None = None) -> None:
        self.results: list[dict[str, Any]] = []
        self.checkpoint = checkpoint

    def report(self, metrics: dict[str, Any], checkpoint: dict | None = None) -> None:
        self.results.append(metrics)
        if checkpoint is not None:
            buffer = io.BytesIO()
            torch.save(checkpoint, buffer)
            self.checkpoint = buffer.getvalue()

    def load_checkpoint(self) -> dict | None:
        return None if self.checkpoint is None else torch.load(io.BytesIO(self.checkpoint), weights_only=True)


class TuneReporter:
    """Ray Tune's session: `tune.report` with a directory checkpoint, `tune.get_checkpoint` to resume."""

    def __init__(self) -> None:
        from ray import tune

        self.tune = tune

    def report(self, metrics: dict[str, Any], checkpoint: dict | None = None) -> None:
        if checkpoint is None:
            self.tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(checkpoint, Path(tmp) / CHECKPOINT_FILE)
            self.tune.report(metrics, checkpoint=self.tune.Checkpoint.from_directory(tmp))

    def load_checkpoint(self) -> dict | None:
        checkpoint = self.tune.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as directory:
            return torch.load(Path(directory) / CHECKPOINT_FILE, weights_only=True)


def train_trial(config: dict[str, Any]) -> None:
    """The Ray Tune function trainable: `tune.Tuner(train_trial, param_space=...)`."""
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    set_threads(cpus)
    run_trial(config, TuneReporter())


def set_threads(cpus: float | None = None) -> None:
    """Use as many torch threads as the trial has CPUs (Ray's share, else OMP_NUM_THREADS if set)."""
    if cpus is None and os.environ.get("OMP_NUM_THREADS", "").isdigit():
        cpus = int(os.environ["OMP_NUM_THREADS"])
    if cpus:
        torch.set_num_threads(max(1, int(cpus)))


def run_trial(
    config: dict[str, Any], reporter: Reporter, *, device: str | torch.device | None = None
) -> None:
    """Train the trial `config` describes, reporting every epoch; resumes from the reporter's checkpoint."""
    cfg = TrialConfig.from_dict(config)
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: pick the fastest kernels once
    _seed_everything(cfg.seed)
    data = load_data(
        cfg.dataset,
        cfg.data_dir,
        val_size=cfg.val_size,
        max_train_samples=cfg.max_train_samples,
        augment=cfg.augment,
        synthetic=cfg.synthetic,
        device=device,
    )
    model = build_model(
        cfg.model,
        cfg.depth,
        cfg.block,
        cfg.shortcut,
        data.num_classes,
        in_channels=data.in_channels,
        stride_in=cfg.stride_in,
        zero_init_residual=cfg.zero_init_residual,
    )
    params_count = count_params(model)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    loop = Loop(model, data, cfg.loop_config(), generator=generator, device=device)

    state = reporter.load_checkpoint()
    if state is not None:
        loop.load_state_dict(state["loop"])
        _set_rng_state(state["rng"])

    for metrics in loop:
        epoch = loop.epoch
        last = epoch == cfg.epochs
        result: dict[str, Any] = {"epoch": epoch, **metrics, "params_count": params_count}
        if last or (cfg.probes_every > 0 and epoch % cfg.probes_every == 0):
            result["layer_stats"] = layer_responses(model, loop.eval_batches(data.test), amp=loop.amp)
        checkpoint = None
        if last or (cfg.checkpoint_every > 0 and epoch % cfg.checkpoint_every == 0):
            checkpoint = {"loop": loop.state_dict(), "rng": _rng_state(), "config": asdict(cfg)}
        reporter.report(result, checkpoint)
        _crash_if_asked(epoch)


def _crash_if_asked(epoch: int) -> None:
    """The test hook for a real worker death: die once at epoch N if $RESWEEP_TEST_FAULT_DIR says so."""
    fault_dir = os.environ.get(FAULT_DIR_ENV)
    if not fault_dir:
        return
    marker = Path(fault_dir) / f"crash_at_epoch_{epoch}"
    try:
        os.rename(marker, marker.with_name(marker.name + ".claimed"))  # atomic: one process wins
    except FileNotFoundError:
        return
    os._exit(1)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # CUDA's generators too


def _rng_state() -> dict:
    # numpy's state as plain types and tensors, so that the checkpoint loads with weights_only=True.
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
