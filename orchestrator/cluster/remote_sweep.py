"""What every way of running a sweep away from this machine needs: a valid sweep, a database
every node can reach, and the project's code.

`submit` (Ray Jobs), `slurm` (an sbatch script) and `k8s` (a KubeRay RayJob) all start the same
driver, `python -m orchestrator launch SWEEP --db URL`, somewhere else. They check here, before
anything leaves this machine, what would otherwise fail there, hours later or silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from db.engine import Database, redact, sqlite_path
from resweep.errors import UserError
from orchestrator.run.provenance import PROJECT_DIR
from orchestrator.run.spec import SweepSpec, load_spec


@dataclass(frozen=True)
class RemoteSweep:
    """A validated sweep file and the database its remote driver will write to."""

    path: Path  # absolute
    spec: SweepSpec
    text: str
    db_url: str  # resolved, password included: show it only through `db_shown`

    @property
    def db_shown(self) -> str:
        return redact(self.db_url)


def prepare(sweep: str | Path, db: Database) -> RemoteSweep:
    """Validate the sweep file and the database URL for a run on other machines."""
    spec, text = load_spec(sweep)
    return RemoteSweep(path=Path(sweep).resolve(), spec=spec, text=text, db_url=remote_db_url(db))


def remote_db_url(db: Database) -> str:
    """The resolved database URL (--db, $RESWEEP_DB, default), refused if only this machine has it.

    The driver runs on the cluster's head node: a relative SQLite path (the default
    `sqlite:///resweep.db` included) would be resolved there, and the results would stay there.
    """
    url = db.url
    if url.startswith("sqlite"):
        path = sqlite_path(url)
        if path is None or not path.is_absolute():
            raise UserError(
                f"--db {redact(url)}: a relative or in-memory SQLite database would keep the results "
                "on the cluster's head node; pass a PostgreSQL URL (--db postgresql://USER@HOST/DB) "
                "or an absolute path on a filesystem every node shares (--db sqlite:////shared/resweep.db)"
            )
    return url


def launch_command(sweep_arg: str, db_arg: str, *, resume: bool = False, results: str | None = None,
                   python: str = "python") -> list[str]:
    """The driver's command line, as `orchestrator launch` takes it (DESIGN.md, Command line)."""
    argv = [python, "-m", "orchestrator", "launch", sweep_arg, "--db", db_arg]
    if results:
        argv += ["--results", results]
    return argv + (["--resume"] if resume else [])


def sweep_path_in_project(path: Path) -> str | None:
    """The sweep's path relative to the project directory, or None when it lies outside."""
    try:
        return path.resolve().relative_to(PROJECT_DIR).as_posix()
    except ValueError:
        return None
