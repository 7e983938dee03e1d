"""The training loop: lr milestones, warm-up, what an epoch reports, and that it learns."""

from __future__ import annotations

import pytest
import torch

from trainers.data import load_data
from resweep.config import TrialConfig
from trainers.loop import WARMUP_WINDOW, Loop, LrSchedule
from trainers.models import build_model
from trainers.probes import layer_responses

# A warm-up threshold no running training error here gets below (a sweep file allows (0, 1]).
NEVER = 1e-9
TINY = {"num_train": 96, "num_test": 48, "image_size": 8, "channels": 3, "num_classes": 4}


def _loop(cfg: TrialConfig, val_size: int = 0, seed: int = 0) -> Loop:
    torch.manual_seed(seed)
    data = load_data("synthetic", synthetic=TINY, val_size=val_size)
    model = build_model("cifar", 8, "basic", "A", data.num_classes)
    return Loop(model, data, cfg, generator=torch.Generator().manual_seed(seed))


def test_lr_is_divided_by_ten_at_each_milestone():
    schedule = LrSchedule(TrialConfig(epochs=6, lr=0.1, lr_milestones=(2, 4)))
    assert [schedule.lr(e) for e in range(6)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def _warm_schedule(threshold=0.8, cap=None, **kw) -> LrSchedule:
    return LrSchedule(TrialConfig(epochs=6, lr=0.1, warmup_lr=0.01, warmup_until_train_err=threshold,
                                 warmup_max_iterations=cap, **kw))


def test_warmup_ends_at_the_first_iteration_whose_running_error_is_below_the_threshold():
    schedule = _warm_schedule(threshold=0.8)
    ended = []
    # Batches of 10 images: running errors 0.9, 0.9, 0.8667 (26/30), 0.825 (33/40), 0.78 (39/50).
    for wrong in [9, 9, 8, 7, 6, 0, 10]:
        lr = schedule.lr(0)
        ended.append((lr, schedule.step(wrong, 10)))
    assert ended[:5] == [(0.01, False)] * 4 + [(0.01, True)]
    assert schedule.iterations == 5 and not schedule.warming
    assert ended[5:] == [(0.1, False), (0.1, False)]  # it never comes back, whatever the error does


def test_warmup_ends_at_the_cap_when_the_error_stays_high():
    schedule = _warm_schedule(threshold=0.8, cap=400)
    ends = [schedule.step(10, 10) for _ in range(450)]  # every image wrong, every time
    assert ends.index(True) == 399 and sum(ends) == 1
    assert schedule.iterations == 400 and schedule.lr(0) == 0.1


def test_running_error_covers_only_the_last_window_of_iterations():
    schedule = _warm_schedule(threshold=NEVER)
    for _ in range(WARMUP_WINDOW):
        schedule.step(10, 10)
    assert schedule.running_err == 1.0
    for _ in range(WARMUP_WINDOW - 1):
        schedule.step(0, 10)
    assert schedule.running_err == pytest.approx(1 / WARMUP_WINDOW)  # the oldest batches have left


def test_without_warmup_the_schedule_ignores_steps():
    schedule = LrSchedule(TrialConfig(epochs=6, lr=0.1, lr_milestones=(2,)))
    assert schedule.step(10, 10) is False and schedule.iterations == 0 and schedule.lr(2) == pytest.approx(0.01)


def test_schedule_state_round_trips():
    a, b = _warm_schedule(threshold=0.5), _warm_schedule(threshold=0.5)
    for wrong in (9, 8):
        a.step(wrong, 10)
    b.load_state_dict(a.state_dict())
    assert (b.warming, b.iterations, b.running_err) == (True, 2, pytest.approx(0.85))
    assert b.step(0, 10) == a.step(0, 10) is False  # running error 17/30 in both
    old = _warm_schedule()
    old.load_state_dict({"warming": False})  # a checkpoint from before per-iteration warm-ups
    assert old.lr(0) == 0.1 and old.iterations == 0


def _step_lrs(loop: Loop) -> list[float]:
    """Records the lr of every optimizer step the loop takes."""
    lrs: list[float] = []
    loop.optimizer.register_step_pre_hook(lambda opt, args, kwargs: lrs.append(opt.param_groups[0]["lr"]))
    return lrs


def test_loop_warmup_switches_lr_mid_epoch_at_the_cap_and_reports_the_iteration():
    # 96 images in batches of 16: 6 iterations an epoch; threshold 0 is never met, so the cap ends it.
    loop = _loop(TrialConfig(epochs=2, batch_size=16, lr=0.1, warmup_lr=0.01, warmup_until_train_err=NEVER,
                            warmup_max_iterations=4))
    lrs = _step_lrs(loop)
    first, second = list(loop)
    assert lrs == pytest.approx([0.01] * 4 + [0.1] * 8)
    assert first["warmup_iterations"] == 4 and "warmup_iterations" not in second
    assert first["lr"] == second["lr"] == 0.1  # the lr of each epoch's last iteration


def test_loop_warmup_spans_epochs_until_the_cap():
    loop = _loop(TrialConfig(epochs=3, batch_size=16, warmup_lr=0.01, warmup_until_train_err=NEVER,
                            warmup_max_iterations=9))
    lrs = _step_lrs(loop)
    results = list(loop)
    assert lrs == pytest.approx([0.01] * 9 + [0.1] * 9)
    assert [r.get("warmup_iterations") for r in results] == [None, 9, None]
    assert [r["lr"] for r in results] == pytest.approx([0.01, 0.1, 0.1])


def test_an_epoch_reports_every_metric_as_a_fraction_or_positive_number():
    metrics = next(iter(_loop(TrialConfig(epochs=1, batch_size=32), val_size=16)))
    assert set(metrics) == {
        "train_loss", "train_err", "test_loss", "test_err", "val_loss", "val_err", "lr", "epoch_time_s", "images_per_s"
    }
    for name in ("train_err", "test_err", "val_err"):
        assert 0.0 <= metrics[name] <= 1.0
    assert metrics["epoch_time_s"] > 0 and metrics["images_per_s"] > 0 and metrics["lr"] == 0.1


def test_no_validation_metrics_without_a_validation_split():
    metrics = next(iter(_loop(TrialConfig(epochs=1, batch_size=32))))
    assert "val_err" not in metrics and "val_loss" not in metrics


def test_loop_reports_the_scheduled_lr_and_runs_exactly_the_epochs():
    loop = _loop(TrialConfig(epochs=3, batch_size=48, lr=0.2, lr_milestones=(1, 2)))
    lrs = [m["lr"] for m in loop]
    assert lrs == pytest.approx([0.2, 0.02, 0.002]) and loop.epoch == 3
    assert [g["lr"] for g in loop.optimizer.param_groups] == pytest.approx([0.002])


def test_loop_warms_up_while_training_error_stays_high_without_a_cap():
    never = _loop(TrialConfig(epochs=2, batch_size=48, warmup_lr=0.01, warmup_until_train_err=NEVER))
    assert [m["lr"] for m in never] == [0.01, 0.01]
    once = _loop(TrialConfig(epochs=2, batch_size=48, warmup_lr=0.01, warmup_until_train_err=1.0))
    lrs = _step_lrs(once)
    results = list(once)
    assert lrs == pytest.approx([0.01, 0.1, 0.1, 0.1])  # the first iteration's error is below 1 (not every image wrong)
    assert results[0]["warmup_iterations"] == 1 and [m["lr"] for m in results] == [0.1, 0.1]


def test_optimizer_is_sgd_with_momentum_and_weight_decay():
    loop = _loop(TrialConfig(epochs=1, momentum=0.9, weight_decay=5e-4))
    assert isinstance(loop.optimizer, torch.optim.SGD)
    group = loop.optimizer.param_groups[0]
    assert group["momentum"] == 0.9 and group["weight_decay"] == 5e-4
    assert sum(p.numel() for p in group["params"]) == sum(p.numel() for p in loop.model.parameters())


def test_training_error_falls_on_a_learnable_dataset():
    results = list(_loop(TrialConfig(epochs=6, batch_size=16, lr=0.05)))
    assert results[0]["train_err"] > 0.25
    assert results[-1]["train_err"] < 0.1 and results[-1]["test_err"] < 0.3  # chance is 0.75


def test_evaluation_leaves_the_model_unchanged():
    loop = _loop(TrialConfig(epochs=1))
    before = {k: v.clone() for k, v in loop.model.state_dict().items()}
    loss, err = loop.evaluate(loop.data.test)
    after = loop.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats included
    assert 0 <= err <= 1 and loss > 0


def _conv_dtypes(loop: Loop) -> list[torch.dtype]:
    dtypes: list[torch.dtype] = []
    loop.model.conv1.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    return dtypes


def test_cpu_fp32_runs_without_autocast_or_channels_last():
    loop = _loop(TrialConfig(epochs=1))
    assert loop.cfg.precision == "fp32" and loop.amp is False and loop.memory_format is None
    dtypes = _conv_dtypes(loop)
    list(loop)
    assert set(dtypes) == {torch.float32}


def test_cpu_bf16_trains_and_evaluates_under_autocast_without_channels_last():
    loop = _loop(TrialConfig(epochs=1, batch_size=32, precision="bf16"))
    assert loop.amp is True and loop.memory_format is None  # channels_last is for CUDA only
    dtypes = _conv_dtypes(loop)
    (metrics,) = list(loop)
    assert set(dtypes) == {torch.bfloat16} and len(dtypes) == 3 + 1  # 3 training batches, 1 test batch
    assert 0 <= metrics["train_err"] <= 1 and metrics["test_loss"] > 0
    assert all(p.dtype == torch.float32 for p in loop.model.parameters())  # weights stay fp32


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match=r"precision\n.*'fp32' or 'bf16'"):
        TrialConfig(epochs=1, precision="fp16")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_uses_autocast_and_channels_last():
    torch.manual_seed(0)
    data = load_data("synthetic", synthetic=TINY, device="cuda")
    loop = Loop(build_model("cifar", 8, "basic", "A", 4), data, TrialConfig(epochs=2, batch_size=32, precision="bf16"),
                generator=torch.Generator(device="cuda").manual_seed(0))
    assert loop.amp and loop.memory_format is torch.channels_last
    assert loop.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    results = list(loop)
    assert len(results) == 2 and 0 <= results[-1]["train_err"] <= 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fp32_turns_tf32_off_and_keeps_the_contiguous_format():
    data = load_data("synthetic", synthetic=TINY, device="cuda")
    loop = Loop(build_model("cifar", 8, "basic", "A", 4), data, TrialConfig(epochs=1, batch_size=32),
                generator=torch.Generator(device="cuda").manual_seed(0))
    assert not loop.amp and loop.memory_format is None
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32


