"""The trial: config handling, what it reports, checkpoint/resume, the crash hook, and Ray Tune."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from trainers import trainable
from trainers.trainable import DEFAULTS, LocalReporter, TrialConfig, run_trial, set_threads

TIMING = {"epoch_time_s", "images_per_s"}  # wall-clock figures: the only ones allowed to differ between runs

CONFIG = {
    "dataset": "synthetic",
    "synthetic": {"num_train": 80, "num_test": 40, "image_size": 8, "channels": 3, "num_classes": 4},
    "model": "cifar",
    "depth": 8,
    "block": "basic",
    "shortcut": "A",
    "seed": 3,
    "epochs": 4,
    "batch_size": 16,
    "lr": 0.1,
    "lr_milestones": [3],
    "augment": True,
    "val_size": 16,
    "probes_every": 2,
    "checkpoint_every": 1,
}

CONTRACT_KEYS = {
    "dataset", "data_dir", "model", "depth", "block", "shortcut", "seed", "epochs", "batch_size", "lr", "momentum",
    "weight_decay", "lr_milestones", "warmup_lr", "warmup_until_train_err", "augment", "val_size",
    "max_train_samples", "probes_every", "checkpoint_every", "stride_in", "zero_init_residual", "synthetic",
}  # fmt: skip


class Crash(Exception):
    pass


class CrashingReporter(LocalReporter):
    """Dies right after reporting epoch `at`, as a worker killed at that moment would."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def report(self, metrics, checkpoint=None):
        super().report(metrics, checkpoint)
        if metrics["epoch"] == self.at:
            raise Crash


def _without_timing(results: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in results]


def test_defaults_cover_exactly_the_contract_keys():
    assert set(DEFAULTS) == CONTRACT_KEYS
    assert DEFAULTS["stride_in"] == "first_1x1" and DEFAULTS["zero_init_residual"] is False
    assert DEFAULTS["lr_milestones"] == [82, 123]  # JSON-ready: a list, not a tuple


def test_unknown_config_key_is_refused():
    with pytest.raises(ValueError, match=r"unknown trial config keys \['epoch'\]"):
        TrialConfig.from_dict({**CONFIG, "epoch": 3})


def test_missing_keys_take_the_defaults():
    cfg = TrialConfig.from_dict({"dataset": "digits", "lr_milestones": None})
    assert cfg.depth == 20 and cfg.shortcut == "A" and cfg.lr_milestones == () and cfg.checkpoint_every == 1


def test_results_carry_epoch_params_and_layer_stats_on_probe_epochs():
    reporter = LocalReporter()
    run_trial({**CONFIG, "epochs": 3}, reporter)
    results = reporter.results
    assert [r["epoch"] for r in results] == [1, 2, 3]
    assert [("layer_stats" in r) for r in results] == [False, True, True]  # every 2nd, and the last
    assert all(r["params_count"] == results[0]["params_count"] > 0 for r in results)
    stats = results[1]["layer_stats"]
    assert len(stats) == 7 and set(stats[0]) == {"layer", "name", "stage", "std", "mean"}
    expected = {"train_loss", "train_err", "test_loss", "test_err", "val_loss", "val_err", "lr"} | TIMING
    assert expected <= set(results[0])
    assert [r["lr"] for r in results] == pytest.approx([0.1, 0.1, 0.1])


def test_probes_every_zero_probes_only_the_last_epoch():
    reporter = LocalReporter()
    run_trial({**CONFIG, "epochs": 2, "probes_every": 0, "val_size": 0}, reporter)
    assert [("layer_stats" in r) for r in reporter.results] == [False, True]


def test_checkpoints_go_with_every_nth_result_and_the_last(monkeypatch):
    saved = []

    class Counting(LocalReporter):
        def report(self, metrics, checkpoint=None):
            saved.append(checkpoint is not None)
            super().report(metrics, checkpoint)

    run_trial({**CONFIG, "epochs": 3, "checkpoint_every": 2}, Counting())
    assert saved == [False, True, True]


def test_resume_after_a_crash_repeats_no_epoch_and_matches_an_uninterrupted_run():
    whole = LocalReporter()
    run_trial(CONFIG, whole)

    first = CrashingReporter(at=2)
    with pytest.raises(Crash):
        run_trial(CONFIG, first)
    second = LocalReporter(checkpoint=first.checkpoint)  # what the restarted trial finds
    run_trial(CONFIG, second)

    assert [r["epoch"] for r in first.results + second.results] == [1, 2, 3, 4]
    assert _without_timing(first.results + second.results) == _without_timing(whole.results)
    assert _without_timing(whole.results)[3]["lr"] == pytest.approx(0.01)  # the milestone survived the restart


