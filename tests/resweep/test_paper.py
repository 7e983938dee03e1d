"""The paper's vocabulary: how a net is named in the report, on the dashboard and on the console."""

from __future__ import annotations

from resweep.paper import (
    AXES, GROUP_AXES, RESIDUAL, SHORTCUT_OPTIONS_TOP1, group_label, net_label, net_name, trial_label,
)


def test_a_net_is_plain_without_shortcuts_and_a_resnet_with_them():
    assert [net_name(20, "none"), net_name(56, "A"), net_name(110, "C")] == ["plain-20", "ResNet-56", "ResNet-110"]


def test_the_report_names_the_shortcut_and_any_block_but_basic():
    assert net_label(20, "basic", "none") == "plain-20"
    assert net_label(56, "basic", "A") == "ResNet-56 (A)"
    assert net_label(50, "bottleneck", "B") == "ResNet-50 (B, bottleneck)"
    assert net_label(56, "basic", "A", with_shortcut=False) == "ResNet-56"
    assert net_label(164, "preact_bottleneck", "B", with_shortcut=False) == "ResNet-164 (preact_bottleneck)"
    assert net_label(20, "preact", "none") == "plain-20 (preact)"


def test_the_dashboard_adds_every_other_axis_that_varies():
    row = {"dataset": "cifar100", "model": "cifar", "depth": 20, "block": "basic", "shortcut": "B"}
    assert group_label(row, []) == "ResNet-20"
    assert group_label(row, ["depth", "shortcut"]) == "ResNet-20 (B)"
    assert group_label(row, ["dataset", "block", "shortcut"]) == "ResNet-20 (dataset cifar100, basic, B)"
    assert group_label({**row, "shortcut": "none"}, ["shortcut", "block"]) == "plain-20 (basic)"


def test_the_console_names_a_trial_with_its_seed():
    assert trial_label({"depth": 56, "block": "basic", "shortcut": "none", "seed": 1}) == "plain-56 seed 1"
    assert trial_label({"depth": 110, "block": "basic", "shortcut": "A", "seed": 0}) == "ResNet-110 A seed 0"
    assert trial_label({"depth": 56, "block": "bottleneck", "shortcut": "B", "seed": 2}) == "ResNet-56 bottleneck B seed 2"
    assert trial_label({"depth": 56, "block": "preact", "shortcut": "A", "seed": 0}) == "ResNet-56 preact A seed 0"
    assert trial_label(None) == "a trial that never reported"  # Result.config is None: no traceback


def test_a_grid_point_is_a_trials_axes_without_its_seed():
    assert AXES == ("dataset", "model", "depth", "block", "shortcut", "seed")
    assert GROUP_AXES == AXES[:-1]


def test_table3s_shortcut_options_fall_in_the_order_the_report_checks():
    errors = [SHORTCUT_OPTIONS_TOP1[s] for s in RESIDUAL]
    assert errors == sorted(errors, reverse=True) == [25.03, 24.52, 24.19]


# --- the reference numbers: each read against its source line ------------------------------------

import math
import re

import pytest

from resweep import stats
from resweep.paper import RECIPES, REFERENCES, Reference, references

# The words in a source line that say what kind of number it is, per kind.
KIND_WORDS = {"single_run": "one run", "best_of": "the best of", "mean_std": "mean±std",
              "median_of": "median of 5 runs", "unstated": "not stated"}


@pytest.mark.parametrize("ref", REFERENCES, ids=lambda r: f"{r.dataset}-{r.depth}-{r.block}-{r.shortcut}-{r.kind}")
def test_each_reference_number_is_printed_in_its_source_line_with_its_kind(ref: Reference):
    # where: a paper's table or the authors' README, the row, and the number as printed
    assert re.match(r"^(He et al\. 2016 \((CVPR|ECCV)\), Table \d|github\.com/KaimingHe/resnet-1k-layers README)",
                    ref.source), ref.source
    assert f"{ref.test_err:.2f}" in ref.source, "the number is not the one its source line prints"
    assert f"ResNet-{ref.depth}" in ref.source
    assert KIND_WORDS[ref.kind] in ref.source.replace("+/-", "±"), f"{ref.kind} but the source says: {ref.source}"
    if ref.kind == "mean_std":
        assert f"{ref.test_err:.2f}±{ref.std:.2f}" in ref.source.replace("+/-", "±")
    assert ref.runs == (5 if ref.kind in ("best_of", "mean_std", "median_of") else 1)
    assert ref.recipe in RECIPES and ref.batch_size in (64, 128)
    # the shortcut: CVPR's CIFAR nets are option A; ECCV's bottleneck nets project (B), its 110 is CVPR's A
    assert ref.shortcut == ("B" if "bottleneck" in ref.block else "A")
    assert ref.dataset == ("cifar100" if "CIFAR-100" in ref.source else "cifar10")


