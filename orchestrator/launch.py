"""Launch and resume sweeps: the only module that builds a Ray Tune `Tuner`.

launch: validate the sweep file (nothing else happens if it is wrong), open the database, refuse
a name it already holds, check the dataset is there, start or join Ray, record the sweep (spec
text and hash, git commit and dirty flag, results directory), then run Tune with the recorder as
the only writer and a one-line progress display. Ctrl-C stops cleanly: Tune saves its experiment
state, the sweep is marked interrupted, and `resume NAME` continues it.

resume: restore Tune's experiment state from the sweep's results directory; unfinished trials
continue from their last checkpoints and errored ones are retried from theirs.

Results live under `<results>/<sweep name>/` (default ./results): Tune's experiment state, each
trial's checkpoints and logs. An Optuna sweep's study lives in the database, beside its trials
(`db.optuna_journal`), so a resumed sweep keeps the searcher's history.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray import tune
from rich.console import Console
from sqlalchemy.engine import Engine

from db import writes
from db.engine import get_engine, redact, resolve_url
from orchestrator.errors import UserError
from orchestrator.progress import Progress, duration, trial_label
from orchestrator.provenance import git_state
from orchestrator.recorder import Recorder
from orchestrator.space import study_name, tune_space
from orchestrator.spec import SpecError, SweepSpec, load_spec, parse_spec, problem, spec_hash

DEFAULT_RESULTS = "results"


@dataclass
class Outcome:
    """How a launch or resume ended."""

    name: str
    status: str  # finished | failed | interrupted | already-finished
    trials: int = 0
    errors: int = 0
    seconds: float = 0.0
    recorder: Recorder | None = field(default=None, repr=False)

    @property
    def exit_code(self) -> int:
        return {"finished": 0, "already-finished": 0, "failed": 1, "interrupted": 130}[self.status]


def run_trial(config: dict[str, Any]) -> None:
    """The trainable Tune runs: imports the trainers (and torch) in the worker, never the driver."""
    from trainers.trainable import train_trial

    train_trial(config)


def trainable(spec: SweepSpec) -> Any:
    """`run_trial` with the spec's per-trial resources (fractional GPUs allowed)."""
    return tune.with_resources(run_trial, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})


def launch(
    path: str | os.PathLike,
    *,
    db: str | None = None,
    address: str | None = None,
    resume: bool = False,
    new_name: str | None = None,
    results: str | os.PathLike = DEFAULT_RESULTS,
    console: Console | None = None,
) -> Outcome:
    """Run the sweep file at `path` (see the module docstring); UserError for a user's mistake."""
    console = console or Console()
    spec, text = load_spec(path)
    if new_name is not None:
        if resume:
            raise UserError("--resume and --new-name exclude each other: resume continues the sweep of the file's name")
        spec, text = _renamed(spec, text, new_name, str(path))
    engine = get_engine(db)
    existing = writes.get_sweep(engine, spec.name)
    if resume:
        if existing is None:
            raise UserError(problem(str(path), "name", f"no sweep {spec.name!r} in {redact(engine)} to resume "
                                                       "(launch it without --resume)"))
        if existing.spec_hash != spec_hash(text):
            raise UserError(f"{path}: differs from sweep {spec.name!r} as launched; a resume runs the sweep as "
                            f"launched (`python -m orchestrator resume {spec.name}`), or launch the changed file "
                            "with --new-name NAME")
        return resume_sweep(spec.name, db=db, address=address, console=console, engine=engine)
    if existing is not None:
        raise UserError(problem(str(path), "name", f"{spec.name!r} already exists in {redact(engine)} "
                                                   "(allowed: --resume to continue it, --new-name NAME to run it again)"))
    experiment_dir = Path(results).expanduser().resolve() / spec.name
    if experiment_dir.exists():
        raise UserError(f"{experiment_dir}: already holds results of a sweep named {spec.name!r} (another "
                        "database?); remove that directory, or launch with --new-name NAME")
    _ensure_dataset(spec)

    started_ray = _start_ray(address)
    try:
        commit, dirty = git_state()
        sweep_id = writes.create_sweep(
            engine, name=spec.name, spec=text, spec_hash=spec_hash(text), git_commit=commit,
            git_dirty=dirty, storage_path=str(experiment_dir),
        )  # fmt: skip
        recorder, progress = _callbacks(spec, engine, sweep_id, console)
        try:
            tuner = _new_tuner(spec, experiment_dir, [recorder, progress], engine, sweep_id)
        except BaseException:
            writes.set_sweep_status(engine, sweep_id, "failed", finished=True)
            raise
        console.print(f"[bold]{spec.name}[/]: {spec.num_trials} trials of {spec.train.epochs} epochs, "
                      f"results in {experiment_dir}, database {redact(engine)}", highlight=False, soft_wrap=True)
        return _fit(tuner, spec, engine, sweep_id, recorder, progress, console, db)
    finally:
        if started_ray:
            ray.shutdown()
        engine.dispose()


