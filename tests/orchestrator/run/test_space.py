"""The spec as Tune sees it: the trials Tune's own generators make from it, without starting Ray."""

from __future__ import annotations

import textwrap
from collections import Counter

import optuna
from ray.tune.experiment import Experiment, Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from orchestrator.run.space import ASHA, FIFO, study_name, tune_space
from orchestrator.run.spec import parse_spec

BASE = """
name: s
dataset: synthetic
model: cifar
grid:
  depth: [8, 20, 110]
  shortcut: [none, A]
  seed: [0, 1]
train:
  epochs: 4
  lr_milestones: [2]
"""


def spec_of(extra: str = "", base: str = BASE):
    return parse_spec(textwrap.dedent(base) + textwrap.dedent(extra))


def generated_configs(space) -> list[dict]:
    """The trial configs Tune's variant generator makes from a TuneSpace (no Ray needed)."""
    alg = space.search_alg or BasicVariantGenerator()
    alg.add_configurations([Experiment("t", run=lambda config: None, config=space.param_space,
                                       num_samples=space.num_samples)])
    configs = []
    while (trial := alg.next_trial()) is not None:
        configs.append(trial.config)
    return configs


def axes(config: dict) -> tuple:
    return config["depth"], config["block"], config["shortcut"], config["seed"]


def test_plain_grid_is_grid_search_axes_and_gives_one_trial_per_point_deepest_first():
    spec = spec_of()
    space = tune_space(spec)
    assert space.param_space["depth"] == {"grid_search": [8, 20, 110]}
    assert space.param_space["shortcut"] == {"grid_search": ["none", "A"]}
    assert space.num_samples == 12 and isinstance(space.search_alg, BasicVariantGenerator)
    assert type(space.scheduler) is FIFO  # Tune's default order, see test_choose_trial_to_run_*
    configs = generated_configs(space)
    assert sorted(map(axes, configs)) == sorted(map(axes, spec.points()))
    assert configs[0] == spec.trial_config({k: configs[0][k] for k in ("depth", "block", "shortcut", "seed")})
    # The longest trials first, the grid's order kept within a depth, so parallel slots end together.
    assert [axes(c) for c in configs] == [(d, "basic", s, seed) for d in (110, 20, 8) for s in ("none", "A")
                                          for seed in (0, 1)]


def test_num_samples_repeats_the_grid():
    space = tune_space(spec_of("search: {num_samples: 2}"))
    configs = generated_configs(space)
    assert len(configs) == 24 and set(Counter(map(axes, configs)).values()) == {2}


def test_excluded_points_are_never_generated():
    spec = spec_of(base=BASE.replace("  seed: [0, 1]", "  seed: [0, 1]\n  exclude: [{depth: 110, shortcut: none}]"))
    configs = generated_configs(tune_space(spec))
    assert len(configs) == 10 == spec.num_trials
    assert (110, "basic", "none", 0) not in set(map(axes, configs))
    assert len(set(map(axes, configs))) == 10


def test_warmup_limited_to_some_depths_reaches_only_their_trials():
    warm = "  lr_milestones: [2]\n  warmup: {lr: 0.01, until_train_err: 0.8, depths: [110]}"
    spec = spec_of(base=BASE.replace("  lr_milestones: [2]", warm))
    configs = generated_configs(tune_space(spec))
    assert len(configs) == 12
    for c in configs:
        assert (c["warmup_lr"], c["warmup_until_train_err"]) == ((0.01, 0.8) if c["depth"] == 110 else (None, None))


def test_warmup_for_every_depth_is_a_constant():
    spec = spec_of(base=BASE.replace("  lr_milestones: [2]", "  lr_milestones: [2]\n  warmup: {lr: 0.01, until_train_err: 0.8}"))
    space = tune_space(spec)
    assert space.param_space["warmup_lr"] == 0.01
    configs = generated_configs(space)
    assert len(configs) == 12 and all(c["warmup_lr"] == 0.01 for c in configs)


def test_searched_values_on_the_grid_are_drawn_from_their_distributions():
    space = tune_space(spec_of("search:\n  space:\n    lr: {log_uniform: [0.01, 0.5]}\n    batch_size: {choice: [64, 128]}"))
    configs = generated_configs(space)
    assert len(configs) == 12
    assert all(0.01 <= c["lr"] <= 0.5 and c["batch_size"] in (64, 128) for c in configs)
    assert all(isinstance(c["batch_size"], int) for c in configs)


def test_asha_counts_epochs_and_takes_metric_from_the_tune_config():
    spec = spec_of("scheduler: {type: asha, grace_period: 2, reduction_factor: 2}")
    space = tune_space(spec)
    assert isinstance(space.scheduler, ASHAScheduler)
    assert space.scheduler._time_attr == "epoch" and space.scheduler._max_t == 4
    assert space.scheduler._metric is None  # set from TuneConfig(metric, mode) by Tune
    assert (space.metric, space.mode) == ("test_err", "min")


