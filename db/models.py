"""The tables of resweep's result store: the only definition of the schema.

One row per sweep, one per trial, one per attempt of a trial, one per (trial, metric, epoch), one
per (trial, epoch, layer), one summary per trial (derived from its metric values, kept on
every write), one per sweep and grid point (its seeds pooled, kept likewise), one per sweep
(its trials counted, kept by triggers), and one per log of an optuna sweep's study journal.
The `metrics` relation users query (trial_id, epoch, name, value) is a view (db/views.py) over
metric_values and metric_names.
Every table's natural key is unique, so every write can be an upsert (see `db.writes`); the
journal is only appended to (see `db.optuna_journal`).
Each column's `comment` is its documentation; PostgreSQL stores it (`\\d+ trials` in psql).

New databases are never made from this module with `create_all`: they are created by migrating
(`db.engine.upgrade`), and `tests/db/test_schema.py` checks that the migrated schema equals
this one.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SWEEP_STATUSES = ("running", "finished", "failed", "interrupted")
TRIAL_STATUSES = ("pending", "running", "terminated", "error", "stopped")  # sweep_summaries counts each (n_<status>)
# Each metric a trial reports, with its id in metric_names. The ids are stored in every database
# (migration 0007 seeded 1..10), so they never change: a new metric appends with the next id, and a
# migration inserts it into metric_names (db/migrate.py says how). Writes use these ids without a
# lookup; tests/db/test_schema.py checks that the migrated database holds exactly these. Ids 1..10
# happen to be alphabetical, so db.queries.curves reads them in name order without a sort.
METRIC_IDS = {
    "epoch_time_s": 1, "images_per_s": 2, "lr": 3,
    "test_err": 4, "test_loss": 5, "train_err": 6, "train_loss": 7, "val_err": 8, "val_loss": 9,
    "warmup_iterations": 10,  # once, at the epoch whose iteration ended the warm-up (trainers/loop.py)
}  # fmt: skip
METRIC_NAMES = tuple(METRIC_IDS)  # the names the recorder stores

# Named constraints make migrations (and error messages) stable across backends.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite keeps no zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(timezone.utc)
            if dialect.name == "sqlite":
                value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: sa.JSON, float: sa.Double, datetime: UTCDateTime}


class Sweep(Base):
    """One launched sweep file."""

    __tablename__ = "sweeps"
    __table_args__ = (
        sa.UniqueConstraint("name"),
        sa.CheckConstraint(_in("status", SWEEP_STATUSES), name="status"),
        {"comment": "One row per launched sweep file."},
    )

    id: Mapped[int] = mapped_column(primary_key=True, comment="Surrogate key.")
    name: Mapped[str] = mapped_column(sa.String(200), comment="The sweep's name, unique per database.")
    spec: Mapped[str] = mapped_column(sa.Text, comment="The sweep YAML file as launched, verbatim.")
    spec_hash: Mapped[str] = mapped_column(sa.String(64), comment="SHA-256 of the normalised spec.")
    git_commit: Mapped[str | None] = mapped_column(
        sa.String(40), comment="Commit of the code that ran the sweep (NULL outside git)."
    )
    git_dirty: Mapped[bool | None] = mapped_column(
        comment="Whether the working tree had uncommitted changes at launch."
    )
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), comment="When the sweep was first launched (UTC)."
    )
    finished_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime(), comment="When the sweep ended (UTC); NULL while it runs."
    )
    status: Mapped[str] = mapped_column(
        sa.String(16), comment="running | finished | failed | interrupted."
    )
    storage_path: Mapped[str | None] = mapped_column(
        sa.Text, comment="Ray Tune's experiment directory (checkpoints, for resume)."
    )


class Trial(Base):
    """One Ray Tune trial: one grid point (plus searched hyperparameters)."""

    __tablename__ = "trials"
    __table_args__ = (
        sa.UniqueConstraint("sweep_id", "trial_key"),
        sa.CheckConstraint(_in("status", TRIAL_STATUSES), name="status"),
        sa.Index(None, "sweep_id", "status"),
        # A grid point's trials (db.writes keeps grid_summaries from them; filters by axis read them).
        sa.Index("ix_trials_grid_point", "sweep_id", "depth", "shortcut", "block", "dataset", "model", "status"),
        {"comment": "One row per Ray Tune trial of a sweep."},
    )

    id: Mapped[int] = mapped_column(primary_key=True, comment="Surrogate key.")
    sweep_id: Mapped[int] = mapped_column(
        sa.ForeignKey("sweeps.id", ondelete="CASCADE"), comment="The sweep the trial belongs to."
    )
    trial_key: Mapped[str] = mapped_column(
        sa.String(64), comment="Ray Tune's trial id, unique within the sweep."
    )
    status: Mapped[str] = mapped_column(
        sa.String(16), comment="pending | running | terminated | error | stopped."
    )
    dataset: Mapped[str] = mapped_column(
        sa.String(32), comment="cifar10 | cifar100 | digits | synthetic."
    )
    model: Mapped[str] = mapped_column(sa.String(32), comment="cifar (6n+2) | imagenet.")
    depth: Mapped[int] = mapped_column(comment="Number of weighted layers (20, 56, 110, 50, ...).")
    block: Mapped[str] = mapped_column(
        sa.String(32), comment="basic | bottleneck | preact | preact_bottleneck."
    )
    shortcut: Mapped[str] = mapped_column(
        sa.String(8), comment="none (plain net) | A | B | C, as in the paper's Table 3."
    )
    seed: Mapped[int] = mapped_column(comment="Random seed of the trial.")
    config: Mapped[dict[str, Any]] = mapped_column(
        comment="Every hyperparameter of the trial: the flat trial config as JSON."
    )
    params_count: Mapped[int | None] = mapped_column(
        sa.BigInteger, comment="Number of trainable parameters of the network."
    )
    started_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime(), comment="When the trial first started (UTC)."
    )
    ended_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime(), comment="When the trial last ended (UTC)."
    )
    error: Mapped[str | None] = mapped_column(
        sa.Text, comment="The error of a failed trial (status error)."
    )
    checkpoint_uri: Mapped[str | None] = mapped_column(
        sa.Text,
        comment="The trial's latest checkpoint directory as Ray Tune saved it: a local path, or a URI "
        "such as s3://bucket/prefix/... (NULL until its first checkpoint).",
    )
    node_ip: Mapped[str | None] = mapped_column(
        sa.String(64), comment="IP of the Ray node that ran the trial's latest attempt."
    )
    hostname: Mapped[str | None] = mapped_column(
        sa.String(255), comment="Host name of the node that ran the trial's latest attempt."
    )
    attempts: Mapped[int] = mapped_column(
        server_default="0",
        comment="How many times the trial was started: 1 + restarts (0: never started).",
    )


class TrialAttempt(Base):
    """One attempt of one trial: where it ran, when, and why it failed (written by `db.writes.start_attempt` and the calls beside it)."""

    __tablename__ = "trial_attempts"
    __table_args__ = (
        sa.UniqueConstraint("trial_id", "attempt"),
        {"comment": "Every attempt of every trial: a failure and its host stay after a successful retry."},
    )

    id: Mapped[int] = mapped_column(primary_key=True, comment="Surrogate key.")
    trial_id: Mapped[int] = mapped_column(
        sa.ForeignKey("trials.id", ondelete="CASCADE"), comment="The trial this attempt ran."
    )
    attempt: Mapped[int] = mapped_column(comment="1-based number of the attempt within its trial.")
    node_ip: Mapped[str | None] = mapped_column(
        sa.String(64), comment="IP of the Ray node the attempt ran on (NULL: never known)."
    )
    hostname: Mapped[str | None] = mapped_column(sa.String(255), comment="Host name of that node.")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), comment="When the attempt started (UTC).")
    ended_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime(), comment="When it ended (UTC); NULL while it runs."
    )
    error: Mapped[str | None] = mapped_column(sa.Text, comment="Why the attempt failed; NULL if it did not.")


class MetricName(Base):
    """A metric's name, stored once; metric_values refer to it by a small integer."""

    __tablename__ = "metric_names"
    __table_args__ = (
        sa.UniqueConstraint("name"),
        {"comment": "The metric names, each once: metric_values holds their ids."},
    )

    id: Mapped[int] = mapped_column(
        sa.SmallInteger, primary_key=True, autoincrement=False,
        comment="1..10 are METRIC_NAMES in alphabetical order (seeded by the migration); others are added as reported.",
    )  # fmt: skip
    name: Mapped[str] = mapped_column(
        sa.String(64), comment="train_loss, train_err, test_loss, test_err, val_loss, val_err, lr, ..."
    )


