"""The residual-network family of He et al., "Deep Residual Learning for Image Recognition" (2016).

One entry point, :func:`build_model`. Two layouts:

- ``cifar``: 3x3 conv (16 filters), three stages of 16/32/64 filters on maps of size s, s/2, s/4,
  global average pooling, one linear layer. Basic blocks give depth 6n+2, bottlenecks 9n+2.
- ``imagenet``: 7x7/2 conv stem and 3x3/2 max-pool, four stages of 64/128/256/512 filters;
  depth 18 and 34 with basic blocks, 50, 101 and 152 with bottlenecks.

Shortcuts (the paper's Sec. 3.3 and Table 3): ``none`` is a plain net, with no addition at all;
``A`` is the identity, subsampled and zero-padded where the shape changes (no parameters); ``B`` is
the identity except a 1x1 conv + BN projection where the shape changes; ``C`` projects on every block.

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

(all with 10 classes for cifar and 1,000 for imagenet; the imagenet ones equal torchvision's).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

MODELS = ("cifar", "imagenet")
BLOCKS = ("basic", "bottleneck")
SHORTCUTS = ("none", "A", "B", "C")
STRIDE_IN = ("first_1x1", "3x3")

IMAGENET_LAYERS = {
    18: ("basic", [2, 2, 2, 2]),
    34: ("basic", [3, 4, 6, 3]),
    50: ("bottleneck", [3, 4, 6, 3]),
    101: ("bottleneck", [3, 4, 23, 3]),
    152: ("bottleneck", [3, 8, 36, 3]),
}

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
]


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


def _stage_blocks(model: str, depth: int, block: str) -> list[int]:
    """Blocks per stage for a (model, depth, block), or ValueError naming what is allowed."""
    if model == "cifar":
        layers_per_block = 2 if block == "basic" else 3
        n, rest = divmod(depth - 2, 3 * layers_per_block)
        if n < 1 or rest:
            form = "6n+2 (20, 32, 44, 56, 110, ...)" if block == "basic" else "9n+2 (29, 47, 164, ...)"
            raise ValueError(f"depth {depth} is not a cifar net with {block} blocks: depth must be {form}")
        return [n, n, n]
    expected = IMAGENET_LAYERS.get(depth)
    if expected is None or expected[0] != block:
        allowed = ", ".join(f"{d} ({b})" for d, (b, _) in IMAGENET_LAYERS.items())
        raise ValueError(f"imagenet has no {block} net of depth {depth}: allowed depths (block) are {allowed}")
    return expected[1]


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
) -> ResNet:
    """The paper's network for (model, depth, block, shortcut); ValueError for one the family lacks."""
    _choice("model", model, MODELS)
    _choice("block", block, BLOCKS)
    _choice("shortcut", shortcut, SHORTCUTS)
    _choice("stride_in", stride_in, STRIDE_IN)
    if num_classes < 1 or in_channels < 1:
        raise ValueError(f"num_classes and in_channels must be positive, not {num_classes} and {in_channels}")
    layers = _stage_blocks(model, depth, block)
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


def _check_table() -> int:
    """Build every net of the docstring's table and compare its parameter count; 0 when all match."""
    failures = 0
    for model, depth, block, shortcut, num_classes, expected in EXPECTED_PARAMS:
        for kind in (shortcut, "none") if shortcut == "A" else (shortcut,):
            got = count_params(build_model(model, depth, block, kind, num_classes))
            ok = got == expected
            failures += not ok
            print(f"{model:9s}{depth:5d}  {block:11s}{kind:5s}{got:>12,d}  {'ok' if ok else f'expected {expected:,d}'}")
    return failures


if __name__ == "__main__":
    raise SystemExit(1 if _check_table() else 0)
