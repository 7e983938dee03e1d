"""The only Ray Tune `Tuner`: built for a new sweep, restored for a resumed one, and fitted.

The recorder (orchestrator.run.recorder) is the only writer of results and the progress line the
only display; Tune's own reporter stays silent. A fit ends in an `Outcome`: finished, failed
(some trials errored), or interrupted (Ctrl-C, SIGTERM, or a database that failed for good),
after which `resume NAME` continues from Tune's saved state.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable

from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from rich.console import Console
from sqlalchemy.engine import Engine

from orchestrator.run import alias_moved_modules, outcome, ray_compat, storage
from resweep.errors import UserError
from orchestrator.run.outbox import SPILL_FILE
from orchestrator.run.progress import Progress
from orchestrator.run.recorder import Recorder
from orchestrator.run.space import tune_space
from orchestrator.run.spec import SweepSpec
from orchestrator.run.stops import STOPS
from orchestrator.run.outcome import Outcome
from resweep.paper import trial_label
from orchestrator.run.trackers import logger_callbacks


def new_tuner(
    spec: SweepSpec, trainable: Any, location: str, callbacks: list, engine: Engine, sweep_id: int
) -> tune.Tuner:
    """The Tuner of a new sweep (recorded already as `sweep_id`); its experiment state goes to
    `<location>/<name>` (a path or a URI)."""
    space = tune_space(spec, optuna_storage=_optuna_storage(spec, engine, sweep_id))
    return tune.Tuner(
        trainable,
        param_space=space.param_space,
        tune_config=tune.TuneConfig(
            num_samples=space.num_samples,
            search_alg=space.search_alg,
            scheduler=space.scheduler,
            metric=space.metric,
            mode=space.mode,
            # A finished trial's worker runs the next one: torch, the trainers and the dataset
            # (trainers.data.cached_data) are loaded once per worker, not once per trial. The
            # trainable seeds every RNG and builds model and optimizer afresh for each trial.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=location,
            callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=spec.fault_tolerance.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),  # pruned when finished: storage.prune_checkpoints
            verbose=0,
        ),
    )


def restored_tuner(experiment_dir: str, trainable: Any) -> tune.Tuner:
    """The Tuner of a resumed sweep: unfinished trials continue from their last checkpoints,
    errored ones are retried from theirs. Restore it inside `journal_attached`, then give it
    this run's callbacks (`replace_callbacks`)."""
    alias_moved_modules()
    return tune.Tuner.restore(experiment_dir, trainable, resume_unfinished=True, resume_errored=True)


def replace_callbacks(tuner: tune.Tuner, callbacks: list) -> None:
    # The restored RunConfig holds the callbacks pickled at launch, cut off from the database
    # (see Recorder.__getstate__); this run's recorder and progress line take their place.
    ray_compat.set_callbacks(tuner, callbacks)


def can_restore(experiment_dir: str) -> bool:
    try:
        return tune.Tuner.can_restore(experiment_dir)
    except Exception as exc:  # an object store that cannot be reached, or refuses the credentials
        raise UserError(f"{storage.shown(experiment_dir)}: cannot read the sweep's results there ({storage.first_line(exc)}); "
                        "check the location and, for object storage, AWS_ENDPOINT_URL and the AWS_* "
                        "credentials") from None