def test_metric_defaults_to_validation_error_with_a_validation_split():
    spec = spec_of(base=BASE.replace("  epochs: 4", "  epochs: 4\n  val_size: 100"))
    assert tune_space(spec).metric == "val_err"


def test_optuna_draws_grid_axes_as_categorical_and_stores_its_study_where_told():
    spec = spec_of("""
        search:
          algorithm: optuna
          num_samples: 5
          space:
            lr: {log_uniform: [0.01, 0.5]}
            weight_decay: {log_uniform: [1.0e-5, 1.0e-3]}
        scheduler: {type: asha, grace_period: 1}
    """.replace("\n        ", "\n"))
    storage = optuna.storages.InMemoryStorage()
    space = tune_space(spec, optuna_storage=storage)
    assert isinstance(space.search_alg, OptunaSearch) and space.num_samples == 5
    assert "depth" not in space.param_space and "lr" in space.param_space  # a constant, searched over
    suggested = [space.search_alg.suggest(f"t{i}") for i in range(5)]
    for config in suggested:
        assert config["depth"] in (8, 20, 110) and config["shortcut"] in ("none", "A") and config["seed"] in (0, 1)
        assert 0.01 <= config["lr"] <= 0.5 and 1e-5 <= config["weight_decay"] <= 1e-3
    study = optuna.load_study(study_name=study_name("s"), storage=storage)
    assert len(study.trials) == 5
    dists = study.trials[0].distributions
    assert isinstance(dists["depth"], optuna.distributions.CategoricalDistribution)
    assert dists["lr"].log


def test_optuna_adds_depth_dependent_warmup():
    spec = spec_of("search: {algorithm: optuna, num_samples: 8}\n",
                   base=BASE.replace("  lr_milestones: [2]",
                                     "  lr_milestones: [2]\n  warmup: {lr: 0.01, until_train_err: 0.8, depths: [110]}"))
    space = tune_space(spec, optuna_storage=optuna.storages.InMemoryStorage())
    for i in range(8):
        config = space.search_alg.suggest(f"t{i}")
        assert (config.get("warmup_lr") == 0.01) == (config["depth"] == 110)


class Run:
    """What a scheduler sees of Tune's controller: the run's trial list, and how often it is read
    past its head (each trial's status looked at)."""

    def __init__(self, statuses: list[str]):
        self.trials = [Trial("run_trial", config={"seed": i}, trial_id=f"t{i}", stub=True) for i in range(len(statuses))]
        for t, status in zip(self.trials, statuses):
            t.set_status(status)

    def get_trials(self) -> list[Trial]:
        return self.trials


def test_choose_trial_to_run_picks_what_tunes_fifo_picks_pending_first_then_paused():
    cases = [
        [Trial.TERMINATED, Trial.ERROR, Trial.RUNNING, Trial.PAUSED, Trial.PENDING, Trial.PENDING],
        [Trial.TERMINATED, Trial.RUNNING, Trial.PAUSED, Trial.TERMINATED],
        [Trial.TERMINATED, Trial.ERROR],
        [Trial.PENDING],
        [],
    ]
    for statuses in cases:
        run = Run(statuses)
        for ours in (FIFO(), ASHA(time_attr="epoch", max_t=4, grace_period=1)):
            assert ours.choose_trial_to_run(run) is FIFOScheduler().choose_trial_to_run(run), statuses


def test_choose_trial_to_run_skips_the_ended_trials_it_has_passed_once_and_follows_the_run():
    run = Run([Trial.TERMINATED] * 1000 + [Trial.RUNNING, Trial.PENDING])
    fifo = FIFO()
    assert fifo.choose_trial_to_run(run) is run.trials[1001]
    looked = []
    for t in run.trials[:1000]:  # an ended trial read again would show here
        t.__class__ = type("Watched", (Trial,), {"status": property(lambda self: looked.append(self) or Trial.TERMINATED,
                                                                  lambda self, v: None)})
    assert fifo.choose_trial_to_run(run) is run.trials[1001]
    assert len(looked) <= 1  # the last ended one, to see the list did not change under it
    run.trials[1001].set_status(Trial.RUNNING)
    run.trials[1000].set_status(Trial.TERMINATED)
    run.trials.append(Trial("run_trial", config={}, trial_id="new", stub=True))
    assert fifo.choose_trial_to_run(run) is run.trials[-1]
    assert fifo.choose_trial_to_run(Run([Trial.PENDING])) is not None  # another run's list: counted afresh


def test_choose_trial_to_run_remembers_nothing_in_its_pickle():
    import pickle

    fifo = FIFO()
    fifo.choose_trial_to_run(Run([Trial.TERMINATED, Trial.PENDING]))
    assert "_skip" not in pickle.loads(pickle.dumps(fifo)).__dict__