class MetricValue(Base):
    """One value of one metric of one trial at one epoch: what the `metrics` view shows by name."""

    __tablename__ = "metric_values"
    # The natural key is the primary key, the name a small integer, and no second index: on
    # SQLite the table is clustered on the key (WITHOUT ROWID), so a trial's curve is one
    # contiguous range, its best value a scan of that range, and a point costs about 22 bytes
    # (61 with the name as text and a (trial, name, value) index; docs/performance.md). On
    # PostgreSQL the key's index carries the value (INCLUDE, migration 0008): the same reads are
    # index-only scans, not one heap page per epoch.
    __table_args__ = (
        sa.PrimaryKeyConstraint("trial_id", "name_id", "epoch", postgresql_include=["value"]),
        {"comment": "Per-epoch metrics of every trial, one row per value (read them through the metrics view).",
         "sqlite_with_rowid": False},
    )  # fmt: skip

    trial_id: Mapped[int] = mapped_column(
        sa.ForeignKey("trials.id", ondelete="CASCADE"), comment="The trial that reported it."
    )
    name_id: Mapped[int] = mapped_column(
        sa.SmallInteger, sa.ForeignKey("metric_names.id"), comment="The metric (metric_names.id)."
    )
    epoch: Mapped[int] = mapped_column(comment="Epochs completed when reported (1-based).")
    value: Mapped[float | None] = mapped_column(
        comment="The value; errors are fractions in [0, 1]; NULL when the trial reported NaN."
    )


