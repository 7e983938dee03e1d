"""The ResNet family: exact parameter counts, torchvision equivalence, shortcut options, bad input."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn as nn
import torchvision

from trainers.models import (
    EXPECTED_PARAMS,
    BasicBlock,
    Bottleneck,
    ZeroPadShortcut,
    build_model,
    count_params,
)


@pytest.mark.parametrize(
    ("model", "depth", "block", "shortcut", "num_classes", "expected"),
    EXPECTED_PARAMS,
    ids=[f"{m}-{d}" for m, d, *_ in EXPECTED_PARAMS],
)
def test_parameter_count_matches_the_table(model, depth, block, shortcut, num_classes, expected):
    with torch.device("meta"):  # shapes only: no memory, no initialisation time
        assert count_params(build_model(model, depth, block, shortcut, num_classes)) == expected


@pytest.mark.parametrize("depth", [20, 56, 110])
def test_plain_cifar_net_has_as_many_parameters_as_option_a(depth):
    with torch.device("meta"):
        plain, residual = (build_model("cifar", depth, "basic", s, 10) for s in ("none", "A"))
        assert count_params(plain) == count_params(residual)


def test_the_table_states_the_paper_numbers():
    # Guards the table itself against an edit that would make the tests above pass vacuously.
    counts = {(m, d): p for m, d, b, _, _, p in EXPECTED_PARAMS if b in ("basic", "bottleneck") and (m, d) != ("cifar", 164)
              and (m, d) != ("cifar", 1001)}
    assert counts[("cifar", 20)] == 269_722 and counts[("cifar", 1202)] == 19_421_274
    assert counts[("cifar", 32)] == 464_154 and counts[("cifar", 44)] == 658_586
    assert counts[("cifar", 56)] == 853_018 and counts[("cifar", 110)] == 1_727_962


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_imagenet_b_has_torchvisions_parameter_count(depth):
    block = "basic" if depth < 50 else "bottleneck"
    with torch.device("meta"):
        ours = build_model("imagenet", depth, block, "B", 1000)
        theirs = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    assert count_params(ours) == count_params(theirs)


def _copy_in_order(src: nn.Module, dst: nn.Module) -> None:
    """Copy every state tensor (parameters and BN buffers) of `src` into `dst`, position by position."""
    src_state, dst_state = list(src.state_dict().values()), dst.state_dict()
    assert len(src_state) == len(dst_state)
    for value, (name, target) in zip(src_state, dst_state.items()):
        assert value.shape == target.shape, name
        target.copy_(value)


def _randomise_batchnorm(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=g) + 0.5
            m.bias.data = torch.randn(n, generator=g) * 0.1
            m.running_mean = torch.randn(n, generator=g) * 0.1
            m.running_var = torch.rand(n, generator=g) + 0.5


@pytest.mark.parametrize(("depth", "block"), [(18, "basic"), (50, "bottleneck")])
def test_stride_in_3x3_with_b_computes_what_torchvision_computes(depth, block):
    torch.manual_seed(0)
    theirs = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    _randomise_batchnorm(theirs, seed=1)
    ours = build_model("imagenet", depth, block, "B", 1000, stride_in="3x3")
    _copy_in_order(theirs, ours)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = theirs.eval()(x)
        got = ours.eval()(x)
    assert expected.abs().max() > 0.1  # the comparison is not between two near-zero outputs
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_paper_stride_placement_differs_from_torchvision_v1_5():
    torch.manual_seed(0)
    theirs = torchvision.models.resnet50(weights=None)
    ours = build_model("imagenet", 50, "bottleneck", "B", 1000, stride_in="first_1x1")
    _copy_in_order(theirs, ours)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(ours.eval()(x), theirs.eval()(x), atol=1e-3)
    first = ours.layer2[0]
    assert first.conv1.stride == (2, 2) and first.conv2.stride == (1, 1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(model="cifar", depth=21, block="basic", shortcut="A"), "6n+2"),
        (dict(model="cifar", depth=21, block="bottleneck", shortcut="A"), "9n+2"),
        (dict(model="cifar", depth=2, block="basic", shortcut="A"), "6n+2"),
        (dict(model="imagenet", depth=20, block="basic", shortcut="B"), "18 (basic), 34 (basic), 50 (bottleneck)"),
        (dict(model="imagenet", depth=50, block="basic", shortcut="B"), "50 (bottleneck)"),
        (dict(model="imagenet", depth=18, block="bottleneck", shortcut="B"), "18 (basic)"),
        (dict(model="vgg", depth=20, block="basic", shortcut="A"), "cifar, imagenet"),
        (dict(model="cifar", depth=20, block="wide", shortcut="A"), "basic, bottleneck"),
        (dict(model="cifar", depth=20, block="basic", shortcut="D"), "none, A, B, C"),
        (dict(model="cifar", depth=20, block="basic", shortcut="A", stride_in="1x1"), "first_1x1, 3x3"),
    ],
)
def test_a_net_the_family_lacks_is_a_value_error_naming_the_allowed_values(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build_model(num_classes=10, **kwargs)


def _count(model: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def _projections(model: nn.Module) -> int:
    return sum(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for m in model.modules())


def test_shortcut_options_place_projections_as_the_paper_says():
    nets = {s: build_model("cifar", 20, "basic", s, 10) for s in ("none", "A", "B", "C")}
    assert [_projections(nets[s]) for s in ("none", "A", "B", "C")] == [0, 0, 2, 9]
    assert _count(nets["A"], ZeroPadShortcut) == 2
    assert all(b.shortcut is None for b in nets["none"].modules() if isinstance(b, BasicBlock))
    # B adds parameters only where the shape changes; C on every block.
    assert count_params(nets["A"]) < count_params(nets["B"]) < count_params(nets["C"])


def test_plain_block_adds_nothing():
    torch.manual_seed(0)
    block = BasicBlock(16, 16, 1, "none", "first_1x1").eval()
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        branch = torch.relu(block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x))))))
        torch.testing.assert_close(block(x), branch, rtol=0, atol=0)


def test_option_a_is_subsampled_identity_with_zero_channels():
    torch.manual_seed(0)
    block = BasicBlock(16, 32, 2, "A", "first_1x1").eval()
    nn.init.zeros_(block.bn2.weight)  # silence the residual branch: the output is relu(shortcut(x))
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        out = block(x)
    assert out.shape == (2, 32, 4, 4)
    torch.testing.assert_close(out[:, :16], torch.relu(x[:, :, ::2, ::2]), rtol=0, atol=0)
    assert torch.count_nonzero(out[:, 16:]) == 0


def test_residual_block_adds_the_identity():
    torch.manual_seed(0)
    block = BasicBlock(16, 16, 1, "A", "first_1x1").eval()
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        branch = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x)))))
        torch.testing.assert_close(block(x), torch.relu(branch + x))


def test_zero_init_residual_zeroes_last_bn_of_residual_blocks_only():
    res = build_model("cifar", 20, "basic", "A", 10, zero_init_residual=True)
    plain = build_model("cifar", 20, "basic", "none", 10, zero_init_residual=True)
    assert all(torch.count_nonzero(b.bn2.weight) == 0 for b in res.modules() if isinstance(b, BasicBlock))
    assert all(torch.all(b.bn2.weight == 1) for b in plain.modules() if isinstance(b, BasicBlock))
    bottle = build_model("imagenet", 50, "bottleneck", "B", 10, zero_init_residual=True)
    assert all(torch.count_nonzero(b.bn3.weight) == 0 for b in bottle.modules() if isinstance(b, Bottleneck))


def test_he_initialisation_of_convs():
    torch.manual_seed(0)
    conv = build_model("cifar", 20, "basic", "A", 10).layer3[1].conv1  # 64 -> 64, 3x3
    expected_std = (2.0 / (64 * 9)) ** 0.5
    assert abs(conv.weight.std().item() - expected_std) / expected_std < 0.05


@pytest.mark.parametrize(
    ("model", "depth", "block", "size", "in_channels"),
    [("cifar", 20, "basic", 16, 3), ("cifar", 29, "bottleneck", 16, 3), ("cifar", 8, "basic", 8, 1), ("imagenet", 18, "basic", 32, 3)],
)
@pytest.mark.parametrize("shortcut", ["none", "A", "B", "C"])
def test_every_shortcut_runs_forward_and_backward(model, depth, block, size, in_channels, shortcut):
    net = build_model(model, depth, block, shortcut, 7, in_channels=in_channels)
    out = net(torch.randn(2, in_channels, size, size))
    assert out.shape == (2, 7)
    out.sum().backward()


def test_cifar_stages_halve_the_map_and_double_the_filters():
    net = build_model("cifar", 20, "basic", "A", 10)
    shapes = []
    for stage in (net.layer1, net.layer2, net.layer3):
        stage.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:])))
    net(torch.randn(1, 3, 32, 32))
    assert shapes == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
    assert [len(s) for s in (net.layer1, net.layer2, net.layer3)] == [3, 3, 3]


def test_module_docstring_table_is_the_checked_table():
    import trainers.models as models

    rows = re.findall(r"^\s+(cifar|imagenet)\s+(\d+)\s+(basic|bottleneck|preact|preact_bottleneck)\s+"
                      r"(A / none|B)\s+([\d,]+)(?:\s+\(ECCV 2016 Table 4: [\d.]+M\))?$", models.__doc__, flags=re.M)
    table = [(m, int(d), b, s.split(" ")[0], int(p.replace(",", ""))) for m, d, b, s, p in rows]
    assert table == [(m, d, b, s, p) for m, d, b, s, _, p in EXPECTED_PARAMS]


def test_self_check_reports_each_net_and_fails_on_a_wrong_count(capsys, monkeypatch):
    import trainers.models as models

    rows = [("cifar", 20, "basic", "A", 10, 269_722), ("imagenet", 18, "basic", "B", 1000, 11_689_512)]
    monkeypatch.setattr(models, "EXPECTED_PARAMS", rows)
    with torch.device("meta"):
        assert models._check_table() == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(line.endswith("ok") for line in lines)  # cifar: as A and as none

    monkeypatch.setattr(models, "EXPECTED_PARAMS", [("cifar", 20, "basic", "A", 10, 269_723)])
    with torch.device("meta"):
        assert models._check_table() == 2
    assert "expected 269,723" in capsys.readouterr().out
