"""The report's verdicts come from 95 % intervals: pre-activation vs original units, ours vs the
papers' numbers like with like, and one seed that cannot be judged (frames built by hand)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from scipy import stats as scipy_stats

from orchestrator.results.report.findings import (
    INCONCLUSIVE, NOT_CONTRADICTED, NOT_REPRODUCED, REPRODUCED, UNJUDGED, cure, deeper_residual, degradation,
    paper_numbers, preactivation, shortcut_options,
)


def _row(depth, block, shortcut, test, test_std, n=3, train=0.01, train_std=0.001, dataset="cifar10", best=None):
    return dict(dataset=dataset, model="cifar", depth=depth, block=block, shortcut=shortcut, n_seeds=n,
                train_err_mean=train, train_err_std=train_std, test_err_mean=test, test_err_std=test_std,
                test_err_best=best if best is not None else test - test_std)


def test_preactivation_holds_when_the_whole_interval_is_below_zero():
    # 8.0 vs 10.0 %, std 0.5 each over 3 seeds: Welch se = sqrt(2 * 0.25 / 3) = 0.408, df = 4,
    # t(0.975, 4) = 2.776: -2.00 +- 1.13 = [-3.13, -0.87].
    grid = pd.DataFrame([_row(20, "basic", "A", 0.10, 0.005), _row(20, "preact", "A", 0.08, 0.005)])
    [f] = preactivation(grid)
    assert f.status == REPRODUCED
    assert f.evidence[0].startswith("ResNet-20 (A, preact) final test error 8.00 ± 0.50 % < ResNet-20 (A) "
                                    "10.00 ± 0.50 %: holds; difference -2.00 points (95 % CI -3.13 to -0.87)")


def test_preactivation_is_inconclusive_when_the_interval_straddles_zero():
    grid = pd.DataFrame([_row(164, "bottleneck", "B", 0.060, 0.01), _row(164, "preact_bottleneck", "B", 0.055, 0.01)])
    [f] = preactivation(grid)
    assert f.status == INCONCLUSIVE and "inconclusive (the interval includes 0)" in f.evidence[0]


def test_one_seed_cannot_be_judged_whatever_the_means():
    grid = pd.DataFrame([_row(56, "basic", "none", 0.20, float("nan"), n=1, train=0.2, train_std=float("nan")),
                         _row(56, "basic", "A", 0.10, float("nan"), n=1, train=0.05, train_std=float("nan"))])
    [f] = cure(grid)
    assert f.status == UNJUDGED and f.evidence[0].endswith("cannot be judged (one seed: no interval); "
                                                           "test error 10.00 % vs 20.00 %")


@pytest.mark.parametrize("n", [2, 3])
def test_cells_without_spread_cannot_be_judged(n):
    # every seed of both nets at the same training error: no interval, not a zero-width "holds"
    grid = pd.DataFrame([_row(56, "basic", "none", 0.30, 0.01, n=n, train=0.25, train_std=0.0),
                         _row(56, "basic", "A", 0.05, 0.01, n=n, train=0.0, train_std=0.0)])
    [f] = cure(grid)
    assert f.status == UNJUDGED
    assert "cannot be judged (no spread: every seed gave the same value, so no interval)" in f.evidence[0]
    res = pd.DataFrame([_row(d, "basic", "A", 0.05, 0.01, n=n, train=0.0, train_std=0.0) for d in (20, 56)])
    [f] = deeper_residual(res)
    assert f.status == UNJUDGED


@pytest.mark.parametrize(("n", "plain56_std", "status"), [(2, 0.05, REPRODUCED), (3, 0.05, REPRODUCED),
                                                          (2, 0.30, INCONCLUSIVE), (3, 0.40, INCONCLUSIVE)])
def test_the_cure_is_judged_for_deep_nets_only(n, plain56_std, status):
    # At 20 layers plain and residual nets are "comparably accurate" in the paper: shown, never judged,
    # even where ours differ. At 56 layers: residual < plain, with Welch's interval over n seeds.
    grid = pd.DataFrame([_row(20, "basic", "none", 0.03, 0.002, n=n, train=0.010, train_std=0.001),
                         _row(20, "basic", "A", 0.03, 0.002, n=n, train=0.0, train_std=0.001),
                         _row(56, "basic", "none", 0.60, 0.1, n=n, train=0.60, train_std=plain56_std),
                         _row(56, "basic", "A", 0.03, 0.002, n=n, train=0.001, train_std=0.001)])
    [f] = cure(grid)
    assert f.status == status
    shallow, deep = f.evidence
    assert shallow.startswith("ResNet-20 (A) final training error") and "shown, not judged" in shallow
    assert deep.startswith("ResNet-56 (A) final training error") and "shown" not in deep
    assert ("holds;" in deep) == (status == REPRODUCED)


@pytest.mark.parametrize("n", [2, 3])
def test_degradation_needs_the_whole_interval_above_zero(n):
    grid = pd.DataFrame([_row(20, "basic", "none", 0.03, 0.002, n=n, train=0.002, train_std=0.001),
                         _row(56, "basic", "none", 0.60, 0.1, n=n, train=0.60, train_std=0.05)])
    [f] = degradation(grid)
    assert f.status == REPRODUCED and "> plain-20" in f.evidence[0] and ": holds;" in f.evidence[0]
    wide = grid.assign(train_err_std=[0.001, 0.45])
    assert degradation(wide)[0].status == INCONCLUSIVE


@pytest.mark.parametrize(("n", "stds", "status"), [
    (2, (0.0010, 0.0012), REPRODUCED),        # 90 % CI within ±1 point (t(0.95, 1) = 6.31 x 0.08)
    (3, (0.0010, 0.0012), REPRODUCED),
    (2, (0.0040, 0.0050), NOT_CONTRADICTED),  # CI -0.48 to +0.41-like: includes 0 but is wider than the margin
    (3, (0.0150, 0.0150), NOT_CONTRADICTED),
])
def test_no_worse_is_an_equivalence_test_not_an_interval_that_includes_zero(n, stds, status):
    res = pd.DataFrame([_row(20, "basic", "A", 0.05, 0.01, n=n, train=0.0010, train_std=stds[0]),
                        _row(56, "basic", "A", 0.05, 0.01, n=n, train=0.0005, train_std=stds[1])])
    [f] = deeper_residual(res)
    assert f.status == status
    assert "margin ±1.00 points, two one-sided tests (90 % CI" in f.evidence[0]
    if status == NOT_CONTRADICTED:
        assert "not contradicted" in f.evidence[0] and "holds" not in f.evidence[0]


def test_shortcut_pairs_each_get_an_interval():
    grid = pd.DataFrame([_row(56, "basic", s, m, 0.001) for s, m in (("A", 0.080), ("B", 0.070), ("C", 0.075))])
    [f] = shortcut_options(grid)
    pairs = {line.split(":")[0].strip(): line for line in f.evidence[1:]}
    assert set(pairs) == {"A > B", "A > C", "B > C"}
    assert "holds" in pairs["A > B"] and "does not hold" in pairs["B > C"]
    assert f.status not in (REPRODUCED, NOT_REPRODUCED)  # two hold, one is contradicted


def test_paper_numbers_compare_best_with_best_and_mean_with_mean():
    grid = pd.DataFrame([_row(110, "basic", "A", 0.069, 0.002, n=3, best=0.067)])
    [f] = paper_numbers(grid, epochs=164)
    mean, best = f.evidence  # a mean first (the one judged), then the best of N beside our best seed
    assert best == ("ResNet-110 (A) best seed 6.70 % of 3 vs He et al. 2016 (CVPR), Table 6 6.43 (best of 5) %: "
                    "best-of-N has no interval, shown only")
    welch = scipy_stats.ttest_ind_from_stats(6.9, 0.2, 3, 6.61, 0.16, 5, equal_var=False)
    va, vb = 0.2**2 / 3, 0.16**2 / 5
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 4)
    half = scipy_stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    assert 0.29 / math.sqrt(va + vb) == pytest.approx(welch.statistic)
    half90 = scipy_stats.t.ppf(0.95, df) * math.sqrt(va + vb)
    assert mean == (f"ResNet-110 (A) mean test error 6.90 ± 0.20 % vs He et al. 2016 (CVPR), Table 6 6.61 ± 0.16 "
                    f"(mean of 5) %: holds; difference +0.29 points (95 % CI "
                    f"{0.29 - half:+.2f} to {0.29 + half:+.2f}), Welch's t; margin ±1.00 points, two one-sided "
                    f"tests (90 % CI {0.29 - half90:+.2f} to {0.29 + half90:+.2f})")
    assert -1 < 0.29 - half90 and 0.29 + half90 < 1  # equivalent within the stated margin
    assert f.status == REPRODUCED
    wide = paper_numbers(pd.DataFrame([_row(110, "basic", "A", 0.069, 0.010, n=2, best=0.06)]), epochs=164)[0]
    assert wide.status == NOT_CONTRADICTED  # an interval that includes 0 is not agreement


def test_a_median_is_set_against_our_median():
    row = _row(164, "preact_bottleneck", "B", 0.0560, 0.002, n=3)
    [f] = paper_numbers(pd.DataFrame([{**row, "test_err_median": 0.0550}]), epochs=164)
    [line] = f.evidence
    assert line.startswith("ResNet-164 (B, preact_bottleneck) median test error 5.50 % of 3 seeds (mean 5.60 ± 0.20 %) "
                           "vs He et al. 2016 (ECCV), Table 4 5.46 (median of 5) %")
    assert "difference +0.04 points" in line and "t on medians" in line


def test_paper_numbers_need_the_papers_epochs_and_a_net_it_ran():
    grid = pd.DataFrame([_row(110, "basic", "A", 0.069, 0.002)])
    assert paper_numbers(grid, epochs=15) == []
    assert paper_numbers(pd.DataFrame([_row(20, "basic", "A", 0.02, 0.002, dataset="digits")]), epochs=164) == []


def test_warmup_section_says_where_each_trials_warmup_ended_and_why():
    from types import SimpleNamespace

    from orchestrator.results.report.document import warmup_markdown

    warm = {"warmup_lr": 0.01, "warmup_until_train_err": 0.8, "warmup_max_iterations": 400}
    trials = pd.DataFrame([
        dict(trial_id=1, depth=110, block="basic", shortcut="A", seed=0, config=warm),
        dict(trial_id=2, depth=110, block="basic", shortcut="A", seed=1, config=warm),
        dict(trial_id=3, depth=110, block="basic", shortcut="A", seed=2, config=warm),
        dict(trial_id=4, depth=20, block="basic", shortcut="A", seed=0, config={"warmup_lr": None}),
    ])
    curves = pd.DataFrame([dict(trial_id=1, epoch=1, name="warmup_iterations", value=212.0),
                           dict(trial_id=2, epoch=2, name="warmup_iterations", value=400.0),
                           dict(trial_id=1, epoch=1, name="train_err", value=0.5)])
    text = warmup_markdown(SimpleNamespace(trials=trials, curves=curves))
    assert "capped at 400 iterations" in text
    assert "- ResNet-110 (A) seed 0: lr 0.01 for 212 iterations, ended by running training error < 80 %" in text
    assert "- ResNet-110 (A) seed 1: lr 0.01 for 400 iterations, ended by the cap" in text
    assert "- ResNet-110 (A) seed 2: still warming up at its last recorded epoch" in text
    assert "ResNet-20" not in text
    assert warmup_markdown(SimpleNamespace(trials=trials.iloc[3:], curves=curves)) == ""


def test_responses_figure_gives_every_net_its_own_look_and_says_what_it_plots(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from orchestrator.results.report import figures

    nets = [(d, b, s) for d in (20, 56) for b in ("basic", "preact") for s in ("none", "A")]
    trials = pd.DataFrame([dict(trial_id=i, dataset="digits", model="cifar", depth=d, block=b, shortcut=s, seed=0)
                           for i, (d, b, s) in enumerate(nets)])
    layers = pd.DataFrame([dict(trial_id=i, epoch=5, layer=k, std=1.0 + 0.1 * i + 0.01 * k)
                           for i, (d, *_) in enumerate(nets) for k in range(d - 1)])
    drawn = {}
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.setdefault("fig", fig) and path)
    figures.responses_png(SimpleNamespace(name="x", layers=layers, trials=trials), tmp_path / "r.png")
    ax = drawn["fig"].axes[0]
    looks = {line.get_label(): (line.get_color(), line.get_linestyle(), line.get_marker()) for line in ax.get_lines()}
    assert len(looks) == len(nets) and len(set(looks.values())) == len(nets)
    # basic and preact nets of one depth and shortcut: different colours, not only markers
    assert looks["ResNet-56 (A)"][0] != looks["ResNet-56 (A, preact)"][0]
    assert "branch output before the addition" in ax.get_ylabel()
