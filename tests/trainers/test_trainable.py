"""The trial: config handling, what it reports, checkpoint/resume, the crash hook, and Ray Tune."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from benchmarks import trial_hooks
from resweep.config import TrialConfig
from trainers import trainable
from trainers.trainable import LocalReporter, set_threads, train

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
    "lr_milestones": [3],  # runs shorter than 3 epochs drop it: a config refuses milestones past its end
    "augment": True,
    "val_size": 16,
    "probes_every": 2,
    "checkpoint_every": 1,
}

CONTRACT_KEYS = {
    "dataset", "data_dir", "model", "depth", "block", "shortcut", "seed", "epochs", "batch_size", "lr", "momentum", "nesterov",
    "weight_decay", "lr_milestones", "warmup_lr", "warmup_until_train_err", "warmup_max_iterations", "warmup_iterations", "precision",
    "augment", "val_size",
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
    defaults = TrialConfig(synthetic={}).as_dict()
    assert set(defaults) == set(TrialConfig.model_fields) == CONTRACT_KEYS
    assert defaults["stride_in"] == "first_1x1" and defaults["zero_init_residual"] is False
    assert defaults["lr_milestones"] == []  # the sweep file's default; JSON-ready: a list, not a tuple


def test_unknown_config_key_is_refused():
    with pytest.raises(ValueError, match=r"unknown trial config keys \['epoch'\]"):
        TrialConfig.from_dict({**CONFIG, "epoch": 3})


def test_missing_keys_take_the_defaults():
    cfg = TrialConfig.from_dict({"dataset": "digits", "lr_milestones": None})
    assert cfg.depth == 20 and cfg.shortcut == "A" and cfg.lr_milestones == () and cfg.checkpoint_every == 1


def test_results_carry_epoch_params_and_layer_stats_on_probe_epochs():
    reporter = LocalReporter()
    train({**CONFIG, "epochs": 3}, reporter)
    results = reporter.results
    assert [r["epoch"] for r in results] == [1, 2, 3]
    assert [("layer_stats" in r) for r in results] == [False, True, True]  # every 2nd, and the last
    assert all(r["params_count"] == results[0]["params_count"] > 0 for r in results)
    stats = results[1]["layer_stats"]
    assert len(stats) == 7 and set(stats[0]) == {"layer", "name", "stage", "std", "mean"}
    expected = {"train_loss", "train_err", "test_loss", "test_err", "val_loss", "val_err", "lr"} | TIMING
    assert expected <= set(results[0])
    assert [r["lr"] for r in results] == pytest.approx([0.1, 0.1, 0.1])


def test_probes_every_beyond_the_epochs_probes_only_the_last_epoch():
    reporter = LocalReporter()
    train({**CONFIG, "epochs": 2, "lr_milestones": [], "probes_every": 3, "val_size": 0}, reporter)
    assert [("layer_stats" in r) for r in reporter.results] == [False, True]


@pytest.mark.parametrize("key", ["probes_every", "checkpoint_every"])
def test_a_period_below_one_is_refused_as_the_sweep_file_refuses_it(key):
    with pytest.raises(ValueError, match=key):
        TrialConfig.from_dict({**CONFIG, key: 0})


def test_checkpoints_go_with_every_nth_result_and_the_last(monkeypatch):
    saved = []

    class Counting(LocalReporter):
        def report(self, metrics, checkpoint=None):
            saved.append(checkpoint is not None)
            super().report(metrics, checkpoint)

    train({**CONFIG, "epochs": 3, "checkpoint_every": 2}, Counting())
    assert saved == [False, True, True]


def test_resume_after_a_crash_trains_no_epoch_again_and_matches_an_uninterrupted_run():
    whole = LocalReporter()
    train(CONFIG, whole)

    first = CrashingReporter(at=2)
    with pytest.raises(Crash):
        train(CONFIG, first)
    second = LocalReporter(checkpoint=first.checkpoint)  # what the restarted trial finds
    train(CONFIG, second)

    # The restored epoch's result is reported again first (its report may never have reached the
    # driver; the recorder's upserts make a repeat a no-op), exactly as reported before the crash.
    assert [r["epoch"] for r in second.results] == [2, 3, 4]
    assert second.results[0] == first.results[1]
    assert _without_timing(first.results + second.results[1:]) == _without_timing(whole.results)
    assert _without_timing(whole.results)[3]["lr"] == pytest.approx(0.01)  # the milestone survived the restart


def test_resume_from_an_older_checkpoint_replays_the_same_epochs():
    whole = LocalReporter()
    train({**CONFIG, "checkpoint_every": 2}, whole)
    first = CrashingReporter(at=3)  # the newest checkpoint is epoch 2's
    with pytest.raises(Crash):
        train({**CONFIG, "checkpoint_every": 2}, first)
    second = LocalReporter(checkpoint=first.checkpoint)
    train({**CONFIG, "checkpoint_every": 2}, second)
    assert [r["epoch"] for r in second.results] == [2, 3, 4]  # epoch 2's result again, then 3 and 4
    assert _without_timing(second.results) == _without_timing(whole.results[1:])


def test_a_finished_trial_restarted_reports_its_last_epoch_again_and_trains_nothing():
    done = LocalReporter()
    train({**CONFIG, "epochs": 1, "lr_milestones": []}, done)
    again = LocalReporter(checkpoint=done.checkpoint)
    train({**CONFIG, "epochs": 1, "lr_milestones": []}, again)
    assert again.results == done.results and again.checkpoint == done.checkpoint  # no checkpoint saved anew


def test_different_seeds_give_different_runs_and_equal_seeds_equal_runs():
    a, b, c = LocalReporter(), LocalReporter(), LocalReporter()
    for reporter, seed in ((a, 0), (b, 0), (c, 1)):
        train({**CONFIG, "epochs": 1, "lr_milestones": [], "seed": seed}, reporter)
    assert _without_timing(a.results) == _without_timing(b.results) != _without_timing(c.results)


class Exited(BaseException):
    pass


def test_the_fault_hook_dies_once_at_the_marked_epoch_through_the_trial_hook(tmp_path, monkeypatch):
    codes = []

    def fake_exit(code):
        codes.append(code)
        raise Exited

    monkeypatch.setattr(trial_hooks.os, "_exit", fake_exit)
    monkeypatch.setenv(trial_hooks.HOOK_ENV, trial_hooks.CRASH)
    monkeypatch.setenv(trial_hooks.FAULT_DIR_ENV, str(tmp_path))
    (tmp_path / "crash_at_epoch_2").touch()

    first = LocalReporter()
    with pytest.raises(Exited):
        train({**CONFIG, "epochs": 3}, first)
    assert codes == [1] and [r["epoch"] for r in first.results] == [1, 2]  # epoch 2 was reported first
    assert not (tmp_path / "crash_at_epoch_2").exists() and (tmp_path / "crash_at_epoch_2.claimed").exists()

    second = LocalReporter(checkpoint=first.checkpoint)  # the marker is claimed: no second death
    train({**CONFIG, "epochs": 3}, second)
    assert codes == [1] and [r["epoch"] for r in second.results] == [2, 3]  # epoch 2 again, from its checkpoint


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
        os.environ["RESWEEP_TRIAL_HOOK"] = "benchmarks.trial_hooks:crash_if_asked"
        set_threads = trainable.set_threads

        def recorded(cpus=None):  # nothing after the last report runs (TuneReporter): note it here
            set_threads(cpus)
            threads_file.write_text(str(torch.get_num_threads()))

        trainable.set_threads = recorded
        try:
            trainable.train_trial(config)
        finally:
            trainable.set_threads = set_threads

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
    assert seen == [1, 2, "recovered", 2, 3]  # the restored epoch's result again, then the next epoch
    assert result.metrics["epoch"] == 3 and "layer_stats" in result.metrics
    assert result.checkpoint is not None and Path(result.checkpoint.path).exists()
    assert threads_file.read_text() == "1"


def test_digits_run_ends_its_warmup_per_iteration_and_records_where():
    # A real digits trial (12 iterations an epoch): a 0.9 threshold is met within the first epoch;
    # a threshold of 1e-9 never is, so the cap of 15 iterations ends the warm-up in the second epoch.
    base = {"dataset": "digits", "depth": 8, "epochs": 2, "lr_milestones": [], "augment": False,
            "probes_every": 2, "checkpoint_every": 2, "warmup_lr": 0.01, "warmup_max_iterations": 15}
    quick, capped = LocalReporter(), LocalReporter()
    train({**base, "warmup_until_train_err": 0.9}, quick)
    train({**base, "warmup_until_train_err": 1e-9}, capped)  # a threshold it never gets below
    assert 1 <= quick.results[0]["warmup_iterations"] <= 12 and "warmup_iterations" not in quick.results[1]
    assert [r.get("warmup_iterations") for r in capped.results] == [None, 15]
    assert [r["lr"] for r in capped.results] == [0.01, 0.1]


def test_precision_reaches_the_loop_and_bf16_trains_on_cpu():
    reporter = LocalReporter()
    train({"dataset": "digits", "depth": 8, "epochs": 1, "lr_milestones": [], "augment": False,
               "probes_every": 2, "precision": "bf16"}, reporter)
    (result,) = reporter.results
    assert 0 <= result["train_err"] <= 1 and len(result["layer_stats"]) == 7  # probes ran under autocast too
    assert TrialConfig.from_dict({"precision": "bf16"}).precision == "bf16"
    assert TrialConfig().precision == "fp32"


# A reused worker (Tune's reuse_actors) runs trial after trial in one process, with the dataset
# cached (trainers.data.cached_data): nothing one trial does may change the next one's numbers.

OTHER = {**CONFIG, "seed": 7, "depth": 14, "shortcut": "none", "val_size": 0, "augment": False, "lr": 0.3}


def _fresh_process_results(config: dict) -> list[dict]:
    """The trial's results from a new interpreter (nothing cached, no earlier trial)."""
    import json
    import subprocess
    import sys

    code = ("import json, sys, torch; torch.set_num_threads(1)\n"
            "from trainers.trainable import LocalReporter, train\n"
            "r = LocalReporter(); train(json.loads(sys.argv[1]), r)\n"
            "print(json.dumps(r.results))")
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code, json.dumps(config)], cwd=repo, env=env,
                         capture_output=True, text=True, check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_trial_after_other_trials_in_the_same_process_matches_a_fresh_process_to_the_last_digit():
    first, other, again = LocalReporter(), LocalReporter(), LocalReporter()
    train(CONFIG, first)
    train(OTHER, other)  # another seed, net, lr and dataset variant in between
    train(CONFIG, again)
    fresh = _fresh_process_results(CONFIG)
    as_json = lambda results: json.loads(json.dumps(_without_timing(results)))  # noqa: E731 (tuples -> lists)
    assert as_json(first.results) == as_json(again.results) == _without_timing(fresh)
    assert _without_timing(other.results) != _without_timing(first.results)