def fit(
    tuner: tune.Tuner, spec: SweepSpec, recorder: Recorder, progress: Progress, console: Console, db_flag: str,
    *, local_ray: bool = False,
) -> Outcome:
    """Run the Tuner to its end; `db_flag` is the ` --db ...` advice lines repeat
    (db.engine.Database.flag). Every write, the sweep's status on a stop or a failure too, goes
    through the recorder's outbox. `local_ray`: Ray is this driver's own local one
    (orchestrator.run.ray_session), so a grid's trials are staged only as many as it can run."""
    start = time.monotonic()
    STOPS.reset()
    STOPS.on_stop(recorder.stopping)
    try:
        with STOPS.armed(), ray_compat.callbacks_counted_by_name(), ray_compat.credentials_out_of_runtime_env(), \
                ray_compat.results_without_dataframes(), environment(TUNE_ENV), \
                pending_trials(max_pending_trials(spec) if local_ray else None):
            grid = tuner.fit()
        STOPS.ending()  # from here a stop signal changes nothing: the driver prints and ends
    except KeyboardInterrupt:
        # A second stop signal: Tune skipped its last checkpoint, but its periodic one is on disk.
        progress.close()
        recorder.interrupted(say(console))
        console.print(f"\nInterrupted. Resume with: python -m orchestrator resume {spec.name}{db_flag}",
                      highlight=False, soft_wrap=True)
        return Outcome(spec.name, "interrupted", seconds=time.monotonic() - start, recorder=recorder,
                       signal=STOPS.first)
    except BaseException:
        progress.close()
        recorder.failed(say=say(console))
        raise
    seconds = time.monotonic() - start
    if recorder.stop_reason is not None and recorder.final_status not in ("finished", "failed"):
        # The store failed for good: Tune stopped and saved its state; the database may not answer,
        # so no summary from it, only what happened and how to go on. (A stop that came after the
        # last trial ended and everything was written is no stop: the summary follows.)
        progress.close()
        console.print(outcome.store_stop_line(spec.name, recorder.stop_reason,
                                              Path(recorder.outbox.spill_path or "").parent, db_flag),
                      highlight=False, soft_wrap=True)
        return Outcome(spec.name, "interrupted", seconds=seconds, recorder=recorder)
    status = recorder.final_status or "interrupted"
    if status == "finished":  # no resume reads Tune's snapshot again: each trial's newest checkpoint is kept
        storage.prune_checkpoints(grid.experiment_path, grid.filesystem)
    results = list(grid)
    failures = [f"{trial_label(r.config)}: {_last_line(r.error)[:200]}" for r in results if r.error is not None]
    return Outcome(spec.name, status, trials=len(results), errors=len(failures), seconds=seconds, recorder=recorder,
                   signal=STOPS.first if status == "interrupted" else None, spec=spec,
                   best=_best(results, spec), failures=failures)


TUNE_ENV = {
    "RAY_AIR_NEW_OUTPUT": "0",  # Tune's legacy reporter: silent at verbose=0
    # Tune's CSV and JSON loggers come from `callbacks` (db import reads result.json); its
    # automatic TensorBoard logger (tensorboardX's imports) only with `loggers: [tensorboard]`.
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
}


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """os.environ with `values` for the block (Tune reads them when its run starts), then as it
    was: a launch run inside a longer-lived process (a notebook, a test session, a benchmark)
    leaves that process's environment, and the children it starts afterwards, as they were (a
    bare Tuner run there later keeps Tune's own loggers)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


PENDING_TRIALS_ENV = "TUNE_MAX_PENDING_TRIALS_PG"


def max_pending_trials(spec: SweepSpec, resources: dict[str, float] | None = None) -> int | None:
    """How many trials of a grid Tune should keep staged (created, each with a placement group
    requested) on a Ray that cannot grow: as many as run at once (at least 2), not Tune's 200.

    Tune stages up to max(200, 1.1 x the cluster's CPUs) trials of a grid ahead, so that an
    autoscaling cluster sees the demand; on a driver's own local Ray nothing scales, and Tune
    polls all those placement groups up to ten times a second (`ray.wait` over their futures:
    about a fifth of the driver's busy time in a 1,000-trial grid, docs/performance.md). None (Tune's own
    rule) for a searcher: Tune stages one trial at a time for it anyway, which a searcher needs
    to learn from every result before its next suggestion."""
    if spec.search.algorithm != "grid":
        return None
    if resources is None:
        import ray

        resources = ray.cluster_resources()
    slots = resources.get("CPU", 0.0) // spec.resources.cpu
    if spec.resources.gpu:
        slots = min(slots, resources.get("GPU", 0.0) // spec.resources.gpu)
    return max(2, int(slots))


@contextmanager
def pending_trials(limit: int | None) -> Iterator[None]:
    """Tune's TUNE_MAX_PENDING_TRIALS_PG set to `limit` for the block (read when the Tuner's
    run starts); a value the user set, or None, leaves Tune's own rule."""
    if limit is None or PENDING_TRIALS_ENV in os.environ:
        yield
        return
    os.environ[PENDING_TRIALS_ENV] = str(limit)
    try:
        yield
    finally:
        os.environ.pop(PENDING_TRIALS_ENV, None)


