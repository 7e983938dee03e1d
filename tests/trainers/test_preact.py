"""Pre-activation units (He et al., ECCV 2016): parameter counts against the paper's Table 4, the
BN-ReLU-conv order and the final BN-ReLU seen through forward hooks, and what the probes read."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from trainers.models import (
    EXPECTED_PARAMS,
    PAPER_MILLIONS,
    PreActBlock,
    PreActBottleneck,
    build_model,
    count_params,
    count_weights,
)
from trainers.probes import conv_bn_pairs, layer_responses

ECCV_ROWS = [r for r in EXPECTED_PARAMS if (r[1], r[2]) in PAPER_MILLIONS]


def test_the_table_has_every_eccv_net():
    assert {(d, b) for _, d, b, *_ in ECCV_ROWS} == set(PAPER_MILLIONS) == {
        (110, "preact"), (164, "bottleneck"), (164, "preact_bottleneck"),
        (1001, "bottleneck"), (1001, "preact_bottleneck"),
    }  # fmt: skip
    assert PAPER_MILLIONS[(1001, "preact_bottleneck")] == 10.2 and PAPER_MILLIONS[(164, "preact_bottleneck")] == 1.7


@pytest.mark.parametrize(("model", "depth", "block", "shortcut", "num_classes", "expected"), ECCV_ROWS,
                         ids=[f"{b}-{d}" for _, d, b, *_ in ECCV_ROWS])
def test_parameter_counts_match_the_eccv_table(model, depth, block, shortcut, num_classes, expected):
    with torch.device("meta"):
        net = build_model(model, depth, block, shortcut, num_classes)
    assert count_params(net) == expected
    # The paper's millions are conv and fc weights (BN's scales and shifts left out).
    assert round(count_weights(net) / 1e6, 1) == PAPER_MILLIONS[(depth, block)]


def test_preact_and_original_bottlenecks_share_their_conv_weights():
    with torch.device("meta"):
        pre, orig = (build_model("cifar", 164, b, "B", 10) for b in ("preact_bottleneck", "bottleneck"))
    assert count_weights(pre) == count_weights(orig)  # the same convs; only BN placement differs


def test_depth_rules_for_preact_units():
    assert [len(s) for s in (lambda n: (n.layer1, n.layer2, n.layer3))(build_model("cifar", 20, "preact", "A", 10))] == [3, 3, 3]
    with torch.device("meta"):
        assert len(build_model("cifar", 1001, "preact_bottleneck", "B", 10).layer1) == 111
    with pytest.raises(ValueError, match=r"depth 21 .* 6n\+2"):
        build_model("cifar", 21, "preact", "A", 10)
    with pytest.raises(ValueError, match=r"9n\+2"):
        build_model("cifar", 26, "preact_bottleneck", "A", 10)
    with pytest.raises(ValueError, match="cifar nets only"):
        build_model("imagenet", 50, "preact_bottleneck", "B", 10)
    with pytest.raises(ValueError, match="zero_init_residual"):
        build_model("cifar", 20, "preact", "A", 10, zero_init_residual=True)


def _record(net: nn.Module, kinds: tuple[type, ...]) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(module path, input, output) of every module of `kinds`, in the order they run."""
    calls: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    for name, m in net.named_modules():
        if isinstance(m, kinds):
            m.register_forward_hook(lambda mod, i, o, name=name: calls.append((name, i[0].detach(), o.detach())))
    return calls