def test_the_cached_dataset_is_shared_for_equal_arguments_and_left_unchanged_by_a_trial():
    from trainers import data as data_module

    args = dict(val_size=CONFIG["val_size"], augment=True, synthetic=CONFIG["synthetic"])
    a = data_module.cached_data("synthetic", **args)
    before = (a.train.x.clone(), a.train.y.clone(), a.test.x.clone(), a.val.x.clone())
    train(CONFIG, LocalReporter())
    b = data_module.cached_data("synthetic", **args)
    assert b is a
    assert all(torch.equal(x, y) for x, y in zip(before, (b.train.x, b.train.y, b.test.x, b.val.x)))
    c = data_module.cached_data("synthetic", **{**args, "val_size": 0})
    assert c is not a and c.val is None and len(data_module._cache) == 1  # one dataset a process


@pytest.mark.ray
def test_with_reused_workers_a_killed_trial_resumes_and_the_other_trials_finish(local_ray, tmp_path):
    """reuse_actors=True (as launch runs Tune): a worker dying mid-trial is replaced, the trial
    resumes from its checkpoint, and the reused workers run the remaining trials."""
    from ray import tune

    fault_dir = tmp_path / "faults"
    fault_dir.mkdir()
    (fault_dir / "crash_at_epoch_2").touch()

    def trial(config):
        os.environ["RESWEEP_TEST_FAULT_DIR"] = str(fault_dir)
        os.environ["RESWEEP_TRIAL_HOOK"] = "benchmarks.trial_hooks:crash_if_asked"
        trainable.train_trial(config)

    tuner = tune.Tuner(
        tune.with_resources(trial, {"cpu": 1}),
        param_space={**CONFIG, "epochs": 3, "val_size": 0, "seed": tune.grid_search([0, 1, 2, 3])},
        tune_config=tune.TuneConfig(reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=1)),
    )
    grid = tuner.fit()
    assert (fault_dir / "crash_at_epoch_2.claimed").exists()  # one worker really died
    assert len(grid) == 4 and not grid.errors
    assert sorted(r.config["seed"] for r in grid) == [0, 1, 2, 3]
    assert all(r.metrics["epoch"] == 3 for r in grid)
    pids = {r.metrics["pid"] for r in grid}
    assert len(pids) < 4  # workers were reused


