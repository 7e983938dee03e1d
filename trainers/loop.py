"""Training and evaluation, one epoch at a time, with the paper's recipe.

SGD with momentum and weight decay; the learning rate divided by 10 at given epochs; optionally a
warm-up at a lower rate until the training error falls below a threshold (the paper's ResNet-110
recipe: 0.01 until training error < 80%, then back to 0.1). On CUDA the forward pass runs under bf16
autocast and the model and batches are channels_last.

Iterating a :class:`Loop` yields one flat dict of metrics per epoch.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from trainers.data import Batches, Data, Split


@dataclass(frozen=True)
class LoopConfig:
    epochs: int
    batch_size: int = 128
    lr: float = 0.1  # per batch of batch_size, before warm-up and milestones
    momentum: float = 0.9
    weight_decay: float = 1e-4  # on every parameter, BN's included, as in the paper
    lr_milestones: tuple[int, ...] = ()  # after this many epochs the lr is divided by 10, at each
    warmup_lr: float | None = None  # lr while warming up; None: no warm-up
    warmup_until_train_err: float | None = None  # warm-up ends after an epoch whose train_err is below this
    eval_batch_size: int = 512


class LrSchedule:
    """The learning rate of each epoch: milestone decay, preceded by the optional warm-up."""

    def __init__(self, cfg: LoopConfig) -> None:
        self.cfg = cfg
        self.warming = cfg.warmup_lr is not None and cfg.warmup_until_train_err is not None

    def lr(self, epoch: int) -> float:
        """The lr of the epoch that follows `epoch` completed epochs."""
        if self.warming:
            return self.cfg.warmup_lr
        return self.cfg.lr * 0.1 ** sum(epoch >= m for m in self.cfg.lr_milestones)

    def update(self, train_err: float) -> None:
        """Called after each epoch with its training error: ends the warm-up once it is low enough."""
        if self.warming and train_err < self.cfg.warmup_until_train_err:
            self.warming = False

    def state_dict(self) -> dict:
        return {"warming": self.warming}

    def load_state_dict(self, state: dict) -> None:
        self.warming = state["warming"]


class Loop:
    """One model trained on one dataset. `for metrics in loop:` runs the remaining epochs.

    `amp` (bf16 autocast) and `channels_last` default to on for CUDA, off elsewhere. `generator`
    drives shuffling and augmentation and must live where the data does.
    """

    def __init__(
        self,
        model: nn.Module,
        data: Data,
        cfg: LoopConfig,
        *,
        generator: torch.Generator,
        device: str | torch.device | None = None,
        amp: bool | None = None,
        channels_last: bool | None = None,
    ) -> None:
        self.device = torch.device(device) if device is not None else data.train.x.device
        cuda = self.device.type == "cuda"
        self.amp = cuda if amp is None else amp
        self.memory_format = torch.channels_last if (cuda if channels_last is None else channels_last) else None
        self.model = model.to(self.device, memory_format=self.memory_format or torch.contiguous_format)
        self.data, self.cfg, self.generator = data, cfg, generator
        self.optimizer = torch.optim.SGD(
            model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
        self.schedule = LrSchedule(cfg)
        self.epoch = 0  # epochs completed
        self.train_batches = Batches(
            data.train, cfg.batch_size, shuffle=True, augment=data.augment, generator=generator, device=self.device
        )

    def __iter__(self) -> Iterator[dict[str, float]]:
        while self.epoch < self.cfg.epochs:
            yield self.run_epoch()

    def run_epoch(self) -> dict[str, float]:
        """Train one epoch, evaluate, advance the schedule; the epoch's metrics."""
        start = time.perf_counter()
        lr = self.schedule.lr(self.epoch)
        train_loss, train_err, train_s = self.train_epoch(lr)
        metrics = {"train_loss": train_loss, "train_err": train_err}
        metrics["test_loss"], metrics["test_err"] = self.evaluate(self.data.test)
        if self.data.val is not None:
            metrics["val_loss"], metrics["val_err"] = self.evaluate(self.data.val)
        self.epoch += 1
        self.schedule.update(train_err)
        metrics["lr"] = lr
        metrics["epoch_time_s"] = time.perf_counter() - start
        metrics["images_per_s"] = len(self.data.train) / train_s
        return metrics

    def train_epoch(self, lr: float) -> tuple[float, float, float]:
        """One pass over the shuffled, augmented training set at `lr`: (loss, error, seconds)."""
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
            self.optimizer.step()
            loss_sum += loss.detach() * len(y)
            wrong += (logits.argmax(1) != y).sum()
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
        for x, y in Batches(split, self.cfg.eval_batch_size, device=self.device):
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
