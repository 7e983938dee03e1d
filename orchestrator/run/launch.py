"""Launch and resume sweeps: the steps in order, each done by its own module.

launch: validate the sweep file (nothing else happens if it is wrong), open the database, refuse
a name it already holds (a new database is made only when the sweep is recorded, so a launch
refused before that leaves none behind), check the dataset is there, start or join Ray, record the sweep (spec
text and hash, git commit and dirty flag, results directory), then run Tune with the recorder as
the only writer and a one-line progress display. Ctrl-C or SIGTERM stops cleanly (see
orchestrator.run.stops): Tune saves its experiment state, the sweep is marked interrupted, and
`resume NAME` continues it.

resume: restore Tune's experiment state from the sweep's results directory; unfinished trials
continue from their last checkpoints and errored ones are retried from theirs.

Results live under `<results>/<sweep name>/` (default ./results): Tune's experiment state, each
trial's checkpoints and logs. An Optuna sweep's study lives in the database, beside its trials
(`db.optuna_journal`), so a resumed sweep keeps the searcher's history.

The jobs: orchestrator.run.preflight (every node sees the results and the code),
orchestrator.run.ray_session (start or join Ray, its token), orchestrator.run.tuner (the only Ray Tune
`Tuner`: built, restored, fitted), orchestrator.run.summary (what is printed at the end). The trainable is trainers.entry.run_trial (a
worker imports that module alone, none of the driver's); `orchestrator.run.launch.run_trial` stays an
alias of it, since the experiment state Tune saved for sweeps launched before it refers to that.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from typing import Any

from rich.console import Console

from db import queries, writes
from db.engine import Database
from db.errors import NoDatabaseError
from orchestrator.run import preflight, storage
from resweep.errors import UserError
from orchestrator.run.storage import save_sweep_record
from orchestrator.run.provenance import git_state
from orchestrator.run.ray_session import ray_session
from orchestrator.run.stops import claimed
from orchestrator.run.spec import DEFAULT_MAX_TRIALS, SpecError, SweepSpec, load_spec, parse_spec, problem, rename, spec_hash
from orchestrator.run.outcome import Outcome, print_commands
from trainers.entry import run_trial  # the trainable; this name is what older sweeps' Tune state refers to

__all__ = ["DEFAULT_DB_WAIT_S", "DEFAULT_RESULTS", "Outcome", "launch", "resume_sweep", "run_trial", "trainable"]

DEFAULT_RESULTS = storage.DEFAULT_RESULTS
DEFAULT_DB_WAIT_S = 600.0  # how long results wait in the recorder through a database outage


# Ray Tune and the Tuner's module (with Ray Train and Ray Data under it, the driver's largest import)
# are imported in the background while a new local Ray starts, not before it (ray_session's `warm`).
TUNER_MODULES = ("orchestrator.run.tuner",)


def trainable(spec: SweepSpec) -> Any:
    """`run_trial` with the spec's per-trial resources (fractional GPUs allowed)."""
    from ray import tune

    return tune.with_resources(run_trial, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})


def _database(db: Database | str | None) -> Database:
    """A script's --db (a URL, or None for $RESWEEP_DB) as the command line passes it."""
    return db if isinstance(db, Database) else Database(db)