def _new_tuner(
    spec: SweepSpec, experiment_dir: Path, callbacks: list, engine: Engine, sweep_id: int
) -> tune.Tuner:
    """The Tuner of a new sweep (recorded already as `sweep_id`); its experiment state goes to
    `experiment_dir`."""
    space = tune_space(spec, optuna_storage=_optuna_storage(spec, engine, sweep_id))
    return tune.Tuner(
        trainable(spec),
        param_space=space.param_space,
        tune_config=tune.TuneConfig(
            num_samples=space.num_samples,
            search_alg=space.search_alg,
            scheduler=space.scheduler,
            metric=space.metric,
            mode=space.mode,
            reuse_actors=False,
        ),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=str(experiment_dir.parent),
            callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=spec.fault_tolerance.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),  # the latest is what resume needs
            verbose=0,
        ),
    )


def resume_sweep(
    name: str,
    *,
    db: str | None = None,
    address: str | None = None,
    console: Console | None = None,
    engine: Engine | None = None,
) -> Outcome:
    """Continue the sweep `name` from Tune's saved experiment state."""
    console = console or Console()
    engine = engine or get_engine(db)
    row = writes.get_sweep(engine, name)
    if row is None:
        raise UserError(f"resume: no sweep named {name!r} in {redact(engine)} "
                        f"(`python -m orchestrator status{_db_flag(db)}` lists the sweeps)")
    if row.status == "finished":
        console.print(f"Sweep [bold]{name}[/] is already finished. See its results with:", highlight=False)
        _print_commands(console, name, db)
        return Outcome(name, "already-finished")
    try:
        spec = parse_spec(row.spec, f"sweep {name} (as stored in the database)")
    except SpecError as exc:
        raise UserError(f"resume: the stored spec of {name!r} no longer validates: {exc.problems[0]}") from None
    experiment_dir = Path(row.storage_path or "")
    if not row.storage_path or not tune.Tuner.can_restore(str(experiment_dir)):
        raise UserError(f"{experiment_dir}: no Ray Tune experiment state to resume sweep {name!r} from (the "
                        "results directory was moved or removed, or the sweep never started); launch the "
                        "sweep file again with --new-name NAME")
    started_ray = _start_ray(address)
    try:
        writes.set_sweep_status(engine, row.id, "running")
        # An Optuna searcher comes back from Tune's pickles with its study's journal backend cut
        # off from the database (no password is pickled, see db.optuna_journal); attached, it
        # uses this engine, so the study continues in the same rows (same sweep id).
        with _journal_attached(spec, engine):
            tuner = tune.Tuner.restore(
                str(experiment_dir), trainable(spec), resume_unfinished=True, resume_errored=True
            )
            recorder, progress = _callbacks(spec, engine, row.id, console)
            # The restored RunConfig holds the callbacks pickled at launch, cut off from the database
            # (see Recorder.__getstate__); this run's recorder and progress line take their place.
            tuner._local_tuner.get_run_config().callbacks = [recorder, progress]
            console.print(f"[bold]{name}[/]: resuming from {experiment_dir}, database {redact(engine)}",
                          highlight=False, soft_wrap=True)
            return _fit(tuner, spec, engine, row.id, recorder, progress, console, db)
    finally:
        if started_ray:
            ray.shutdown()


