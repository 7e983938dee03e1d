"""The SQL views users query: `metrics` (one row per value: trial_id, epoch, name, value),
`trial_results` (one row per trial) and `grid_results` (one row per grid point, mean and std
over seeds).

`metrics` is the documented relation of every stored value, by name; the values themselves live
in `metric_values` with the name as a small integer (`metric_names`), which halves the bytes a
point costs. `trial_results` reads each trial's epochs, final and best errors from
`trial_summaries`, one row per trial that `db.writes` recomputes from the trial's metric_values in
the transaction that writes them: a filter over thousands of trials then reads one row per trial,
not each trial's curve (migration 0009; before it the view aggregated metric_values itself).
`grid_results` reads each grid point's pooled numbers from `grid_summaries`, which `db.writes`
recomputes from that point's trials whenever they change (`GRID_POOLING` is the definition): a
sweep's grid reads one row per grid point, not every trial (migration 0011; before it the view
pooled trial_results itself).

The SQL is portable: the same text runs on SQLite (the library and the `sqlite3` shell) and
PostgreSQL (`psql`). Migrations create the views from a frozen copy of this text; a change here
needs a new migration that drops and recreates them (tests/db/test_schema.py checks the head
migration's copy equals this one).

Definitions:
- A trial's recorded epochs are those with a `train_err` row: every reported result carries
  `train_err` (see the report contract). `epochs` counts them (0 for a trial with none);
  "final" values are those at the last of them (NULL if that epoch lacks the metric);
  `best_test_err` is the minimum `test_err` over all epochs (`db.writes.SUMMARY_UPSERT` keeps
  them).
- `grid_results` aggregates the final values of the finished trials (status `terminated`) of
  each grid point: `n_seeds` counts them, `*_std` is the sample standard deviation (n - 1; NULL
  for one seed), computed in two passes (the mean, then squared deviations from it) so it is
  exact and needs only `sqrt`, which SQLite >= 3.35 and PostgreSQL both have. A point with no
  finished trial has no row. `db.writes.GRID_POOLING` computes a point's numbers.
"""

from __future__ import annotations

METRICS = """\
CREATE VIEW metrics AS
SELECT v.trial_id, v.epoch, n.name, v.value
FROM metric_values AS v
JOIN metric_names AS n ON n.id = v.name_id"""

TRIAL_RESULTS = """\
CREATE VIEW trial_results AS
SELECT
    s.name AS sweep,
    t.id AS trial_id,
    t.dataset,
    t.model,
    t.depth,
    t.block,
    t.shortcut,
    t.seed,
    t.status,
    coalesce(f.epochs, 0) AS epochs,
    f.final_train_err,
    f.final_test_err,
    f.best_test_err,
    t.params_count
FROM trials AS t
JOIN sweeps AS s ON s.id = t.sweep_id
LEFT JOIN trial_summaries AS f ON f.trial_id = t.id"""

GRID_RESULTS = """\
CREATE VIEW grid_results AS
SELECT
    s.name AS sweep,
    g.dataset,
    g.model,
    g.depth,
    g.block,
    g.shortcut,
    g.n_seeds,
    g.train_err_mean,
    g.train_err_std,
    g.test_err_mean,
    g.test_err_std
FROM grid_summaries AS g
JOIN sweeps AS s ON s.id = g.sweep_id
WHERE g.n_seeds > 0"""

# Creation order; drop in reverse (grid_results reads trial_results).
VIEWS = {"metrics": METRICS, "trial_results": TRIAL_RESULTS, "grid_results": GRID_RESULTS}