@pytest.mark.parametrize(("block", "depth"), [("preact", 8), ("preact_bottleneck", 11)])
@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_units_run_bn_relu_conv_and_add_without_a_relu_after(block, depth, shortcut):
    torch.manual_seed(0)
    net = build_model("cifar", depth, block, shortcut, 10).eval()
    for m in net.modules():  # non-trivial BN, so that BN outputs have negative parts
        if isinstance(m, nn.BatchNorm2d):
            m.bias.data.normal_()
    units = [m for m in net.modules() if isinstance(m, (PreActBlock, PreActBottleneck))]
    calls = _record(net, (nn.Conv2d, nn.BatchNorm2d, PreActBlock, PreActBottleneck, nn.Linear))
    net(torch.randn(2, 3, 8, 8))
    by_name = {n: (i, o) for n, i, o in calls}
    order = [n for n, _, _ in calls]

    convs = 2 if block == "preact" else 3
    for u, unit in zip(("layer1.0", "layer2.0", "layer3.0"), units):
        seq = [f"{u}.bn{k}" if s == "bn" else f"{u}.conv{k}" for k in range(1, convs + 1) for s in ("bn", "conv")]
        pos = [order.index(n) for n in seq]
        assert pos == sorted(pos), f"{u}: modules ran in the order {[order[p] for p in sorted(pos)]}"
        for k in range(1, convs + 1):
            bn_out = by_name[f"{u}.bn{k}"][1]
            conv_in = by_name[f"{u}.conv{k}"][0]
            assert torch.equal(conv_in, F.relu(bn_out)), f"{u}.conv{k} does not take ReLU(bn{k})"
        x, out = by_name[u]
        branch = by_name[f"{u}.conv{convs}"][1]
        projects = isinstance(unit.shortcut, nn.Conv2d)  # B where the shape changes: a bare 1x1 conv
        assert projects == (shortcut == "B" and x.shape != out.shape)
        # each stage's first unit (the net's first, or a change of shape) activates before the split
        identity = unit.shortcut(F.relu(by_name[f"{u}.bn1"][1]))
        assert torch.allclose(out, branch + identity, atol=1e-6)
        assert (out < 0).any()  # the addition is the unit's output: no ReLU after it
    # The stem is a bare conv; the last unit's output goes through the final BN-ReLU, then pooling.
    assert order[0] == "conv1" and torch.equal(by_name["layer1.0.bn1"][0], by_name["conv1"][1])
    last_unit_out = by_name[f"layer3.{len(net.layer3) - 1}"][1]
    assert torch.equal(by_name["bn"][0], last_unit_out)
    assert torch.allclose(by_name["fc"][0], F.relu(by_name["bn"][1]).mean((2, 3)))


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_the_first_unit_and_units_that_change_shape_take_the_activated_input_on_both_paths(shortcut):
    # ECCV 2016 Sec. 4.1: "the first activation right after conv1 and before splitting into two paths";
    # resnet-pre-act.lua: units for increasing dimensions share their BN-ReLU ("common BN, ReLU").
    # Every other unit adds its input itself. ResNet-14 with preact units: 2 units a stage.
    torch.manual_seed(0)
    net = build_model("cifar", 14, "preact", shortcut, 10).eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):  # BN that moves the input, so that x and ReLU(BN(x)) differ
            m.bias.data.normal_()
            m.running_mean.normal_()
    x = net.conv1(torch.randn(2, 3, 8, 8))
    for name, unit in net.named_children():
        if not name.startswith("layer"):
            continue
        for j, u in enumerate(unit):
            pre = F.relu(u.bn1(x))
            branch = u.conv2(F.relu(u.bn2(u.conv1(pre))))
            before_split = name == "layer1" and j == 0 or j == 0 and name != "layer1"
            expected = branch + u.shortcut(pre if before_split else x)
            assert torch.allclose(u(x), expected, atol=1e-6), f"{name}.{j}"
            if name == "layer1" and j == 0:  # the first unit: an identity of the activated stem
                assert isinstance(u.shortcut, nn.Identity)
                assert not torch.allclose(u(x), branch + x, atol=1e-3)  # what it did before
            x = u(x)


def test_identity_shortcut_adds_the_units_input_itself():
    torch.manual_seed(0)
    unit = PreActBlock(16, 16, 1, "A", "first_1x1").eval()
    x = torch.randn(2, 16, 4, 4)
    branch = unit.conv2(F.relu(unit.bn2(unit.conv1(F.relu(unit.bn1(x))))))
    assert torch.allclose(unit(x), x + branch)
    plain = PreActBlock(16, 16, 1, "none", "first_1x1").eval()
    plain.load_state_dict(unit.state_dict())
    assert torch.allclose(plain(x), branch)


def test_probes_read_bn_outputs_and_the_branch_output_of_preact_units():
    torch.manual_seed(0)
    net = build_model("cifar", 8, "preact", "A", 10)
    pairs = {name: type(m).__name__ for name, m in conv_bn_pairs(net)}
    assert pairs == {
        "conv1": "BatchNorm2d",  # the stem, normalised by layer1.0.bn1
        "layer1.0.conv1": "BatchNorm2d", "layer1.0.conv2": "Response",
        "layer2.0.conv1": "BatchNorm2d", "layer2.0.conv2": "Response",
        "layer3.0.conv1": "BatchNorm2d", "layer3.0.conv2": "Response",
    }  # fmt: skip
    x = torch.randn(4, 3, 8, 8)
    records = layer_responses(net, [(x, None)])
    calls = _record(net.eval(), (nn.Conv2d,))
    net(x)
    conv2 = next(o for n, _, o in calls if n == "layer2.0.conv2")
    got = next(r for r in records if r["name"] == "layer2.0.conv2")
    assert got["std"] == pytest.approx(conv2.std(correction=0).item(), rel=1e-4)
    with torch.device("meta"):
        names = [n for n, _ in conv_bn_pairs(build_model("cifar", 164, "preact_bottleneck", "B", 10))]
    assert len(names) == 1 + 3 * 18 and all(n == "conv1" or n.endswith(".conv2") for n in names)


def test_preact_nets_train_forward_and_backward():
    for block, depth in (("preact", 20), ("preact_bottleneck", 29)):
        for shortcut in ("none", "A", "B", "C"):
            net = build_model("cifar", depth, block, shortcut, 7, in_channels=1)
            out = net(torch.randn(2, 1, 8, 8))
            assert out.shape == (2, 7)
            out.sum().backward()