@pytest.mark.ray
def test_under_tune_the_last_result_ends_the_trial_with_its_checkpoint_registered(local_ray, tmp_path):
    """The last epoch's result carries Tune's `done` (TuneReporter): Tune ends the trial on it, after
    registering its checkpoint, without another step of the function; every result arrives once,
    and the reused worker runs the next trial."""
    from ray import tune

    seen: list[tuple] = []

    class Seen(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            seen.append(("result", trial.config["seed"], result["epoch"], result["done"]))

        def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
            seen.append(("checkpoint", trial.config["seed"], Path(checkpoint.path).name))

        def on_trial_complete(self, iteration, trials, trial, **info):
            seen.append(("complete", trial.config["seed"]))

    tuner = tune.Tuner(
        tune.with_resources(trainable.train_trial, {"cpu": 2}),  # one trial at a time: one worker
        param_space={**CONFIG, "epochs": 2, "lr_milestones": [], "val_size": 0, "seed": tune.grid_search([0, 1])},
        tune_config=tune.TuneConfig(reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), verbose=0, callbacks=[Seen()]),
    )
    grid = tuner.fit()
    assert not grid.errors
    for seed in (0, 1):
        assert [e for e in seen if e[1] == seed] == [
            ("result", seed, 1, False), ("checkpoint", seed, "checkpoint_000000"),
            ("result", seed, 2, True), ("checkpoint", seed, "checkpoint_000001"), ("complete", seed),
        ]
    for r in grid:
        assert r.metrics["epoch"] == 2 and "layer_stats" in r.metrics
        assert Path(r.checkpoint.path).name == "checkpoint_000001"
        assert torch.load(Path(r.checkpoint.path) / "checkpoint.pt", weights_only=True)["loop"]["epoch"] == 2
    assert len({r.metrics["pid"] for r in grid}) == 1  # the worker was reused


