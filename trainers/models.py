"""The residual-network family of He et al., "Deep Residual Learning for Image Recognition" (2016),
and the pre-activation units of He et al., "Identity Mappings in Deep Residual Networks" (ECCV 2016).

One entry point, :func:`build_model`. Two layouts:

- ``cifar``: 3x3 conv (16 filters), three stages of 16/32/64 filters on maps of size s, s/2, s/4,
  global average pooling, one linear layer. Basic blocks give depth 6n+2, bottlenecks 9n+2.
- ``imagenet``: 7x7/2 conv stem and 3x3/2 max-pool, four stages of 64/128/256/512 filters;
  depth 18 and 34 with basic blocks, 50, 101 and 152 with bottlenecks.

Shortcuts (the paper's Sec. 3.3 and Table 3): ``none`` is a plain net, with no addition at all;
``A`` is the identity, subsampled and zero-padded where the shape changes (no parameters); ``B`` is
the identity except a 1x1 conv + BN projection where the shape changes; ``C`` projects on every block.

Pre-activation units (``preact``: two 3x3 convs, 6n+2; ``preact_bottleneck``: 1x1, 3x3, 1x1, 9n+2;
CIFAR layout only) order each branch BN-ReLU-conv and add nothing after the addition: the output of a
unit is `shortcut(x) + branch(x)`, not its ReLU. The stem is the bare 3x3 conv (the first unit's BN-ReLU
normalises it) and one final BN-ReLU comes before the pooling (ECCV 2016 Fig. 4(e) and its code,
github.com/KaimingHe/resnet-1k-layers). A projection shortcut (B, C) is a bare 1x1 conv of the
pre-activated input, as there. The net's first unit, and every unit whose shape changes, activate
before the split into the two paths, so their shortcut (identity, option A's zero-padding or a
projection) takes the activated input too: ECCV 2016 Sec. 4.1, "for the first Residual Unit (that
follows a stand-alone convolutional layer, conv1), we adopt the first activation right after conv1
and before splitting into two paths", and resnet-pre-act.lua's units "for increasing dimensions"
("common BN, ReLU"). Elsewhere the identity takes the unit's input itself.

Parameter counts this module must produce (``python -m trainers.models`` checks them):

    model     depth  block       shortcut   params
    cifar        20  basic       A / none      269,722
    cifar        32  basic       A / none      464,154
    cifar        44  basic       A / none      658,586
    cifar        56  basic       A / none      853,018
    cifar       110  basic       A / none    1,727,962
    cifar      1202  basic       A / none   19,421,274
    imagenet     18  basic       B          11,689,512
    imagenet     34  basic       B          21,797,672
    imagenet     50  bottleneck  B          25,557,032
    imagenet    101  bottleneck  B          44,549,160
    imagenet    152  bottleneck  B          60,192,808
    cifar       110  preact             B    1,730,522   (ECCV 2016 Table 4: 1.7M)
    cifar       164  bottleneck         B    1,704,154   (ECCV 2016 Table 4: 1.7M)
    cifar       164  preact_bottleneck  B    1,703,258   (ECCV 2016 Table 4: 1.7M)
    cifar      1001  bottleneck         B   10,328,602   (ECCV 2016 Table 4: 10.2M)
    cifar      1001  preact_bottleneck  B   10,327,706   (ECCV 2016 Table 4: 10.2M)

(all with 10 classes for cifar and 1,000 for imagenet; the imagenet ones equal torchvision's). The
ECCV paper gives its counts in millions to one decimal (PAPER_MILLIONS), and they are counts WITHOUT
BN's scales and shifts: ResNet-1001 has 10,178,490 conv and fc weights (10.2M, the paper's figure) and
10.33M parameters in all. The CVPR paper's 19.4M for ResNet-1202 counts them (19,421,274; without
them 19.33M). The check compares each ECCV row's :func:`count_weights`, rounded, with the paper's.
"""

from __future__ import annotations

from typing import get_args

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from resweep.config import Block, ModelFamily, Shortcut, StrideIn
from resweep.paper import PREACT_BLOCKS, stage_units  # each family's depth rules live there

