"""resweep: residual-network studies as sweeps. This package is the ground floor (DESIGN.md).

`import resweep` stays light (no torch, ray, streamlit or sqlalchemy): the notebook API's front
door, `resweep.open(URL)`, imports the database layer inside the call. `resweep.paper` holds the
papers' names (net labels, the grid's axes) and reference numbers with what kind of number each
is; `resweep.pooling` pools seeds into each grid point's mean and std; `resweep.stats` writes a
mean ± std and gives the differences between grid cells with 95 % intervals.

    import resweep
    db = resweep.open("sqlite:///resweep.db")   # or a postgresql:// URL; None: $RESWEEP_DB
    db.sweeps()                                 # pandas DataFrames, columns as in resweep.results
    db.grid("quickstart")                       # Table 6: mean and std over seeds per grid point
    db.curves("quickstart", "train_err", shortcut="none")
    net = db.model(trial_id)                    # the trained nn.Module, eval mode
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from resweep.results import Results

__all__ = ["open", "load_model"]


def open(url: str | None = None) -> Results:  # noqa: A001 (the notebook's front door: resweep.open)
    """The result database at `url` (else $RESWEEP_DB, else sqlite:///resweep.db), read-only use.

    Never creates a database; one behind the code's schema is refused with the upgrade command.
    Close it with `.close()` or use it in a `with` block.
    """
    from resweep.results import Results  # imports db (SQLAlchemy, pandas) here, not at import time

    return Results(url)


def load_model(trial_id: int, db: str | None = None) -> Any:
    """The trained network of trial `trial_id` (torch `nn.Module`, eval mode, CPU) from the
    database at `db`: its config from the database, its weights from its latest checkpoint."""
    with open(db) as results:
        return results.model(trial_id)