def test_every_config_field_is_read_by_the_trainer(monkeypatch):
    # A field that no trainer code reads would be a hyperparameter recorded but never applied.
    read: set[str] = set()

    class Recording(TrialConfig):
        def __getattribute__(self, name):
            if name in TrialConfig.model_fields:
                read.add(name)
            return super().__getattribute__(name)

    monkeypatch.setattr(trainable, "TrialConfig", Recording)
    train({**CONFIG, "epochs": 2, "lr_milestones": [], "warmup_lr": 0.01, "warmup_until_train_err": 0.5,
           "warmup_max_iterations": 2, "max_train_samples": 48}, LocalReporter())
    assert sorted(set(TrialConfig.model_fields) - read) == []


def test_the_timeline_hook_records_each_stage_of_a_trial_and_nothing_without_the_hook(tmp_path, monkeypatch):
    monkeypatch.setenv(trial_hooks.TIMELINE_ENV, str(tmp_path))
    train({**CONFIG, "epochs": 2, "lr_milestones": []}, LocalReporter())
    assert list(tmp_path.iterdir()) == []  # the directory alone does nothing: a sweep never pays for it
    monkeypatch.setenv(trial_hooks.HOOK_ENV, trial_hooks.TIMELINE)
    train({**CONFIG, "epochs": 2, "lr_milestones": []}, LocalReporter())
    (log,) = tmp_path.iterdir()
    events = [json.loads(line)["event"] for line in log.read_text().splitlines()]
    assert events == ["data", "model", "epoch", "reported", "epoch", "reported"]
