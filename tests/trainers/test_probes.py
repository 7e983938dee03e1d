"""Layer responses (Fig. 7): the definition checked by hand on a net small enough to compute on paper."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from trainers.models import build_model
from trainers.probes import conv_bn_pairs, layer_responses, stage_of

EPS = 1e-5  # BatchNorm2d's default


def _identity_conv() -> nn.Conv2d:
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 1, 1] = 1.0  # a 3x3 conv that copies its input
    return conv


def _bn(mean: float, var: float, weight: float, bias: float) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(1)
    bn.running_mean.fill_(mean)
    bn.running_var.fill_(var)
    with torch.no_grad():
        bn.weight.fill_(weight)
        bn.bias.fill_(bias)
    return bn


class TinyResidual(nn.Module):
    """One residual block on one channel: relu(bn2(conv2(relu(bn1(conv1 x)))) + x), convs the identity."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = _identity_conv(), _bn(mean=1.0, var=4.0, weight=2.0, bias=0.5)
        self.relu = nn.ReLU(inplace=True)
        self.conv2, self.bn2 = _identity_conv(), _bn(mean=-1.0, var=0.25, weight=3.0, bias=-2.0)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + x)


def _by_hand(x: torch.Tensor) -> list[tuple[float, float]]:
    """(std, mean) of the two responses, from the BN formulas with their running statistics."""
    x = x.double()
    r1 = (x - 1.0) / math.sqrt(4.0 + EPS) * 2.0 + 0.5
    r2 = (r1.clamp(min=0) - (-1.0)) / math.sqrt(0.25 + EPS) * 3.0 - 2.0  # after the first ReLU, before the add
    return [(r.std(correction=0).item(), r.mean().item()) for r in (r1, r2)]


def _batches(x: torch.Tensor, size: int):
    return [(x[i : i + size], None) for i in range(0, len(x), size)]


def test_responses_are_bn_outputs_in_eval_mode_before_relu_and_addition():
    torch.manual_seed(0)
    x = torch.randn(10, 1, 5, 5) * 3 + torch.linspace(-2, 2, 10).view(10, 1, 1, 1)
    net = TinyResidual().train()
    records = layer_responses(net, _batches(x, 3))  # uneven batches: 3 + 3 + 3 + 1 images
    expected = _by_hand(x)
    assert [r["name"] for r in records] == ["conv1", "conv2"]
    assert [r["layer"] for r in records] == [0, 1]
    for record, (std, mean) in zip(records, expected):
        assert record["std"] == pytest.approx(std, rel=1e-5)
        assert record["mean"] == pytest.approx(mean, rel=1e-5, abs=1e-6)
    # The definitions this one rules out would give other numbers:
    xd = x.double()
    r1 = (xd - 1.0) / math.sqrt(4.0 + EPS) * 2.0 + 0.5
    r2 = (r1.clamp(min=0) + 1.0) / math.sqrt(0.25 + EPS) * 3.0 - 2.0
    assert records[0]["std"] != pytest.approx(r1.clamp(min=0).std(correction=0).item(), rel=0.05)  # after ReLU
    assert records[1]["std"] != pytest.approx((r2 + xd).std(correction=0).item(), rel=0.05)  # after the addition
    assert records[0]["std"] != pytest.approx(2.0, rel=0.05)  # batch statistics: std would be BN's weight


def test_probe_leaves_no_hooks_and_restores_training_mode():
    net = TinyResidual().train()
    layer_responses(net, _batches(torch.randn(4, 1, 5, 5), 2))
    assert net.training
    assert all(not m._forward_hooks for m in net.modules())
    net.eval()
    layer_responses(net, _batches(torch.randn(4, 1, 5, 5), 2))
    assert not net.training


def test_probe_does_not_touch_bn_running_statistics():
    net = TinyResidual().train()
    layer_responses(net, _batches(torch.randn(8, 1, 5, 5) + 5, 4))
    assert net.bn1.running_mean.item() == 1.0 and net.bn1.num_batches_tracked.item() == 0


def test_hooks_are_removed_even_when_the_forward_pass_fails():
    net = TinyResidual()
    with pytest.raises(RuntimeError):
        layer_responses(net, [(torch.randn(2, 3, 5, 5), None)])  # three channels into a one-channel conv
    assert all(not m._forward_hooks for m in net.modules())