def _fit(
    tuner: tune.Tuner, spec: SweepSpec, engine: Engine, sweep_id: int, recorder: Recorder,
    progress: Progress, console: Console, db: str | None,
) -> Outcome:
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # Tune's legacy reporter: silent at verbose=0
    start = time.monotonic()
    try:
        grid = tuner.fit()
    except KeyboardInterrupt:
        # A second Ctrl-C: Tune skipped its last checkpoint, but its periodic one is on disk.
        progress.close()
        writes.set_sweep_status(engine, sweep_id, "interrupted")
        console.print(f"\nInterrupted. Resume with: python -m orchestrator resume {spec.name}{_db_flag(db)}")
        return Outcome(spec.name, "interrupted", seconds=time.monotonic() - start, recorder=recorder)
    except BaseException:
        progress.close()
        writes.set_sweep_status(engine, sweep_id, "failed", finished=True)
        raise
    seconds = time.monotonic() - start
    status = recorder.final_status or "interrupted"
    errors = sum(r.error is not None for r in grid)
    _summary(console, engine, spec, grid, status, seconds, db)
    return Outcome(spec.name, status, trials=len(grid), errors=errors, seconds=seconds, recorder=recorder)


def _callbacks(spec: SweepSpec, engine: Engine, sweep_id: int, console: Console) -> tuple[Recorder, Progress]:
    recorder = Recorder(engine, sweep_id, epochs=spec.train.epochs, expected_trials=spec.num_trials)
    progress = Progress(spec.name, total=spec.num_trials, epochs=spec.train.epochs, metric=spec.metric,
                        mode=spec.mode, console=console)
    return recorder, progress


def _summary(
    console: Console, engine: Engine, spec: SweepSpec, grid: Any, status: str, seconds: float, db: str | None
) -> None:
    results = list(grid)
    errors = [r for r in results if r.error is not None]
    best = None
    for r in results:
        value = (r.metrics or {}).get(spec.metric)
        if isinstance(value, (int, float)) and (best is None or (value < best[0]) == (spec.mode == "min")):
            best = (value, r)
    console.print()
    verdict = {"finished": "[green]finished[/]", "failed": "[red]finished with failed trials[/]",
               "interrupted": "[yellow]interrupted[/]"}.get(status, status)
    console.print(f"Sweep [bold]{spec.name}[/] {verdict} in {duration(seconds)}: {len(results)} trials, "
                  f"{len(errors)} failed.", highlight=False)
    if best is not None:
        console.print(f"Best final {spec.metric}: {best[0]:.4f} ({trial_label(best[1].config)})", highlight=False)
    for r in errors[:5]:
        first = str(r.error).strip().splitlines()[-1] if str(r.error).strip() else type(r.error).__name__
        console.print(f"  failed: {trial_label(r.config)}: {first[:200]}", highlight=False)
    _grid_table(console, engine, spec.name)
    if status == "interrupted":
        console.print(f"Resume with: python -m orchestrator resume {spec.name}{_db_flag(db)}", highlight=False)
    _print_commands(console, spec.name, db)


def _grid_table(console: Console, engine: Engine, name: str) -> None:
    """The sweep's grid_results (mean and std over seeds of the final errors), when short."""
    from rich.table import Table

    from db import queries

    frame = queries.grid(engine, name)
    if frame.empty or len(frame) > 40:
        return
    table = Table("depth", "block", "shortcut", "seeds", "train_err", "test_err",
                  title="final errors, mean ± std over seeds (finished trials)", title_justify="left")
    for row in frame.itertuples(index=False):
        table.add_row(str(row.depth), row.block, row.shortcut, str(row.n_seeds),
                      _mean_std(row.train_err_mean, row.train_err_std), _mean_std(row.test_err_mean, row.test_err_std))
    console.print(table)