MODELS, BLOCKS, SHORTCUTS, STRIDE_IN = (get_args(t) for t in (ModelFamily, Block, Shortcut, StrideIn))

# (model, depth, block, shortcut, num_classes, params): the table in the module docstring.
EXPECTED_PARAMS = [
    ("cifar", 20, "basic", "A", 10, 269_722),
    ("cifar", 32, "basic", "A", 10, 464_154),
    ("cifar", 44, "basic", "A", 10, 658_586),
    ("cifar", 56, "basic", "A", 10, 853_018),
    ("cifar", 110, "basic", "A", 10, 1_727_962),
    ("cifar", 1202, "basic", "A", 10, 19_421_274),
    ("imagenet", 18, "basic", "B", 1000, 11_689_512),
    ("imagenet", 34, "basic", "B", 1000, 21_797_672),
    ("imagenet", 50, "bottleneck", "B", 1000, 25_557_032),
    ("imagenet", 101, "bottleneck", "B", 1000, 44_549_160),
    ("imagenet", 152, "bottleneck", "B", 1000, 60_192_808),
    ("cifar", 110, "preact", "B", 10, 1_730_522),
    ("cifar", 164, "bottleneck", "B", 10, 1_704_154),
    ("cifar", 164, "preact_bottleneck", "B", 10, 1_703_258),
    ("cifar", 1001, "bottleneck", "B", 10, 10_328_602),
    ("cifar", 1001, "preact_bottleneck", "B", 10, 10_327_706),
]

# (depth, block) -> parameters in millions as He et al., ECCV 2016, Table 4 prints them (CIFAR-10).
PAPER_MILLIONS = {(110, "preact"): 1.7, (164, "bottleneck"): 1.7, (164, "preact_bottleneck"): 1.7,
                  (1001, "bottleneck"): 10.2, (1001, "preact_bottleneck"): 10.2}


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A: the identity, subsampled by `stride` and zero-padded to `out_planes` channels."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.extra = out_planes - in_planes
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra:
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra))  # new channels are zeros: (B, C + extra, H, W)
        return x

    def extra_repr(self) -> str:
        return f"stride={self.stride}, extra_channels={self.extra}"


def _shortcut(kind: str, in_planes: int, out_planes: int, stride: int) -> nn.Module | None:
    """The shortcut of one block, or None for a plain block (which then adds nothing)."""
    if kind == "none":
        return None
    same_shape = stride == 1 and in_planes == out_planes
    if kind == "C" or (kind == "B" and not same_shape):
        return nn.Sequential(conv1x1(in_planes, out_planes, stride), nn.BatchNorm2d(out_planes))
    if same_shape:
        return nn.Identity()
    return ZeroPadShortcut(in_planes, out_planes, stride)


class BasicBlock(nn.Module):
    """Two 3x3 convs (Fig. 2 / Fig. 5 left), with or without the shortcut addition."""

    expansion: int = 1

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: str, stride_in: str) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(shortcut, in_planes, planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 (reduce), 3x3, 1x1 (restore, 4x) convs (Fig. 5 right).

    The paper strides the first 1x1 conv; torchvision's "v1.5" strides the 3x3 (`stride_in="3x3"`).
    """

    expansion: int = 4

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: str, stride_in: str) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        stride_1x1, stride_3x3 = (stride, 1) if stride_in == "first_1x1" else (1, stride)
        self.conv1 = conv1x1(in_planes, planes, stride_1x1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride_3x3)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_planes)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(shortcut, in_planes, out_planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.relu(out)


class Response(nn.Identity):
    """Marks the output of a residual branch's last 3x3 conv where it is added to a shortcut before
    any BN normalises it (a pre-activation basic unit with a shortcut), so the layer probes
    (trainers/probes.py) read the response there; computes nothing. A unit without a shortcut has
    none: the next BN normalises its conv's output, as in a plain net of original units."""


def _preact_shortcut(kind: str, in_planes: int, out_planes: int, stride: int) -> nn.Module | None:
    """A pre-activation unit's shortcut: as `_shortcut`, but a projection is a bare 1x1 conv."""
    if kind == "C" or (kind == "B" and not (stride == 1 and in_planes == out_planes)):
        return conv1x1(in_planes, out_planes, stride)
    return _shortcut(kind, in_planes, out_planes, stride)


class PreActBlock(nn.Module):
    """BN-ReLU-3x3 conv, BN-ReLU-3x3 conv, then the addition and nothing after it (ECCV 2016 Fig. 1b).

    Modules are registered in forward order (bn1, conv1, bn2, conv2, response) because the probes
    pair each 3x3 conv with the module registered after it; the ReLUs are functional for the same reason.
    `first`: the net's first unit (it activates before the split, as does a unit whose shape changes).
    """

    expansion: int = 1

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: str, stride_in: str,
                 first: bool = False) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.response = Response() if shortcut != "none" else None
        self.shortcut = _preact_shortcut(shortcut, in_planes, planes, stride)
        self.activate_before_split = first or stride != 1 or in_planes != planes

    def forward(self, x: Tensor) -> Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(pre))))
        if self.response is not None:
            out = self.response(out)
        return _preact_add(self, x, pre, out)