def launch(
    path: str | os.PathLike,
    *,
    db: Database | str | None = None,
    address: str | None = None,
    resume: bool = False,
    new_name: str | None = None,
    results: str | os.PathLike | None = None,
    console: Console | None = None,
    max_trials: int = DEFAULT_MAX_TRIALS,
    token_file: str | os.PathLike | None = None,
    db_wait: float = DEFAULT_DB_WAIT_S,
) -> Outcome:
    """Run the sweep file at `path` (see the module docstring); UserError for a user's mistake.

    `db`: the database as the command line resolved it (db.engine.Database), or a URL.
    `results`: a path or URI (orchestrator.run.storage), else $RESWEEP_RESULTS, else ./results.
    `db_wait` is how long (seconds) the recorder holds results through a database outage before
    it stops the sweep cleanly (interrupted, resumable)."""
    console = console or Console()
    database = _database(db)
    spec, text = load_spec(path, max_trials=max_trials)
    if new_name is not None:
        if resume:
            raise UserError("--resume and --new-name exclude each other: resume continues the sweep of the file's name")
        spec, text = rename(text, str(path), new_name)
    engine = _opened(database)  # None: no database there yet; it is made with the sweep's record
    existing = queries.sweep(engine, spec.name) if engine is not None else None
    if resume:
        if existing is None:
            raise UserError(problem(str(path), "name", f"no sweep {spec.name!r} in {database.shown} to resume "
                                                       "(launch it without --resume)"))
        if existing.spec_hash != spec_hash(text):
            raise UserError(f"{path}: differs from sweep {spec.name!r} as launched; a resume runs the sweep as "
                            f"launched (`python -m orchestrator resume {spec.name}`), or launch the changed file "
                            "with --new-name NAME")
        return _resume(existing, database, engine, address=address, console=console, results=results,
                       token_file=token_file, db_wait=db_wait)
    if existing is not None:
        raise UserError(problem(str(path), "name", f"{spec.name!r} already exists in {database.shown} "
                                                   "(allowed: --resume to continue it, --new-name NAME to run it again)"))
    location = storage.resolve(results)
    experiment_dir = storage.join(location, spec.name)
    if storage.exists(experiment_dir):
        raise UserError(f"{storage.shown(experiment_dir)}: already holds results of a sweep named {spec.name!r} "
                        "(another database?); remove that directory, or launch with --new-name NAME")
    _ensure_dataset(spec)

    try:
        with ray_session(address, token_file, warm=TUNER_MODULES) as local_ray, ExitStack() as held:
            from orchestrator.run import tuner as tuning  # imported by now, while Ray started

            preflight.check(location)  # every node sees the results and the code, or nothing is written
            # One driver per sweep: the same name launched twice at once (or resumed) is refused here.
            if not held.enter_context(claimed(experiment_dir, spec.name, new=True)).fresh:
                raise UserError(f"{storage.shown(experiment_dir)}: another launch of {spec.name!r} wrote its "
                                "results there first; launch with --new-name NAME")
            engine = engine or database.engine()  # a command that refuses never leaves a new database
            commit, dirty = git_state()
            # The sweep's record is written directly, not through the run's outbox: the outbox
            # belongs to the run, which needs the record's id (and a name taken by another launch
            # must be refused now, not queued).
            sweep_id = writes.create_sweep(
                engine, name=spec.name, spec=text, spec_hash=spec_hash(text), git_commit=commit,
                git_dirty=dirty, storage_path=experiment_dir,
            )  # fmt: skip
            recorder = None
            try:  # from here nothing may leave the sweep `running` with no run behind it (a Ctrl-C too)
                held.enter_context(writes.claim_sweep(engine, sweep_id, spec.name))  # PostgreSQL's own guard
                # Beside Tune's state, so `db import` can rebuild the sweep from its results alone.
                save_sweep_record(str(experiment_dir), name=spec.name, spec=text, spec_hash=spec_hash(text),
                                  git_commit=commit, git_dirty=dirty)
                recorder, progress, callbacks = tuning.callbacks(spec, engine, sweep_id, console, experiment_dir,
                                                                 db_wait)
                tuner = tuning.new_tuner(spec, trainable(spec), location, callbacks, engine, sweep_id)
            except BaseException:
                if recorder is not None:
                    recorder.failed(say=tuning.say(console))
                else:  # no run and no outbox yet: nothing of the run was written, this is its one write
                    writes.set_sweep_status(engine, sweep_id, "failed", finished=True)
                raise
            console.print(f"[bold]{spec.name}[/]: {spec.num_trials} trials of {spec.train.epochs} epochs, "
                          f"results in {storage.shown(experiment_dir)}, database {database.shown}", highlight=False,
                          soft_wrap=True)
            return tuning.fit(tuner, spec, recorder, progress, console, database.flag, local_ray=local_ray)
    finally:
        if engine is not None:
            engine.dispose()