def test_resume_from_an_older_checkpoint_replays_the_same_epochs():
    whole = LocalReporter()
    run_trial({**CONFIG, "checkpoint_every": 2}, whole)
    first = CrashingReporter(at=3)  # the newest checkpoint is epoch 2's
    with pytest.raises(Crash):
        run_trial({**CONFIG, "checkpoint_every": 2}, first)
    second = LocalReporter(checkpoint=first.checkpoint)
    run_trial({**CONFIG, "checkpoint_every": 2}, second)
    assert [r["epoch"] for r in second.results] == [3, 4]
    assert _without_timing(second.results) == _without_timing(whole.results[2:])


def test_a_finished_trial_restarted_reports_nothing_more():
    done = LocalReporter()
    run_trial({**CONFIG, "epochs": 1}, done)
    again = LocalReporter(checkpoint=done.checkpoint)
    run_trial({**CONFIG, "epochs": 1}, again)
    assert again.results == []


def test_different_seeds_give_different_runs_and_equal_seeds_equal_runs():
    a, b, c = LocalReporter(), LocalReporter(), LocalReporter()
    for reporter, seed in ((a, 0), (b, 0), (c, 1)):
        run_trial({**CONFIG, "epochs": 1, "seed": seed}, reporter)
    assert _without_timing(a.results) == _without_timing(b.results) != _without_timing(c.results)


class Exited(BaseException):
    pass


def test_fault_hook_dies_once_at_the_marked_epoch(tmp_path, monkeypatch):
    codes = []

    def fake_exit(code):
        codes.append(code)
        raise Exited

    monkeypatch.setattr(trainable.os, "_exit", fake_exit)
    monkeypatch.setenv("RESWEEP_TEST_FAULT_DIR", str(tmp_path))
    (tmp_path / "crash_at_epoch_2").touch()

    first = LocalReporter()
    with pytest.raises(Exited):
        run_trial({**CONFIG, "epochs": 3}, first)
    assert codes == [1] and [r["epoch"] for r in first.results] == [1, 2]  # epoch 2 was reported first
    assert not (tmp_path / "crash_at_epoch_2").exists() and (tmp_path / "crash_at_epoch_2.claimed").exists()

    second = LocalReporter(checkpoint=first.checkpoint)  # the marker is claimed: no second death
    run_trial({**CONFIG, "epochs": 3}, second)
    assert codes == [1] and [r["epoch"] for r in second.results] == [3]


def test_set_threads_follows_the_trials_cpus(monkeypatch):
    before = torch.get_num_threads()
    try:
        set_threads(1.0)
        assert torch.get_num_threads() == 1
        set_threads(0.5)  # a fractional CPU is still one thread
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        set_threads(None)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


@pytest.mark.ray
def test_tune_trial_killed_mid_run_resumes_from_its_checkpoint(local_ray, tmp_path):
    from ray import tune

    fault_dir = tmp_path / "faults"
    fault_dir.mkdir()
    (fault_dir / "crash_at_epoch_2").touch()
    threads_file = tmp_path / "threads"
    seen = []

    class Seen(tune.Callback):  # what the driver, and so the recorder, receives
        def on_trial_result(self, iteration, trials, trial, result, **info):
            seen.append(result["epoch"])

        def on_trial_recover(self, iteration, trials, trial, **info):
            seen.append("recovered")

    def trial(config):
        os.environ["RESWEEP_TEST_FAULT_DIR"] = str(fault_dir)  # in the worker, whoever started Ray
        trainable.train_trial(config)
        threads_file.write_text(str(torch.get_num_threads()))

    tuner = tune.Tuner(
        tune.with_resources(trial, {"cpu": 1}),
        param_space={**CONFIG, "epochs": 3, "val_size": 0},
        run_config=tune.RunConfig(
            storage_path=str(tmp_path / "ray"),
            failure_config=tune.FailureConfig(max_failures=1),
            verbose=0,
            callbacks=[Seen()],
        ),
    )
    result = tuner.fit()[0]
    assert result.error is None
    assert (fault_dir / "crash_at_epoch_2.claimed").exists()  # the worker really died once
    # Epoch 2 reached the driver before the worker died, and the restarted trial began at epoch 3.
    # (Not result.metrics_dataframe: Tune's own result files may lose results across a restore.)
    assert seen == [1, 2, "recovered", 3]
    assert result.metrics["epoch"] == 3 and "layer_stats" in result.metrics
    assert result.checkpoint is not None and Path(result.checkpoint.path).exists()
    assert threads_file.read_text() == "1"
