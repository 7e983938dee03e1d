"""Pages over sweeps too big to draw whole: what Curves and Layer responses pool, the Trial
page's menu. The caps are lowered here (monkeypatch) so a sweep of a few trials binds them, as
20,000 trials bind the real ones (benchmarks/dashboard_bench.py times those)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from dashboard import choices
from db import writes
from db.engine import get_engine
from tests.dashboard.test_pages import figure, open_page, traces, values

SWEEP = "many-seeds"
SEEDS = 5
NETS = ((20, "none"), (20, "A"))


def final_error(depth: int, shortcut: str, seed: int, epoch: int) -> float:
    """Seed s of a net ends 1 point higher than seed s - 1; errors fall 10 points an epoch."""
    return round((0.10 if shortcut == "none" else 0.05) + 0.01 * seed + 0.1 * (2 - epoch), 6)


@pytest.fixture(scope="module")
def many_seeds(tmp_path_factory) -> str:
    """Two nets of SEEDS seeds each, two epochs, layer responses at epoch 2."""
    url = f"sqlite:///{tmp_path_factory.mktemp('big') / 'r.db'}"
    engine = get_engine(url)
    sweep = writes.create_sweep(engine, name=SWEEP, spec=f"name: {SWEEP}\n", spec_hash="2" * 64)
    for depth, shortcut in NETS:
        for seed in range(SEEDS):
            config = {"dataset": "cifar10", "model": "cifar", "depth": depth, "block": "basic",
                      "shortcut": shortcut, "seed": seed, "epochs": 2}  # fmt: skip
            trial = writes.upsert_trial(engine, sweep, f"t_{depth}_{shortcut}_{seed}", status="running", config=config)
            for epoch in (1, 2):
                err = final_error(depth, shortcut, seed, epoch)
                layers = [{"layer": i, "name": f"conv{i}", "stage": 1, "std": 1.0 + seed, "mean": 0.0}
                          for i in range(3)] if epoch == 2 else None  # fmt: skip
                writes.record_result(engine, trial, epoch, {"train_err": err, "test_err": err}, layers)
            writes.set_trial_status(engine, trial, "terminated", ended=True)
    writes.set_sweep_status(engine, sweep, "finished", finished=True)
    engine.dispose()
    return url


def nets(n_seeds: int, n_nets: int = 1) -> pd.DataFrame:
    return pd.DataFrame([{"trial_id": 100 * k + s, "sweep": "s", "dataset": "cifar10", "model": "cifar",
                          "depth": 20 + 12 * k, "block": "basic", "shortcut": "A", "seed": s}
                         for k in range(n_nets) for s in range(n_seeds)])  # fmt: skip


def test_drawn_keeps_at_most_the_cap_of_each_net_spread_over_its_seeds():
    trials = nets(1000, n_nets=2)
    kept = choices.drawn(trials, 5)
    assert kept.groupby("depth").size().tolist() == [5, 5]
    assert sorted(kept.loc[kept["depth"] == 20, "seed"]) == [0, 250, 500, 749, 999]
    assert kept.index.is_monotonic_increasing  # the frame's own order


def test_drawn_leaves_a_frame_whose_nets_fit_the_cap_as_it_is():
    trials = nets(3, n_nets=4)
    assert choices.drawn(trials, 3) is trials


def test_the_budget_is_shared_by_the_nets_with_two_seeds_each_at_least():
    assert choices.per_net(nets(10, n_nets=4), budget=20) == 5
    assert choices.per_net(nets(10, n_nets=40), budget=20) == 2


def hovers(at, group: str) -> str:
    return " ".join(t.hovertemplate for t in figure(at).data if t.fill is None and t.legendgroup == group)


def band_top(at, group: str) -> list[float]:
    """The upper edge of the group's test band (drawn first), epoch by epoch."""
    band = next(t for t in figure(at).data if t.fill == "toself" and t.legendgroup == group)
    return values(band.y)[:2]


