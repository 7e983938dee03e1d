"""The training loop: lr milestones, warm-up, what an epoch reports, and that it learns."""

from __future__ import annotations

import pytest
import torch

from trainers.data import load_data
from trainers.loop import Loop, LoopConfig, LrSchedule
from trainers.models import build_model

TINY = {"num_train": 96, "num_test": 48, "image_size": 8, "channels": 3, "num_classes": 4}


def _loop(cfg: LoopConfig, val_size: int = 0, seed: int = 0) -> Loop:
    torch.manual_seed(seed)
    data = load_data("synthetic", synthetic=TINY, val_size=val_size)
    model = build_model("cifar", 8, "basic", "A", data.num_classes)
    return Loop(model, data, cfg, generator=torch.Generator().manual_seed(seed))


def test_lr_is_divided_by_ten_at_each_milestone():
    schedule = LrSchedule(LoopConfig(epochs=6, lr=0.1, lr_milestones=(2, 4)))
    assert [schedule.lr(e) for e in range(6)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_warmup_holds_the_low_lr_until_train_err_falls_below_the_threshold():
    cfg = LoopConfig(epochs=6, lr=0.1, lr_milestones=(4,), warmup_lr=0.01, warmup_until_train_err=0.8)
    schedule = LrSchedule(cfg)
    lrs = []
    for epoch, train_err in enumerate([0.9, 0.85, 0.79, 0.5, 0.5, 0.9]):
        lrs.append(schedule.lr(epoch))
        schedule.update(train_err)
    # Warm-up ends after the epoch at 0.79; it never comes back, even when the error rises again.
    assert lrs == pytest.approx([0.01, 0.01, 0.01, 0.1, 0.01, 0.01])


def test_schedule_state_round_trips():
    cfg = LoopConfig(epochs=3, warmup_lr=0.01, warmup_until_train_err=0.8)
    a, b = LrSchedule(cfg), LrSchedule(cfg)
    a.update(0.1)
    b.load_state_dict(a.state_dict())
    assert b.lr(0) == a.lr(0) == 0.1


def test_an_epoch_reports_every_metric_as_a_fraction_or_positive_number():
    metrics = next(iter(_loop(LoopConfig(epochs=1, batch_size=32), val_size=16)))
    assert set(metrics) == {
        "train_loss", "train_err", "test_loss", "test_err", "val_loss", "val_err", "lr", "epoch_time_s", "images_per_s"
    }
    for name in ("train_err", "test_err", "val_err"):
        assert 0.0 <= metrics[name] <= 1.0
    assert metrics["epoch_time_s"] > 0 and metrics["images_per_s"] > 0 and metrics["lr"] == 0.1


def test_no_validation_metrics_without_a_validation_split():
    metrics = next(iter(_loop(LoopConfig(epochs=1, batch_size=32))))
    assert "val_err" not in metrics and "val_loss" not in metrics


def test_loop_reports_the_scheduled_lr_and_runs_exactly_the_epochs():
    loop = _loop(LoopConfig(epochs=3, batch_size=48, lr=0.2, lr_milestones=(1, 2)))
    lrs = [m["lr"] for m in loop]
    assert lrs == pytest.approx([0.2, 0.02, 0.002]) and loop.epoch == 3
    assert [g["lr"] for g in loop.optimizer.param_groups] == pytest.approx([0.002])


def test_loop_warms_up_while_training_error_stays_high():
    never = _loop(LoopConfig(epochs=2, batch_size=48, warmup_lr=0.01, warmup_until_train_err=0.0))
    assert [m["lr"] for m in never] == [0.01, 0.01]
    once = _loop(LoopConfig(epochs=2, batch_size=48, warmup_lr=0.01, warmup_until_train_err=1.01))
    assert [m["lr"] for m in once] == [0.01, 0.1]


def test_optimizer_is_sgd_with_momentum_and_weight_decay():
    loop = _loop(LoopConfig(epochs=1, momentum=0.9, weight_decay=5e-4))
    assert isinstance(loop.optimizer, torch.optim.SGD)
    group = loop.optimizer.param_groups[0]
    assert group["momentum"] == 0.9 and group["weight_decay"] == 5e-4
    assert sum(p.numel() for p in group["params"]) == sum(p.numel() for p in loop.model.parameters())


def test_training_error_falls_on_a_learnable_dataset():
    results = list(_loop(LoopConfig(epochs=6, batch_size=16, lr=0.05)))
    assert results[0]["train_err"] > 0.25
    assert results[-1]["train_err"] < 0.1 and results[-1]["test_err"] < 0.3  # chance is 0.75


def test_evaluation_leaves_the_model_unchanged():
    loop = _loop(LoopConfig(epochs=1))
    before = {k: v.clone() for k, v in loop.model.state_dict().items()}
    loss, err = loop.evaluate(loop.data.test)
    after = loop.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats included
    assert 0 <= err <= 1 and loss > 0


def test_cpu_runs_without_autocast_or_channels_last():
    loop = _loop(LoopConfig(epochs=1))
    assert loop.amp is False and loop.memory_format is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_uses_bf16_autocast_and_channels_last():
    torch.manual_seed(0)
    data = load_data("synthetic", synthetic=TINY, device="cuda")
    loop = Loop(build_model("cifar", 8, "basic", "A", 4), data, LoopConfig(epochs=2, batch_size=32),
                generator=torch.Generator(device="cuda").manual_seed(0))
    assert loop.amp and loop.memory_format is torch.channels_last
    assert loop.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    results = list(loop)
    assert len(results) == 2 and 0 <= results[-1]["train_err"] <= 1
