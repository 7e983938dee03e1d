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