def test_nesterov_reaches_the_optimizer_off_by_default_and_changes_the_steps():
    plain, nesterov = _loop(TrialConfig(epochs=1, batch_size=32)), _loop(TrialConfig(epochs=1, batch_size=32, nesterov=True))
    assert [g["nesterov"] for g in plain.optimizer.param_groups] == [False]
    assert [g["nesterov"] for g in nesterov.optimizer.param_groups] == [True]
    assert next(iter(plain))["train_loss"] != next(iter(nesterov))["train_loss"]


def test_a_fixed_warmup_lasts_its_iterations_whatever_the_training_error():
    # ECCV 2016's warm-up: lr 0.01 for exactly the first N iterations. Every batch right: CVPR's
    # rule (until the running error is below 80 %) would end it after the first iteration.
    fixed = LrSchedule(TrialConfig(epochs=6, lr=0.1, warmup_lr=0.01, warmup_iterations=5))
    by_error = _warm_schedule(threshold=0.8, cap=5)
    fixed_ends = [(fixed.lr(0), fixed.step(0, 10)) for _ in range(7)]
    assert fixed_ends == [(0.01, False)] * 4 + [(0.01, True), (0.1, False), (0.1, False)]
    assert fixed.iterations == 5 and not fixed.warming
    assert by_error.step(0, 10) is True and by_error.iterations == 1  # the old rule stops at once