def say(console: Console) -> Callable[[str], None]:
    """One line to the user, as the driver prints its others."""
    return lambda line: console.print(line, highlight=False, soft_wrap=True)


def _best(results: list, spec: SweepSpec) -> tuple[float, str] | None:
    """The best final value of the sweep's metric over Tune's results, and its trial's label."""
    best = None
    for r in results:
        value = (r.metrics or {}).get(spec.metric)
        if isinstance(value, (int, float)) and (best is None or (value < best[0]) == (spec.mode == "min")):
            best = (value, r)
    return None if best is None else (best[0], trial_label(best[1].config))


def _last_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[-1] if text else type(error).__name__


def callbacks(
    spec: SweepSpec, engine: Engine, sweep_id: int, console: Console, experiment_dir: str, db_wait: float
) -> tuple[Recorder, Progress, list]:
    """This run's recorder, its progress line, and every Tune callback (those two, Tune's CSV and
    JSON result files in each trial's directory, then the spec's logger mirrors)."""
    recorder = Recorder(engine, sweep_id, epochs=spec.train.epochs, expected_trials=spec.num_trials,
                        db_wait_s=db_wait, spill_path=_spill_path(experiment_dir, spec.name))
    progress = Progress(spec.name, total=spec.num_trials, epochs=spec.train.epochs, metric=spec.metric,
                        mode=spec.mode, console=console, store=recorder)
    files = [CSVLoggerCallback(), JsonLoggerCallback()]
    return recorder, progress, [recorder, progress, *files, *logger_callbacks(spec, recorder.trial_ids)]


def _spill_path(experiment_dir: str, name: str) -> Path:
    """Where results that wait through a database outage spill: beside Tune's state when that is a
    local (or shared) path; for results on an object store, a local directory of this user's."""
    if storage.is_uri(experiment_dir):
        return Path("~/.cache/resweep/pending").expanduser() / name / SPILL_FILE
    return Path(experiment_dir) / SPILL_FILE


def _optuna_storage(spec: SweepSpec, engine: Engine, sweep_id: int) -> Any:
    """Where an Optuna sweep keeps its study: a journal in the database, under the sweep's row.

    Optuna's relational storage cannot share resweep's database (both have a `trials` and an
    `alembic_version` table); its journal storage can, through `db.optuna_journal`. The sweep's
    row must exist (the journal's rows point at it); a resume reuses it, and the study with it.
    """
    if spec.search.algorithm != "optuna":
        return None
    import optuna
    from optuna.storages import JournalStorage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from db.optuna_journal import SqlJournalBackend

    return JournalStorage(SqlJournalBackend(engine, sweep_id))


def journal_attached(spec: SweepSpec, engine: Engine) -> AbstractContextManager:
    """An Optuna searcher comes back from Tune's pickles with its study's journal backend cut
    off from the database (no password is pickled, see db.optuna_journal); attached, it uses
    this engine, so the study continues in the same rows (same sweep id)."""
    if spec.search.algorithm != "optuna":
        return nullcontext()  # and Optuna stays unimported
    from db import optuna_journal

    return optuna_journal.attach(engine)