def test_curves_of_nets_past_the_cap_pool_a_spread_of_seeds_and_say_so(many_seeds, monkeypatch):
    monkeypatch.setattr(choices, "DRAWN", 4)  # two nets: two seeds of each, the lowest and the highest
    at = open_page(many_seeds, "curves", monkeypatch, sweep=SWEEP)
    # ResNet-20 (A): seeds 0 and 4 end at 5 % and 9 %: mean 7, std 2 sqrt(2)
    assert traces(at)["ResNet-20 (A)", "test"] == pytest.approx([17.0, 7.0])
    assert band_top(at, "ResNet-20 (A)") == pytest.approx([17 + 2 * math.sqrt(2), 7 + 2 * math.sqrt(2)])
    assert "mean of 2 seeds" in hovers(at, "ResNet-20 (A)")
    caption = at.main.caption[-1].value
    assert "4 of the 10 trials pooled" in caption and "6 are not drawn" in caption
    assert at.query_params["pool"] == choices.POOL_SAMPLE


def test_curves_pool_every_trial_when_the_link_asks_for_all(many_seeds, monkeypatch):
    monkeypatch.setattr(choices, "DRAWN", 4)
    at = open_page(many_seeds, "curves", monkeypatch, sweep=SWEEP, pool=choices.POOL_ALL)
    std = math.sqrt(sum((x - 7) ** 2 for x in range(5, 10)) / 4)  # seeds 0-4 end at 5..9 %
    assert band_top(at, "ResNet-20 (A)") == pytest.approx([17 + std, 7 + std])
    assert "mean of 5 seeds" in hovers(at, "ResNet-20 (A)")
    assert "All 10 trials pooled" in at.main.caption[-1].value


def test_curves_of_a_sweep_within_the_cap_have_no_pool_control(many_seeds, monkeypatch):
    at = open_page(many_seeds, "curves", monkeypatch, sweep=SWEEP)
    assert "pool" not in at.query_params and "pooled" not in at.main.caption[-1].value


def test_layer_responses_pool_the_same_spread_of_seeds(many_seeds, monkeypatch):
    monkeypatch.setattr(choices, "DRAWN", 4)
    at = open_page(many_seeds, "layers", monkeypatch, sweep=SWEEP)
    forward = next(t for t in figure(at).data if t.legendgroup == "plain-20")
    assert values(forward.y) == pytest.approx([3.0, 3.0, 3.0])  # seeds 0 and 4: std 1 and 5
    assert "4 of the 10 trials pooled" in at.main.caption[-1].value
    at = open_page(many_seeds, "layers", monkeypatch, sweep=SWEEP, pool=choices.POOL_ALL)
    assert "10 trials; All 10 trials pooled" in at.main.caption[-1].value


def test_the_trial_menu_lists_a_bounded_number_and_the_linked_trial(many_seeds, monkeypatch):
    monkeypatch.setattr(choices, "LISTED", 3)
    at = open_page(many_seeds, "trial", monkeypatch, sweep=SWEEP, trial="9")
    menu = at.selectbox(key="trial")
    assert [o.split(" · ")[0] for o in menu.options] == ["1", "2", "3", "9"]
    assert menu.value == 9 and at.subheader[0].value.startswith("ResNet-20 A seed 3")
    assert "lists 4 of the 10 trials" in " ".join(c.value for c in at.main.caption)


def test_the_benchmarks_database_is_what_db_writes_would_have_made(tmp_path):
    """benchmarks/dashboard_bench.py's builder: `bench` newest, finished, its summaries and grid
    kept as db.writes keeps them, probes only at recorded epochs."""
    from benchmarks import dashboard_bench

    url = f"sqlite:///{tmp_path / 'bench.db'}"
    dashboard_bench.build(url, 40, 3, others=2, other_trials=10, other_epochs=2)
    engine = get_engine(url, create=False)
    with engine.connect() as conn:
        sql = conn.exec_driver_sql
        assert sql("SELECT name, status FROM sweeps ORDER BY created_at DESC, id DESC").first() == ("bench", "finished")
        assert sql("SELECT count(*), min(epochs), max(epochs) FROM trial_results WHERE sweep = 'bench'").first() == (40, 3, 3)
        assert sql("SELECT sum(n_seeds) FROM grid_results WHERE sweep = 'bench'").scalar() == 40
        assert sql("SELECT count(*) FROM trial_results").scalar() == 60
        assert sql("SELECT max(epoch) FROM layer_stats").scalar() == 3
    engine.dispose()