class TrialSummary(Base):
    """A trial's results at a glance, derived from its metric_values: what `trial_results` shows.

    Kept by `db.writes.record_results` in the same transaction as the values it summarises: a
    result that appends epochs updates it from the new values, any rewrite of an epoch already
    stored recomputes it from metric_values, so it stays exact through replays and retries.
    Reading these few columns instead of aggregating a trial's curve is what makes filtering
    trials by axis cost one row per trial (docs/performance.md). Definitions as in db/views.py.
    """

    __tablename__ = "trial_summaries"
    __table_args__ = (
        {"comment": "Per-trial epochs, final and best errors, derived from metric_values on every write."},
    )

    trial_id: Mapped[int] = mapped_column(
        sa.ForeignKey("trials.id", ondelete="CASCADE"), primary_key=True, autoincrement=False,
        comment="The trial summarised.",
    )  # fmt: skip
    epochs: Mapped[int] = mapped_column(comment="Recorded epochs: the trial's train_err rows.")
    final_epoch: Mapped[int | None] = mapped_column(comment="The last of them (NULL: none recorded).")
    final_train_err: Mapped[float | None] = mapped_column(comment="train_err at final_epoch.")
    final_test_err: Mapped[float | None] = mapped_column(comment="test_err at final_epoch (NULL: not reported).")
    best_test_err: Mapped[float | None] = mapped_column(comment="The minimum test_err over all epochs.")
    last_epoch: Mapped[int | None] = mapped_column(
        comment="The latest epoch with a train_err or test_err row: a write after it only appends."
    )


class GridSummary(Base):
    """One grid point of one sweep, its seeds pooled: what `grid_results` shows.

    Kept by `db.writes` in the transaction of every write that can change a grid point's finished
    trials or their finals (a result of a terminated trial, a trial's status or axes, a sweep's
    interruption), recomputed from that point's trials alone with the definitions of db/views.py;
    a trial deleted by hand updates its point through a trigger (migration 0011). Reading these
    rows instead of pooling every trial of the sweep is what makes `grid` cost one row per grid
    point, whatever the number of trials (docs/performance.md). n_seeds 0: no finished trial
    (left out of grid_results).
    """

    __tablename__ = "grid_summaries"
    __table_args__ = (
        sa.PrimaryKeyConstraint("sweep_id", "dataset", "model", "depth", "block", "shortcut"),
        {"comment": "Per sweep and grid point: mean and sample std over seeds of the finished trials' final errors."},
    )

    sweep_id: Mapped[int] = mapped_column(
        sa.ForeignKey("sweeps.id", ondelete="CASCADE"), comment="The sweep the grid point belongs to."
    )
    dataset: Mapped[str] = mapped_column(sa.String(32), comment="The grid point's dataset (trials.dataset).")
    model: Mapped[str] = mapped_column(sa.String(32), comment="Its model family (trials.model).")
    depth: Mapped[int] = mapped_column(comment="Its depth (trials.depth).")
    block: Mapped[str] = mapped_column(sa.String(32), comment="Its block (trials.block).")
    shortcut: Mapped[str] = mapped_column(sa.String(8), comment="Its shortcut (trials.shortcut).")
    n_seeds: Mapped[int] = mapped_column(comment="Finished (terminated) trials of the point; 0: none.")
    train_err_mean: Mapped[float | None] = mapped_column(comment="Mean of their final train_err.")
    train_err_std: Mapped[float | None] = mapped_column(comment="Sample std (n - 1) of it; NULL below two values.")
    test_err_mean: Mapped[float | None] = mapped_column(comment="Mean of their final test_err.")
    test_err_std: Mapped[float | None] = mapped_column(comment="Sample std (n - 1) of it; NULL below two values.")