@pytest.mark.parametrize("ref", REFERENCES, ids=lambda r: f"{r.dataset}-{r.depth}-{r.block}-{r.kind}")
def test_stats_compares_each_kind_like_with_like(ref: Reference):
    d = stats.vs_reference(ref.test_err + 0.3, 0.2, 3, ref, median=ref.test_err + 0.5)
    if ref.kind == "best_of":
        assert d is None  # shown beside our best seed, never judged
    elif ref.kind == "mean_std":
        assert d == stats.welch(ref.test_err + 0.3, 0.2, 3, ref.test_err, ref.std, ref.runs)
    elif ref.kind == "median_of":
        assert d.diff == pytest.approx(0.5) and "medians" in d.method  # our median, not our mean
        assert d.se == pytest.approx(0.2 * math.sqrt(stats.median_variance(3) / 3 + stats.median_variance(5) / 5))
    else:  # one run, or a number of unstated kind taken as one run
        assert d.diff == pytest.approx(0.3) and d.se == pytest.approx(0.2 * math.sqrt(1 / 3 + 1))


def test_the_papers_numbers_are_filed_under_their_tables():
    by = {(r.dataset, r.depth, r.block, r.kind): r for r in REFERENCES if r.batch_size == 128}
    t6 = {r.depth: r.kind for r in REFERENCES if r.paper.endswith("Table 6") and r.kind != "mean_std"}
    assert t6 == {20: "single_run", 32: "single_run", 44: "single_run", 56: "single_run", 110: "best_of",
                  1202: "single_run"}
    # ResNet-110 with original units (6.61) is the CVPR mean of 5 with option A, filed once
    [orig110] = [r for r in REFERENCES if r.depth == 110 and r.block == "basic" and r.kind == "mean_std"]
    assert (orig110.test_err, orig110.std, orig110.shortcut, orig110.paper) == (6.61, 0.16, "A", "He et al. 2016 (CVPR), Table 6")
    assert not [r for r in REFERENCES if r.depth == 110 and r.block == "basic" and "ECCV" in r.paper]
    # original vs pre-activation comparisons: ECCV Table 3; the medians of 5: Table 4's caption
    assert {(r.depth, r.block, r.test_err) for r in REFERENCES if r.paper.endswith("Table 3")} == {
        (110, "preact", 6.37), (164, "bottleneck", 5.93), (1001, "bottleneck", 7.61),
        (164, "bottleneck", 25.16), (1001, "bottleneck", 27.82)}
    assert by["cifar10", 1001, "preact_bottleneck", "median_of"].test_err == 4.92
    assert by["cifar10", 1001, "preact_bottleneck", "mean_std"].test_err == 4.89
    assert by["cifar100", 1001, "preact_bottleneck", "median_of"].test_err == 22.71
    # 4.62 is the batch-64 recipe of the authors' code: never set against a batch-128 sweep
    assert all(r.test_err not in (4.62, 4.69) for r in references("cifar10", "cifar", 1001, "preact_bottleneck", "B"))
    assert {r.test_err for r in references("cifar10", "cifar", 1001, "preact_bottleneck", "B", batch_size=64)} == {4.62, 4.69}
    assert references("digits", "cifar", 20, "basic", "A") == []
    # means first: the report's grid table shows the Welch comparison where there is one
    assert references("cifar10", "cifar", 1001, "preact_bottleneck", "B")[0].kind == "mean_std"