class PreActBottleneck(nn.Module):
    """BN-ReLU-1x1 conv (reduce), BN-ReLU-3x3 conv, BN-ReLU-1x1 conv (restore, 4x), then the addition.

    The stride sits where `stride_in` says, as in :class:`Bottleneck`; `first` as in :class:`PreActBlock`.
    """

    expansion: int = 4

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: str, stride_in: str,
                 first: bool = False) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        stride_1x1, stride_3x3 = (stride, 1) if stride_in == "first_1x1" else (1, stride)
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv1x1(in_planes, planes, stride_1x1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride_3x3)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_planes)
        self.shortcut = _preact_shortcut(shortcut, in_planes, out_planes, stride)
        self.activate_before_split = first or stride != 1 or in_planes != out_planes

    def forward(self, x: Tensor) -> Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return _preact_add(self, x, pre, out)


def _preact_add(unit: PreActBlock | PreActBottleneck, x: Tensor, pre: Tensor, out: Tensor) -> Tensor:
    """The unit's output: its branch plus its shortcut, of the pre-activated input where the unit
    activates before the split (the first unit, a change of shape) or the shortcut projects."""
    if unit.shortcut is None:
        return out
    if unit.activate_before_split or isinstance(unit.shortcut, nn.Conv2d):
        return out + unit.shortcut(pre)
    return out + unit.shortcut(x)


class PreActResNet(nn.Module):
    """CIFAR layout with pre-activation units: a bare 3x3 stem conv, three stages, BN-ReLU, pooling, fc."""

    def __init__(
        self,
        block: type[PreActBlock | PreActBottleneck],
        layers: list[int],
        widths: list[int],
        *,
        shortcut: str,
        num_classes: int,
        in_channels: int,
        stride_in: str,
    ) -> None:
        super().__init__()
        self.in_planes = widths[0]
        self.conv1 = conv3x3(in_channels, widths[0])  # normalised by the first unit's bn1
        for i, (blocks, width) in enumerate(zip(layers, widths)):
            stride = 1 if i == 0 else 2
            units = []
            for j in range(blocks):
                units.append(block(self.in_planes, width, stride if j == 0 else 1, shortcut, stride_in,
                                   first=i == 0 and j == 0))
                self.in_planes = width * block.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*units))
        self.num_stages = len(layers)
        self.bn = nn.BatchNorm2d(self.in_planes)  # the final BN-ReLU before pooling
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(self.in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, num_classes)
        x = self.conv1(x)
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        x = F.relu(self.bn(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class ResNet(nn.Module):
    """A stem, one stage (`layer1`, `layer2`, ...) per entry of `layers`, pooling and a linear layer."""

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: list[int],
        widths: list[int],
        *,
        imagenet_stem: bool,
        shortcut: str,
        num_classes: int,
        in_channels: int,
        stride_in: str,
        zero_init_residual: bool,
    ) -> None:
        super().__init__()
        self.in_planes = widths[0]
        if imagenet_stem:
            self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = conv3x3(in_channels, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if imagenet_stem else nn.Identity()
        for i, (blocks, width) in enumerate(zip(layers, widths)):
            stride = 1 if i == 0 else 2
            self.add_module(f"layer{i + 1}", self._make_layer(block, width, blocks, stride, shortcut, stride_in))
        self.num_stages = len(layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[-1] * block.expansion, num_classes)

        # He et al. 2015 ("Delving deep into rectifiers") initialisation, as the paper uses.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

        # Zero the last BN of each residual branch so every block starts as the identity
        # (Goyal et al. 2017, https://arxiv.org/abs/1706.02677). A plain block has no identity to start
        # as: zeroing its BN would cut the signal, so it is left alone.
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)) and m.shortcut is not None:
                    last_bn = m.bn3 if isinstance(m, Bottleneck) else m.bn2
                    nn.init.constant_(last_bn.weight, 0)

    def _make_layer(
        self, block: type[BasicBlock | Bottleneck], planes: int, blocks: int, stride: int, shortcut: str, stride_in: str
    ) -> nn.Sequential:
        layers = []
        for i in range(blocks):
            layers.append(block(self.in_planes, planes, stride if i == 0 else 1, shortcut, stride_in))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, num_classes)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")