def _mean_std(mean: float | None, std: float | None) -> str:
    if mean is None or mean != mean:
        return "-"
    return f"{mean:.4f}" + (f" ± {std:.4f}" if std is not None and std == std else "")


def _print_commands(console: Console, name: str, db: str | None) -> None:
    flag = _db_flag(db)
    console.print("Look at the results:", highlight=False)
    console.print(f"  python -m orchestrator status {name}{flag}", highlight=False, soft_wrap=True)
    console.print(f"  python -m orchestrator query \"SELECT * FROM grid_results WHERE sweep = '{name}'\"{flag}",
                  highlight=False, soft_wrap=True)
    console.print(f"  python -m orchestrator dashboard{flag}", highlight=False, soft_wrap=True)


def _db_flag(db: str | None) -> str:
    """The --db option to repeat in advice: only when one was given (passwords hidden)."""
    return f" --db '{redact(resolve_url(db))}'" if db else ""


def _renamed(spec: SweepSpec, text: str, new_name: str, source: str) -> tuple[SweepSpec, str]:
    """The spec under another name, and its text with the `name:` line rewritten to match."""
    new_text, count = re.subn(r"^name:.*$", f"name: {new_name}", text, count=1, flags=re.MULTILINE)
    if count == 0:
        raise UserError(f"{source}: name: no top-level `name:` line to rename")
    try:
        return parse_spec(new_text, f"{source} (--new-name)"), new_text
    except SpecError as exc:
        raise UserError(f"--new-name {new_name!r}: {exc.problems[0].split(': ', 2)[-1]}") from None


def _ensure_dataset(spec: SweepSpec) -> None:
    """Fail before anything starts when CIFAR is neither on disk nor downloadable."""
    if spec.dataset in ("cifar10", "cifar100"):
        from trainers.data import ensure_dataset  # imports torch: only for datasets on disk

        ensure_dataset(spec.dataset, spec.base_config()["data_dir"])


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


def _journal_attached(spec: SweepSpec, engine: Engine) -> AbstractContextManager:
    if spec.search.algorithm != "optuna":
        return nullcontext()  # and Optuna stays unimported
    from db import optuna_journal

    return optuna_journal.attach(engine)


def optuna_study(db: str | Engine | None, sweep_name: str) -> Any:
    """The Optuna study of the optuna sweep `sweep_name` in the database `db` (a URL, an Engine,
    or None for $RESWEEP_DB), loaded from its journal (for inspection and tests)."""
    import optuna
    from optuna.storages import JournalStorage

    from db.optuna_journal import SqlJournalBackend

    engine = db if isinstance(db, Engine) else get_engine(db, create=False)
    row = writes.get_sweep(engine, sweep_name)
    if row is None:
        raise UserError(f"no sweep named {sweep_name!r} in {redact(engine)}")
    storage = JournalStorage(SqlJournalBackend(engine, row.id))
    return optuna.load_study(study_name=study_name(sweep_name), storage=storage)


def _start_ray(address: str | None) -> bool:
    """Join `address`, or start a local Ray sized to this machine; True if we started one."""
    if ray.is_initialized():
        return False
    if address is not None:
        _check_reachable(address)
    for name in ("ray", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR, configure_logging=True)
    except (ConnectionError, ValueError, RuntimeError, TimeoutError) as exc:
        if address is None:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"--address {address}: cannot join a Ray cluster there ({first[:200]}); start one with "
                        "`ray start --head` on that machine, or leave --address out for a local Ray") from None
    return True


def _check_reachable(address: str) -> None:
    """Refuse an address nothing listens on: ray.init would retry it for minutes."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address {address}: not HOST:PORT (e.g. 10.0.0.5:6379, or ray://10.0.0.5:10001)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise UserError(f"--address {address}: nothing answers there ({exc.strerror or exc}); start the head with "
                        "`ray start --head` on that machine, or leave --address out for a local Ray") from None