def test_loop_fixed_warmup_spans_epochs_and_reports_where_it_ended():
    # 96 images in batches of 16: 6 iterations an epoch; a fixed warm-up of 9 ends mid-epoch 2
    # whatever the training error (the CVPR rule with threshold 1.0 would end it after 1).
    loop = _loop(TrialConfig(epochs=3, batch_size=16, warmup_lr=0.01, warmup_iterations=9))
    lrs = _step_lrs(loop)
    results = list(loop)
    assert lrs == pytest.approx([0.01] * 9 + [0.1] * 9)
    assert [r.get("warmup_iterations") for r in results] == [None, 9, None]


def test_a_warmup_is_either_fixed_or_decided_by_the_error_and_has_an_end():
    with pytest.raises(ValueError, match="one of warmup_iterations and warmup_until_train_err"):
        TrialConfig(warmup_lr=0.01, warmup_iterations=400, warmup_until_train_err=0.8)
    with pytest.raises(ValueError, match="a warm-up needs its end"):
        TrialConfig(warmup_lr=0.01)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_probe_epoch_records_from_its_test_evaluation_what_a_probe_pass_of_its_own_records(precision):
    # run_epoch(probes=True) takes the layer responses from the evaluation pass over the test set
    # instead of a second pass: the records are those of layer_responses run after the epoch, and
    # the epoch's metrics are those of an epoch without probes, to the last digit.
    cfg = TrialConfig(epochs=2, batch_size=32, precision=precision)
    probed, plain = _loop(cfg, val_size=16), _loop(cfg, val_size=16)
    got = probed.run_epoch(probes=True)
    expected = plain.run_epoch()
    timing = {"epoch_time_s", "images_per_s"}
    assert {k: v for k, v in got.items() if k not in timing} == {k: v for k, v in expected.items() if k not in timing}
    separate = layer_responses(probed.model, probed.eval_batches(probed.data.test), amp=probed.amp)
    assert probed.layer_stats == separate and len(separate) == 7
    assert plain.layer_stats is None
    assert all(not m._forward_hooks for m in probed.model.modules())  # the hooks are gone after the epoch
    probed.run_epoch()
    assert probed.layer_stats is None  # an epoch without probes records none


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])  # bf16: autocast and channels_last
def test_on_cuda_a_probe_epoch_records_what_a_probe_pass_of_its_own_records(precision):
    data = load_data("synthetic", synthetic=TINY, device="cuda")
    cfg = TrialConfig(epochs=1, batch_size=32, precision=precision)
    torch.manual_seed(0)
    loop = Loop(build_model("cifar", 8, "basic", "A", 4), data, cfg, generator=torch.Generator(device="cuda").manual_seed(0))
    loop.run_epoch(probes=True)
    separate = layer_responses(loop.model, loop.eval_batches(data.test), amp=loop.amp)
    # The same records; equal to rounding (cuDNN may pick another kernel for another pass).
    assert [(r["layer"], r["name"], r["stage"]) for r in loop.layer_stats] == [
        (r["layer"], r["name"], r["stage"]) for r in separate]
    for got, expected in zip(loop.layer_stats, separate):
        assert (got["std"], got["mean"]) == pytest.approx((expected["std"], expected["mean"]), rel=1e-5, abs=1e-6)
