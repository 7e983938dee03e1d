"""One trial: a flat config in, one result per epoch out, checkpointed and resumable.

:func:`train_trial` is the Ray Tune function trainable. It is a thin shell around :func:`train`,
which does the work and talks to the outside only through a :class:`Reporter`: Tune's
(:class:`TuneReporter`) inside a sweep, :class:`LocalReporter` in tests and benchmarks. (What a
sweep's Tuner is given is `trainers.entry.run_trial`, which imports this module in the worker and
calls `train_trial`.)

Each result is the loop's metrics plus ``epoch`` (1-based, epochs completed) and ``params_count``, and
on probe epochs (every ``probes_every`` and always the last) ``layer_stats``. A checkpoint (model,
optimizer, schedule, epoch, every RNG state) goes with the result every ``checkpoint_every`` epochs
and at the last, holding that epoch's result too; a restarted trial reports the checkpointed epoch's
result again (see trainers.restore.restored_result), then resumes after it and trains none again.
"""

from __future__ import annotations

import importlib
import io
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from resweep.config import TrialConfig
from trainers.data import cached_data
from trainers.loop import Loop
from trainers.models import build_model, count_params
from trainers.restore import CHECKPOINT_FILE, restored_result, with_result

# An observer of a trial's stages, for what runs beside the product (the benchmarks' timeline, the
# tests' worker deaths: benchmarks/trial_hooks.py): "module:function", called as
# function(event, trial=..., **fields) at entry, data, model, each epoch, each report and exit.
# Under Tune the last epoch's report does not return (TuneReporter), so neither its `reported` nor
# `exit` comes. Unset (always, in a user's sweep), each stage costs one dictionary lookup.
TRIAL_HOOK_ENV = "RESWEEP_TRIAL_HOOK"


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
    """Ray Tune's session: `tune.report` with a directory checkpoint, `tune.get_checkpoint` to resume.

    The result of epoch `epochs` (the trial's last) carries Tune's `done`: Tune ends the trial on
    that result, once its checkpoint is registered, instead of asking the function for another step
    only to see it return: one round trip between the driver and the worker less per trial
    (docs/performance.md). That report does not return: Tune ends the function's thread in it, and
    nothing after the last report runs (the trial hook's `reported` and `exit` of the last epoch
    among it).
    """

    def __init__(self, epochs: int | None = None) -> None:
        from ray import tune
        from ray.tune.result import DONE

        self.tune = tune
        self.epochs = epochs
        self.done = DONE

    def report(self, metrics: dict[str, Any], checkpoint: dict | None = None) -> None:
        if self.epochs is not None and metrics.get("epoch") == self.epochs:
            metrics = {**metrics, self.done: True}
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

    _hook("entry", trial=_tune_trial_id())
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    set_threads(cpus)
    train(config, TuneReporter(epochs=TrialConfig.from_dict(config).epochs))
    _hook("exit")  # not reached after a last epoch reported under Tune (TuneReporter)


def set_threads(cpus: float | None = None) -> None:
    """Use as many torch threads as the trial has CPUs (Ray's share, else OMP_NUM_THREADS if set)."""
    if cpus is None and os.environ.get("OMP_NUM_THREADS", "").isdigit():
        cpus = int(os.environ["OMP_NUM_THREADS"])
    if cpus:
        torch.set_num_threads(max(1, int(cpus)))


def train(
    config: dict[str, Any], reporter: Reporter, *, device: str | torch.device | None = None
) -> None:
    """Train the trial `config` (a resweep.config.TrialConfig's dict) describes, reporting every
    epoch; resumes from the reporter's checkpoint."""
    cfg = TrialConfig.from_dict(config)
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: pick the fastest kernels once
    _seed_everything(cfg.seed)
    data = cached_data(
        cfg.dataset,
        cfg.data_dir,
        val_size=cfg.val_size,
        max_train_samples=cfg.max_train_samples,
        augment=cfg.augment,
        synthetic=cfg.synthetic and cfg.synthetic.model_dump(),
        device=device,
    )
    _hook("data")
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
    loop = Loop(model, data, cfg, generator=generator, device=device)

    state = reporter.load_checkpoint()
    if state is not None:
        loop.load_state_dict(state["loop"])
        _set_rng_state(state["rng"])
    _hook("model")
    if (again := restored_result(state)) is not None:
        reporter.report(again)  # the restored epoch's result, which may never have reached the driver

    while loop.epoch < cfg.epochs:
        epoch = loop.epoch + 1
        last = epoch == cfg.epochs
        probes = last or epoch % cfg.probes_every == 0
        # A probe epoch's evaluation of the test set is its probe pass too (trainers.loop).
        metrics = loop.run_epoch(probes=probes)
        result: dict[str, Any] = {"epoch": epoch, **metrics, "params_count": params_count}
        if probes:
            result["layer_stats"] = loop.layer_stats
        checkpoint = None
        if last or epoch % cfg.checkpoint_every == 0:
            checkpoint = with_result({"loop": loop.state_dict(), "rng": _rng_state(), "config": cfg.model_dump()}, result)
        _hook("epoch", epoch=epoch, epoch_time_s=metrics["epoch_time_s"])
        reporter.report(result, checkpoint)
        _hook("reported", epoch=epoch)


def _tune_trial_id() -> str | None:
    try:
        from ray import tune

        return tune.get_context().get_trial_id()
    except Exception:
        return None


_hooks: dict[str, Any] = {}


def _hook(event: str, **fields: Any) -> None:
    """Tell $RESWEEP_TRIAL_HOOK's function (if any) that the trial reached `event`."""
    target = os.environ.get(TRIAL_HOOK_ENV)
    if not target:
        return
    if target not in _hooks:
        module, _, name = target.partition(":")
        _hooks[target] = getattr(importlib.import_module(module), name)
    _hooks[target](event, **fields)


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