def _opened(database: Database) -> Any:
    """The database's engine, or None where there is no resweep database yet (no file, an empty
    database): a launch makes it only when it records the sweep, so one it refuses makes none."""
    try:
        return database.engine(create=False)
    except NoDatabaseError:
        return None


def resume_sweep(
    name: str,
    *,
    db: Database | str | None = None,
    address: str | None = None,
    console: Console | None = None,
    results: str | os.PathLike | None = None,
    token_file: str | os.PathLike | None = None,
    db_wait: float = DEFAULT_DB_WAIT_S,
) -> Outcome:
    """Continue the sweep `name` from Tune's saved experiment state: at `sweeps.storage_path`, or
    under `results` (a path or URI that holds it now) when given."""
    console = console or Console()
    database = _database(db)
    engine = database.engine(create=False)  # nothing to resume where there is no database
    row = queries.sweep(engine, name)
    if row is None:
        raise UserError(f"resume: no sweep named {name!r} in {database.shown} "
                        f"(`python -m orchestrator status{database.flag}` lists the sweeps)")
    return _resume(row, database, engine, address=address, console=console, results=results,
                   token_file=token_file, db_wait=db_wait)


def _resume(
    row: queries.SweepRow, database: Database, engine: Any, *, address: str | None, console: Console,
    results: str | os.PathLike | None, token_file: str | os.PathLike | None, db_wait: float,
) -> Outcome:
    name = row.name
    if row.status == "finished":
        return _already_finished(console, name, database)
    try:
        spec = parse_spec(row.spec, f"sweep {name} (as stored in the database)", max_trials=None)
    except SpecError as exc:
        raise UserError(f"resume: the stored spec of {name!r} no longer validates: {exc.problems[0]}") from None
    from orchestrator.run import tuner as tuning  # resume reads Tune's state before Ray starts

    experiment_dir = storage.join(storage.resolve(results), name) if results else (row.storage_path or "")
    if not experiment_dir or not tuning.can_restore(experiment_dir):
        raise UserError(f"{storage.shown(experiment_dir)}: no Ray Tune experiment state to resume sweep {name!r} from (the "
                        "results directory was moved or removed, or the sweep never started); launch the "
                        "sweep file again with --new-name NAME")
    # One driver per sweep: a second resume (or a launch still running it) is refused before Ray starts.
    with claimed(experiment_dir, name), writes.claim_sweep(engine, row.id, name), \
            ray_session(address, token_file) as local_ray:
        if queries.sweep(engine, name).status == "finished":  # a resume that held the claim before us
            return _already_finished(console, name, database)
        preflight.check(storage.parent(experiment_dir))
        # The run's outbox reads (or refuses) what a stopped run spilled before anything is written;
        # the sweep's `running` is its first event, after that spill.
        recorder, progress, callbacks = tuning.callbacks(spec, engine, row.id, console, experiment_dir, db_wait)
        recorder.running()
        with tuning.journal_attached(spec, engine):
            try:
                tuner = tuning.restored_tuner(experiment_dir, trainable(spec))
                tuning.replace_callbacks(tuner, callbacks)
            except BaseException:  # not restored: the sweep is as it was
                recorder.failed(row.status if row.status != "running" else "interrupted", say=tuning.say(console))
                raise
            console.print(f"[bold]{name}[/]: resuming from {storage.shown(experiment_dir)}, database {database.shown}",
                          highlight=False, soft_wrap=True)
            return tuning.fit(tuner, spec, recorder, progress, console, database.flag, local_ray=local_ray)


def _already_finished(console: Console, name: str, database: Database) -> Outcome:
    console.print(f"Sweep [bold]{name}[/] is already finished. See its results with:", highlight=False)
    print_commands(console, name, database.flag)
    return Outcome(name, "already-finished")


def _ensure_dataset(spec: SweepSpec) -> None:
    """Fail before anything starts when CIFAR is neither on disk nor downloadable."""
    if spec.dataset in ("cifar10", "cifar100"):
        from trainers.data import (
            ensure_dataset,  # imports torch: only for datasets on disk
        )

        ensure_dataset(spec.dataset, spec.base_config()["data_dir"], verify=True)