class SweepSummary(Base):
    """One sweep's trials counted: what `db.queries.sweeps` lists beside each sweep.

    Kept by triggers of the database itself (migration 0012), so every writer keeps it exact:
    db.writes, a bulk load, a trial updated or deleted by hand. A sweep's row is made when the
    sweep is inserted; a trial inserted, deleted, or updated in its status or sweep moves the
    counts, and a trial_summaries row inserted, deleted or updated in its epochs moves `epochs`.
    A loader that writes with triggers off (PostgreSQL's session_replication_role = replica) calls
    `db.writes.refresh_summaries` after, which recounts its sweeps. Reading one row per sweep
    instead of counting every trial is what makes the sweeps list cost the same however many
    trials the database holds (docs/performance.md).
    """

    __tablename__ = "sweep_summaries"
    __table_args__ = (
        {"comment": "Per sweep: its trials counted by status and the epochs they recorded, kept by triggers."},
    )

    sweep_id: Mapped[int] = mapped_column(
        sa.ForeignKey("sweeps.id", ondelete="CASCADE"), primary_key=True, autoincrement=False,
        comment="The sweep counted.",
    )  # fmt: skip
    n_trials: Mapped[int] = mapped_column(comment="Its trials.")
    n_pending: Mapped[int] = mapped_column(comment="Those pending (not started, or waiting for a retry).")
    n_running: Mapped[int] = mapped_column(comment="Those running.")
    n_terminated: Mapped[int] = mapped_column(comment="Those finished (terminated).")
    n_error: Mapped[int] = mapped_column(comment="Those failed (error).")
    n_stopped: Mapped[int] = mapped_column(comment="Those stopped by the scheduler (stopped).")
    epochs: Mapped[int] = mapped_column(
        sa.BigInteger, comment="The epochs its trials recorded in all: the sum of their trial_summaries.epochs."
    )


class LayerStat(Base):
    """Response statistics of one 3x3 conv layer of one trial at one probed epoch (Fig. 7).

    The response (trainers/probes.py) is the conv's output after the BN that normalises it and before
    any ReLU or addition, over the test set with BN in eval mode: in an original unit its own BN
    (Fig. 7's definition); in a pre-activation unit the BN that next takes the conv's output (the
    unit's next bn, the next unit's bn1 in a plain net, the final bn), so a plain net of either kind of
    unit, computing one function, records the same numbers. Where the output meets a shortcut before
    any BN (the last conv of a residual pre-activation basic unit) it is the raw branch output, just
    before the addition.
    """

    __tablename__ = "layer_stats"
    __table_args__ = (
        sa.PrimaryKeyConstraint("trial_id", "epoch", "layer"),
        {"comment": "Per-layer response statistics at probed epochs.", "sqlite_with_rowid": False},
    )

    trial_id: Mapped[int] = mapped_column(
        sa.ForeignKey("trials.id", ondelete="CASCADE"), comment="The trial that was probed."
    )
    epoch: Mapped[int] = mapped_column(comment="Epochs completed when probed (1-based).")
    layer: Mapped[int] = mapped_column(comment="0-based order of the layer in the forward pass.")
    name: Mapped[str] = mapped_column(sa.String(200), comment="Module path of the conv layer.")
    stage: Mapped[int] = mapped_column(comment="Stage (group of blocks) the layer belongs to.")
    std: Mapped[float | None] = mapped_column(
        comment="Std of the layer's response after BN, before ReLU/addition, over the test set."
    )
    mean: Mapped[float | None] = mapped_column(comment="Mean of the same response (NULL: NaN).")


class OptunaJournal(Base):
    """One log of the Optuna journal of an optuna sweep's study (see `db.optuna_journal`)."""

    __tablename__ = "optuna_journal"
    __table_args__ = (
        sa.UniqueConstraint("sweep_id", "seq"),
        {"comment": "The Optuna study of each optuna sweep, as Optuna's journal: one row per log."},
    )

    id: Mapped[int] = mapped_column(primary_key=True, comment="Surrogate key.")
    sweep_id: Mapped[int] = mapped_column(
        sa.ForeignKey("sweeps.id", ondelete="CASCADE"),
        index=True,
        comment="The sweep whose study the log belongs to.",
    )
    seq: Mapped[int] = mapped_column(
        comment="The log's number within the sweep's journal (0-based, consecutive)."
    )
    log: Mapped[str] = mapped_column(
        sa.Text, comment="One Optuna journal log (an operation on the study) as JSON."
    )
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), comment="When the log was appended (UTC)."
    )