def build_model(
    model: str,
    depth: int,
    block: str,
    shortcut: str,
    num_classes: int,
    in_channels: int = 3,
    stride_in: str = "first_1x1",
    zero_init_residual: bool = False,
) -> ResNet | PreActResNet:
    """The paper's network for (model, depth, block, shortcut); ValueError for one the family lacks.

    `zero_init_residual` zeroes the last BN of each residual branch; a pre-activation branch ends in
    a conv, not a BN, so it is refused there.
    """
    _choice("model", model, MODELS)
    _choice("block", block, BLOCKS)
    _choice("shortcut", shortcut, SHORTCUTS)
    _choice("stride_in", stride_in, STRIDE_IN)
    if num_classes < 1 or in_channels < 1:
        raise ValueError(f"num_classes and in_channels must be positive, not {num_classes} and {in_channels}")
    layers = stage_units(model, depth, block)
    if block in PREACT_BLOCKS:
        if zero_init_residual:
            raise ValueError(f"zero_init_residual needs a BN at the end of each branch; {block} units have none")
        return PreActResNet(
            PreActBlock if block == "preact" else PreActBottleneck,
            layers,
            [16, 32, 64],
            shortcut=shortcut,
            num_classes=num_classes,
            in_channels=in_channels,
            stride_in=stride_in,
        )
    return ResNet(
        BasicBlock if block == "basic" else Bottleneck,
        layers,
        [16, 32, 64] if model == "cifar" else [64, 128, 256, 512],
        imagenet_stem=model == "imagenet",
        shortcut=shortcut,
        num_classes=num_classes,
        in_channels=in_channels,
        stride_in=stride_in,
        zero_init_residual=zero_init_residual,
    )


def count_params(module: nn.Module) -> int:
    """Number of parameters (BN scales and shifts included, as the paper's counts are)."""
    return sum(p.numel() for p in module.parameters())


def count_weights(module: nn.Module) -> int:
    """Parameters outside BatchNorm layers (conv and fc weights), as the ECCV 2016 paper counts them."""
    return sum(
        p.numel() for m in module.modules() if not isinstance(m, nn.BatchNorm2d) for p in m.parameters(recurse=False)
    )


def _check_table() -> int:
    """Build every net of the docstring's table and compare its parameter count; 0 when all match."""
    failures = 0
    for model, depth, block, shortcut, num_classes, expected in EXPECTED_PARAMS:
        for kind in (shortcut, "none") if shortcut == "A" else (shortcut,):
            net = build_model(model, depth, block, kind, num_classes)
            got = count_params(net)
            ok = got == expected
            paper = PAPER_MILLIONS.get((depth, block)) if model == "cifar" else None
            if paper is not None and round(count_weights(net) / 1e6, 1) != paper:
                ok = False
            failures += not ok
            note = f"  (paper {paper}M)" if paper is not None else ""
            print(f"{model:9s}{depth:5d}  {block:18s}{kind:5s}{got:>12,d}  {'ok' if ok else f'expected {expected:,d}'}{note}")
    return failures


if __name__ == "__main__":
    raise SystemExit(1 if _check_table() else 0)