def test_cifar_net_records_every_3x3_conv_in_forward_order_with_its_stage():
    torch.manual_seed(0)
    net = build_model("cifar", 8, "basic", "A", 10)
    records = layer_responses(net, _batches(torch.randn(6, 3, 8, 8), 4))
    assert [r["name"] for r in records] == [
        "conv1",
        "layer1.0.conv1", "layer1.0.conv2",
        "layer2.0.conv1", "layer2.0.conv2",
        "layer3.0.conv1", "layer3.0.conv2",
    ]  # fmt: skip
    assert [r["stage"] for r in records] == [0, 1, 1, 2, 2, 3, 3]
    assert [r["layer"] for r in records] == list(range(7))
    assert all(r["std"] > 0 and math.isfinite(r["mean"]) for r in records)


def test_bottleneck_and_imagenet_nets_record_only_their_3x3_convs():
    names = [n for n, _ in conv_bn_pairs(build_model("imagenet", 50, "bottleneck", "C", 10))]
    assert len(names) == 3 + 4 + 6 + 3  # one 3x3 per bottleneck; the 7x7 stem and 1x1s are not probed
    assert all(n.endswith(".conv2") for n in names)
    assert [stage_of(n) for n in (names[0], names[3], names[-1])] == [1, 2, 4]


def test_a_3x3_conv_without_its_bn_is_refused():
    with pytest.raises(ValueError, match="0 is not followed by its BatchNorm2d"):
        conv_bn_pairs(nn.Sequential(nn.Conv2d(1, 1, 3), nn.ReLU()))


def _plain_preact_from_basic(basic: nn.Module, preact: nn.Module) -> None:
    """Load a plain net of original units into the plain pre-activation net that computes the same
    function: each conv's BN becomes the BN that follows that conv in the pre-activation net (the
    same unit's bn2, the next unit's bn1, or the final bn)."""
    units_b = [u for s in ("layer1", "layer2", "layer3") for u in getattr(basic, s)]
    units_p = [u for s in ("layer1", "layer2", "layer3") for u in getattr(preact, s)]
    following = [u.bn1 for u in units_p[1:]] + [preact.bn]
    preact.conv1.load_state_dict(basic.conv1.state_dict())
    units_p[0].bn1.load_state_dict(basic.bn1.state_dict())
    for ub, up, after in zip(units_b, units_p, following):
        up.conv1.load_state_dict(ub.conv1.state_dict())
        up.bn2.load_state_dict(ub.bn1.state_dict())
        up.conv2.load_state_dict(ub.conv2.state_dict())
        after.load_state_dict(ub.bn2.state_dict())
    preact.fc.load_state_dict(basic.fc.state_dict())


def test_a_plain_net_of_preact_units_records_what_the_same_plain_net_of_original_units_does():
    # Without shortcuts, BN-ReLU-conv units compute exactly what conv-BN-ReLU layers compute: the same
    # function must give the same responses, whatever block builds it (each conv's response read at
    # the BN that normalises its output, before the ReLU).
    torch.manual_seed(0)
    basic = build_model("cifar", 14, "basic", "none", 10).eval()
    for m in basic.modules():  # trained-looking BN: statistics and affine parameters away from 0 / 1
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_()
    preact = build_model("cifar", 14, "preact", "none", 10).eval()
    _plain_preact_from_basic(basic, preact)
    x = torch.randn(16, 3, 8, 8)
    assert torch.allclose(preact(x), basic(x), atol=1e-5)  # one function
    got_b, got_p = layer_responses(basic, [(x, None)]), layer_responses(preact, [(x, None)])
    assert [r["name"] for r in got_p] == [r["name"] for r in got_b]  # conv1, layerk.j.conv1/conv2
    for rb, rp in zip(got_b, got_p):
        assert (rp["layer"], rp["stage"]) == (rb["layer"], rb["stage"])
        assert rp["std"] == pytest.approx(rb["std"], rel=1e-5), rb["name"]
        assert rp["mean"] == pytest.approx(rb["mean"], rel=1e-5, abs=1e-6), rb["name"]


def test_residual_preact_units_still_read_the_branch_where_it_meets_the_shortcut():
    net = build_model("cifar", 8, "preact", "A", 10)
    pairs = {name: type(m).__name__ for name, m in conv_bn_pairs(net)}
    assert pairs["layer1.0.conv2"] == "Response"
    plain = {name: m for name, m in conv_bn_pairs(build_model("cifar", 8, "preact", "none", 10))}
    assert {n: type(m).__name__ for n, m in plain.items()} == dict.fromkeys(plain, "BatchNorm2d")
