"""A validated sweep spec as Ray Tune sees it: param_space, search algorithm and scheduler.

Pure: nothing here starts Ray, touches the database or the disk. `launch.py` hands in the Optuna
storage it opened and passes the result to the one Tuner it builds.

- A grid: every grid axis is a `tune.grid_search`, and Tune's `BasicVariantGenerator` is given the
  exact list of points (`search.num_samples` times each, exclusions left out, depth-dependent
  values such as `train.warmup.depths` filled in); each preset point collapses the grid to itself,
  so one trial per point. The points go deepest first: the longest trials start first, so the
  slots end together instead of one slot running the last deep net alone (Tune's own product
  order alternates the depths; docs/performance.md, "slots unbalanced by the grid's order").
- `search.algorithm: optuna`: an `OptunaSearch` whose define-by-run space draws the grid axes as
  categorical dimensions and the searched hyperparameters from their distributions; its study
  lives in the storage `launch.py` opens, under a name derived from the sweep's.
- `scheduler: asha`: Ray's ASHA, counting time in epochs (`epoch` of each result), so a trial
  restored from a checkpoint is judged by the epochs it has actually trained; without one, Tune's
  FIFO order. Both choose the next trial to run past the run's ended trials (`EndedSkipped`), so
  that choice, made on every one of Tune's steps, does not grow with the count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import SearchAlgorithm, Searcher
from ray.tune.search.basic_variant import BasicVariantGenerator

from orchestrator.run.spec import AXES, Distribution, SweepSpec


@dataclass(frozen=True)
class TuneSpace:
    """Everything Tune needs from a spec, besides the trainable and where to store results."""

    param_space: dict[str, Any]
    num_samples: int  # TuneConfig.num_samples
    metric: str
    mode: str
    search_alg: SearchAlgorithm | Searcher | None
    scheduler: TrialScheduler


def study_name(sweep_name: str) -> str:
    """The Optuna study of a sweep: one per sweep, found again on resume by this name."""
    return f"resweep:{sweep_name}"


def point_overrides(spec: SweepSpec) -> list[dict[str, Any]]:
    """Per grid point, the config keys that vary: the axes and any depth-dependent values."""
    return [{**p, **spec.depth_overrides(p["depth"])} for p in spec.points()]


def tune_space(spec: SweepSpec, optuna_storage: Any = None) -> TuneSpace:
    """Build Tune's view of `spec`; `optuna_storage` (an Optuna storage) for optuna sweeps."""
    scheduler = _scheduler(spec)
    if spec.search.algorithm == "optuna":
        return TuneSpace(
            param_space=spec.base_config(),  # constants only: the searcher owns every dimension
            num_samples=spec.search.num_samples,
            metric=spec.metric,
            mode=spec.mode,
            search_alg=_optuna(spec, optuna_storage),
            scheduler=scheduler,
        )

    points = point_overrides(spec)
    param_space: dict[str, Any] = spec.base_config()
    for key in dict.fromkeys(k for p in points for k in p):
        param_space[key] = tune.grid_search(list(dict.fromkeys(p[key] for p in points)))
    for key, dist in spec.search.space.items():
        param_space[key] = _tune_domain(dist)

    presets = longest_first(points * spec.search.num_samples)
    search_alg = BasicVariantGenerator(points_to_evaluate=presets)
    return TuneSpace(param_space, len(presets), spec.metric, spec.mode, search_alg, scheduler)


def longest_first(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The points deepest first (a trial's time grows with its depth), the grid's order kept
    among equal depths: the longest-first rule that keeps parallel slots ending together."""
    return sorted(points, key=lambda p: -p["depth"])


class EndedSkipped:
    """The next trial to run, chosen as Tune's FIFOScheduler does, without its scan of the run.

    Tune asks the scheduler on each of its steps (several a second) for a trial to run; the
    FIFOScheduler (ASHA inherits it) looks for the first PENDING trial and then the first PAUSED
    one from the start of the run's trial list, past every trial that has ended: a step's cost
    grew with the count (two scans of 1,000 trials, ~0.3 ms each, on every step). A trial that
    ended (TERMINATED, ERROR) stays ended within a run (a retry goes from RUNNING to PENDING;
    ended trials are put back only when a resume restores them, before its run starts), so the
    ended trials at the head of the list are skipped, remembered from one step to the next. The
    same trial is chosen, in the same order.
    """

    _skip: tuple[int, int] = (0, 0)  # (id of the run's trial list, how many at its head have ended)

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        trials = tune_controller.get_trials()
        listed, start = self._skip
        if listed != id(trials) or start > len(trials) or (start and trials[start - 1].status not in ENDED):
            start = 0  # another run's list (or one that changed under us): count again
        while start < len(trials) and trials[start].status in ENDED:
            start += 1
        self._skip = (id(trials), start)
        for status in (Trial.PENDING, Trial.PAUSED):
            for i in range(start, len(trials)):
                if trials[i].status == status:
                    return trials[i]
        return None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_skip", None)  # an id of this process's list: nothing to another one
        return state


ENDED = (Trial.TERMINATED, Trial.ERROR)


class FIFO(EndedSkipped, FIFOScheduler):
    """Tune's default scheduler (trials in the order the searcher made them)."""


class ASHA(EndedSkipped, ASHAScheduler):
    """Ray's ASHA (AsyncHyperBandScheduler)."""


def _scheduler(spec: SweepSpec) -> TrialScheduler:
    if spec.scheduler is None:
        return FIFO()
    # metric and mode come from TuneConfig, so the scheduler leaves them unset.
    return ASHA(
        time_attr="epoch",
        max_t=spec.train.epochs,
        grace_period=spec.scheduler.grace_period,
        reduction_factor=spec.scheduler.reduction_factor,
    )


def _tune_domain(d: Distribution) -> Any:
    lo_hi = d.values
    if d.kind == "uniform":
        return tune.uniform(*lo_hi)
    if d.kind == "log_uniform":
        return tune.loguniform(*lo_hi)
    if d.kind == "int_uniform":
        return tune.randint(lo_hi[0], lo_hi[1] + 1)  # inclusive upper bound, as in the file
    return tune.choice([int(v) if float(v).is_integer() else v for v in lo_hi])


class OptunaSpace:
    """Optuna's define-by-run space for a sweep (a class, so Tune can pickle it with the searcher)."""

    def __init__(self, spec: SweepSpec):
        self.axes = {a: list(dict.fromkeys(p[a] for p in spec.points())) for a in AXES}
        self.searched = {k: (d.kind, list(d.values)) for k, d in spec.search.space.items()}
        self.overrides = {p["depth"]: spec.depth_overrides(p["depth"]) for p in spec.points()}

    def __call__(self, trial: Any) -> dict[str, Any]:
        for axis, values in self.axes.items():
            trial.suggest_categorical(axis, values)
        for key, (kind, values) in self.searched.items():
            if kind == "uniform":
                trial.suggest_float(key, values[0], values[1])
            elif kind == "log_uniform":
                trial.suggest_float(key, values[0], values[1], log=True)
            elif kind == "int_uniform":
                trial.suggest_int(key, values[0], values[1])
            else:
                choices = [int(v) if key == "batch_size" else v for v in values]
                trial.suggest_categorical(key, choices)
        depth = trial.params["depth"]
        return self.overrides.get(depth) or None


def _optuna(spec: SweepSpec, storage: Any) -> Searcher:
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch(
        space=OptunaSpace(spec),
        metric=spec.metric,
        mode=spec.mode,
        study_name=study_name(spec.name),
        storage=storage,
        seed=0,  # the sampler's own seed: a sweep file always starts with the same suggestions
    )
