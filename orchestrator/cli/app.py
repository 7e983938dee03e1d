"""The `python -m orchestrator` command line: one Typer app, thin commands over the rooms below.

Each command parses its options, calls into the module that does the work, and lets errors a user
can cause (`UserError`, `StoreError`) end as one line on stderr with exit status 2
(orchestrator/cli/options.py).

`--db` is taken in here only: each command makes one `db.engine.Database` of it (resolved once,
at first use) and passes that, or the engine it opens, inward.

Every command is registered below, by name, from the module that holds it; no command module
imports this one.
"""

from __future__ import annotations

import gc

import typer

from orchestrator.cli import cluster, dashboard, report, results, run, store
from orchestrator.run import stops

app = typer.Typer(
    name="orchestrator",
    help="resweep: residual-network studies as Ray Tune sweeps, results in one SQL database.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)

for name, command in (
    ("launch", run.launch),
    ("resume", run.resume),
    ("status", run.status),
    ("query", store.query),
    ("report", report.report),
    ("model", results.model),
    ("export", results.export),
    ("dashboard", dashboard.dashboard),
    ("submit", cluster.submit_cmd),
    ("jobs", cluster.jobs_cmd),
    ("stop", cluster.stop_cmd),
    ("slurm", cluster.slurm_cmd),
    ("k8s", cluster.k8s_cmd),
):
    app.command(name)(command)
db_app.command("upgrade")(store.upgrade)
db_app.command("import")(store.import_)
app.add_typer(db_app, name="db")


def main() -> None:
    try:
        app(prog_name="python -m orchestrator")
    except SystemExit:
        stops.exiting()  # the status is decided: a Ctrl-C from here on changes nothing
        # Python's shutdown would run the cyclic collector over every object the command made or
        # imported (Ray, SQLAlchemy, pandas); frozen objects are left to the process's end.
        # Reference counting still closes files and connections and atexit handlers still run:
        # only garbage in reference cycles goes uncollected at exit.
        gc.freeze()
        raise
