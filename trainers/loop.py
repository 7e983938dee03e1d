"""Training and evaluation, one epoch at a time, with the paper's recipe.

SGD with momentum and weight decay; the learning rate divided by 10 at given epochs; optionally a
warm-up at a lower rate, of one of two kinds:
- CVPR 2016's (ResNet-110): 0.01 "until the training error is below 80% (about 400 iterations)",
  then back to 0.1. Decided per iteration: after each training batch the running training error
  (over the last WARMUP_WINDOW batches, fewer at the start) is compared with
  `warmup_until_train_err`, and the warm-up ends at the first iteration where it is below, or
  after `warmup_max_iterations` iterations at the latest.
- ECCV 2016's (every CIFAR net, appendix): 0.01 "at the beginning 400 iterations", then 0.1, whatever
  the training error: exactly `warmup_iterations` iterations.
From the next batch on the lr is the schedule's. The epoch in which it ends reports the metric
`warmup_iterations`: how many iterations the warm-up lasted (= the cap when the cap ended it).

Precision: "fp32" is the paper's arithmetic: no autocast, and on CUDA TF32 is switched off too (it
is on by default for cuDNN convolutions, a 10-bit mantissa). "bf16" runs the forward passes
(training, evaluation, probes) under bf16 autocast, with the model and batches channels_last on CUDA
(on a CPU autocast works as well, without channels_last).

Iterating a :class:`Loop` yields one flat dict of metrics per epoch; its `lr` is the lr of the
epoch's last iteration. `run_epoch(probes=True)` also takes the epoch's layer responses
(trainers.probes) from its evaluation pass over the test set, into `Loop.layer_stats`: the same
records a probe pass of their own would give, without a second forward pass over the test set. The
epoch's `epoch_time_s` then includes the hooks' sums: a tenth of that evaluation pass or so on a
CPU, under 1 % of a digits epoch (docs/performance.md).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from contextlib import nullcontext

import torch
import torch.nn as nn
import torch.nn.functional as F

from resweep.config import TrialConfig
from trainers.data import Batches, Data, Split
from trainers.probes import ResponseProbe
from trainers.torch_compat import SGD

EVAL_BATCH_SIZE = 512  # images per evaluation batch (no gradients: as many as memory likes)
WARMUP_WINDOW = 20  # iterations the running training error of the warm-up is taken over


class LrSchedule:
    """The learning rate: milestone decay by epoch, preceded by the optional warm-up, which is
    decided per iteration by :meth:`step`."""

    def __init__(self, cfg: TrialConfig) -> None:
        self.cfg = cfg
        self.warming = cfg.warmup_lr is not None and (
            cfg.warmup_until_train_err is not None or cfg.warmup_iterations is not None)
        self.iterations = 0  # warm-up iterations done
        self.window: deque[tuple[int, int]] = deque(maxlen=WARMUP_WINDOW)  # (wrong, seen) per batch

    def lr(self, epoch: int) -> float:
        """The lr now, in the epoch that follows `epoch` completed epochs."""
        if self.warming:
            return self.cfg.warmup_lr
        return self.cfg.lr * 0.1 ** sum(epoch >= m for m in self.cfg.lr_milestones)

    @property
    def running_err(self) -> float:
        """The training error over the last WARMUP_WINDOW warm-up iterations (NaN before the first)."""
        seen = sum(n for _, n in self.window)
        return sum(w for w, _ in self.window) / seen if seen else float("nan")

    def step(self, wrong: int, seen: int) -> bool:
        """Called after each warm-up iteration with its misclassified and seen counts; True when this
        iteration ended the warm-up (a fixed warm-up's last iteration; else the running error below
        the threshold, or the cap reached)."""
        if not self.warming:
            return False
        self.iterations += 1
        if self.cfg.warmup_iterations is not None:
            self.warming = self.iterations < self.cfg.warmup_iterations
            return not self.warming
        self.window.append((int(wrong), int(seen)))
        cap = self.cfg.warmup_max_iterations
        if self.running_err < self.cfg.warmup_until_train_err or (cap is not None and self.iterations >= cap):
            self.warming = False
            return True
        return False

    def state_dict(self) -> dict:
        return {"warming": self.warming, "iterations": self.iterations, "window": list(self.window)}

    def load_state_dict(self, state: dict) -> None:
        self.warming = state["warming"]
        self.iterations = state.get("iterations", 0)  # checkpoints of epoch-decided warm-ups lack these
        self.window = deque((tuple(w) for w in state.get("window", [])), maxlen=WARMUP_WINDOW)


class Loop:
    """One model trained on one dataset. `for metrics in loop:` runs the remaining epochs.

    `amp` (bf16 autocast) defaults to `cfg.precision == "bf16"`, `channels_last` to amp on CUDA; both
    can be forced (benchmarks do). `generator` drives shuffling and augmentation and must live where
    the data does.
    """

    def __init__(
        self,
        model: nn.Module,
        data: Data,
        cfg: TrialConfig,
        *,
        generator: torch.Generator,
        device: str | torch.device | None = None,
        amp: bool | None = None,
        channels_last: bool | None = None,
    ) -> None:
        self.device = torch.device(device) if device is not None else data.train.x.device
        cuda = self.device.type == "cuda"
        self.amp = cfg.precision == "bf16" if amp is None else amp
        self.memory_format = torch.channels_last if (cuda and self.amp if channels_last is None else channels_last) else None
        if cuda:
            # TF32 (on by default for cuDNN convolutions) is not fp32: off unless bf16 was asked for.
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = self.amp
        self.model = model.to(self.device, memory_format=self.memory_format or torch.contiguous_format)
        self.data, self.cfg, self.generator = data, cfg, generator
        self.optimizer = SGD(  # torch.optim.SGD less its torch._dynamo import (trainers.torch_compat)
            model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
            nesterov=cfg.nesterov,
        )
        self.schedule = LrSchedule(cfg)
        self.epoch = 0  # epochs completed
        self.last_lr = cfg.lr  # the lr of the latest iteration
        self.layer_stats: list[dict] | None = None  # the latest epoch's layer responses, if it probed
        self.train_batches = Batches(
            data.train, cfg.batch_size, shuffle=True, augment=data.augment, generator=generator, device=self.device
        )

    def __iter__(self) -> Iterator[dict[str, float]]:
        while self.epoch < self.cfg.epochs:
            yield self.run_epoch()

    def run_epoch(self, probes: bool = False) -> dict[str, float]:
        """Train one epoch, evaluate, advance the schedule; the epoch's metrics. With `probes`, the
        evaluation of the test set records the layer responses too (`layer_stats`)."""
        start = time.perf_counter()
        self.layer_stats = None
        warm_before = self.schedule.iterations
        train_loss, train_err, train_s = self.train_epoch()
        lr = self.last_lr
        metrics = {"train_loss": train_loss, "train_err": train_err}
        probe = ResponseProbe(self.model) if probes else None
        with probe or nullcontext():
            metrics["test_loss"], metrics["test_err"] = self.evaluate(self.data.test)
        if self.data.val is not None:
            metrics["val_loss"], metrics["val_err"] = self.evaluate(self.data.val)
        self.epoch += 1
        metrics["lr"] = lr
        if self.schedule.iterations > warm_before and not self.schedule.warming:
            metrics["warmup_iterations"] = self.schedule.iterations
        metrics["epoch_time_s"] = time.perf_counter() - start
        metrics["images_per_s"] = len(self.data.train) / train_s
        if probe is not None:
            self.layer_stats = probe.records()  # the sums' reduction, after the epoch's clock
        return metrics

    def _set_lr(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.schedule.lr(self.epoch)

    def train_epoch(self, lr: float | None = None) -> tuple[float, float, float]:
        """One pass over the shuffled, augmented training set at the schedule's lr (or at a fixed
        `lr`, as benchmarks time it): (loss, error, seconds)."""
        if lr is None:
            self._set_lr()
        else:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        self.model.train()
        start = time.perf_counter()
        # Sums stay on the device so that no batch waits for the host.
        loss_sum = torch.zeros((), device=self.device)
        wrong = torch.zeros((), dtype=torch.int64, device=self.device)
        for x, y in self.train_batches:
            if self.memory_format is not None:
                x = x.contiguous(memory_format=self.memory_format)
            with self._autocast():
                logits = self.model(x)
                loss = F.cross_entropy(logits, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.last_lr = self.optimizer.param_groups[0]["lr"]
            self.optimizer.step()
            loss_sum += loss.detach() * len(y)
            batch_wrong = (logits.argmax(1) != y).sum()
            wrong += batch_wrong
            if self.schedule.warming:  # waits for the device, but only for the warm-up's few hundred batches
                if self.schedule.step(batch_wrong.item(), len(y)):
                    self._set_lr()
        n = len(self.data.train)
        loss_mean, err = loss_sum.item() / n, wrong.item() / n  # .item() waits for the device
        return loss_mean, err, time.perf_counter() - start

    @torch.no_grad()
    def evaluate(self, split: Split) -> tuple[float, float]:
        """(mean loss, error) of the model in eval mode over `split`."""
        self.model.eval()
        loss_sum = torch.zeros((), device=self.device)
        wrong = torch.zeros((), dtype=torch.int64, device=self.device)
        for x, y in self.eval_batches(split):
            with self._autocast():
                logits = self.model(x)
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
            wrong += (logits.argmax(1) != y).sum()
        return loss_sum.item() / len(split), wrong.item() / len(split)

    def eval_batches(self, split: Split) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """`split` in order, in eval-sized batches, as the model wants them."""
        for x, y in Batches(split, EVAL_BATCH_SIZE, device=self.device):
            if self.memory_format is not None:
                x = x.contiguous(memory_format=self.memory_format)
            yield x, y

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.amp else nullcontext()

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.epoch = state["epoch"]
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.generator.set_state(state["generator"])
