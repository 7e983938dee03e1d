"""Layer responses, the paper's Fig. 7.

For every 3x3 conv layer: the standard deviation (and mean) of its output after the BN that
normalises it and before any ReLU or shortcut addition, over a whole split (the test set), with BN
in eval mode. The statistic is taken over every element of the response, (N, C, H, W) pooled, as a
population std.

One probe point for every block, so that the same function gives the same numbers whatever block
builds it: the BN that normalises a 3x3 conv is the module registered right after it (conv1/bn1,
conv2/bn2, ... in this package's and torchvision's original blocks: Fig. 7's definition). In a
pre-activation unit (BN-ReLU-conv) that is the BN that next takes the conv's output: the unit's next
bn, or, for its last conv in a plain net (no shortcut), the next unit's bn1 or the final bn. A plain
net of pre-activation units computes what a plain net of original units computes, and records the
same responses (tests/trainers/test_probes.py). Only where a conv's output is added to a shortcut
before any BN sees it (the last conv of a residual pre-activation basic unit) is there no BN: a
`models.Response` marker registered after the conv stands in, and the response is the branch's
output itself, just before the addition. A forward hook on that module sees exactly the response,
before any ReLU or addition. Hooks exist only while a probe (`ResponseProbe`) is entered: for
`layer_responses`' own pass, or for the evaluation pass of a probe epoch (trainers.loop), which
then serves as the probe pass instead of a second forward pass over the same test set.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from contextlib import nullcontext
from typing import Self

import torch
import torch.nn as nn
from torch import Tensor

from trainers.models import Response

_STAGE = re.compile(r"^layer(\d+)\.")


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(module path of each 3x3 conv, the BN that normalises it), in registration order."""
    leaves = [(name, m) for name, m in model.named_modules() if not any(True for _ in m.children())]
    pairs = []
    for (name, m), (_, following) in zip(leaves, leaves[1:] + [("", None)]):
        if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
            if isinstance(following, Response):
                pairs.append((name, following))
                continue
            if not (isinstance(following, nn.BatchNorm2d) and following.num_features == m.out_channels):
                raise ValueError(f"3x3 conv {name} is not followed by its BatchNorm2d; its response is undefined")
            pairs.append((name, following))
    return pairs


def stage_of(name: str) -> int:
    """0 for the stem, k for a module under `layerk.`."""
    match = _STAGE.match(name)
    return int(match.group(1)) if match else 0


def _sums(output: Tensor) -> tuple[Tensor, Tensor]:
    """(sum, sum of squares) of every element of `output`, without copying it.

    torch.var_mean costs about as much as the conv before it on a CPU; a sum and BLAS dot products
    cost a few percent. The dots run over chunks on the CPU, where one float32 dot over millions of
    elements loses about four digits; CUDA's reduction is a tree and needs no chunks.
    """
    x = output.detach().float()
    flat = x.view(-1) if x.is_contiguous() else x.permute(0, 2, 3, 1).reshape(-1)  # channels_last: a view
    if flat.is_cuda:
        return flat.sum(), torch.dot(flat, flat)
    return flat.sum(), torch.stack([torch.dot(c, c) for c in flat.split(1 << 16)]).sum()


class ResponseProbe:
    """Gathers the layer responses of `model` from the forward passes run while it is entered.

    Forward hooks on each 3x3 conv's normalising module add up every response (count, sum, sum of
    squares, kept on the device) as the passes run; `records()` turns the sums into one record per
    conv. The hooks read the responses and change nothing, so the passes compute exactly what they
    compute without them: an evaluation pass over the test set (trainers.loop.Loop.evaluate) can be
    the probe pass itself, and the records are those of `layer_responses` over the same batches.
    The passes must run in eval mode for the records to be Fig. 7's (the caller's duty).
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.pairs = conv_bn_pairs(model)
        # Per batch: (count, sum, sum of squares) of each response, kept on the device until the end.
        self.stats: dict[str, list[tuple[int, Tensor, Tensor]]] = {name: [] for name, _ in self.pairs}
        self.fired: list[str] = []  # conv paths in the order their BN first ran
        self.handles: list = []

    def _hook_for(self, name: str):
        stats, fired = self.stats[name], self.fired

        def hook(module: nn.Module, inputs: tuple[Tensor], output: Tensor) -> None:
            # Runs before any in-place ReLU that follows can touch `output`; in fp32 even under autocast.
            with torch.autocast(output.device.type, enabled=False):
                stats.append((output.numel(), *_sums(output)))
            if len(stats) == 1:
                fired.append(name)

        return hook

    def __enter__(self) -> Self:
        self.handles = [bn.register_forward_hook(self._hook_for(name)) for name, bn in self.pairs]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def records(self) -> list[dict]:
        """One record per 3x3 conv that ran: {layer, name, stage, std, mean}, layer = order in the
        forward pass."""
        records = []
        for layer, name in enumerate(self.fired):
            stats = self.stats[name]
            count = sum(n for n, _, _ in stats)
            total = torch.stack([s for _, s, _ in stats]).double().sum().item()
            squares = torch.stack([q for _, _, q in stats]).double().sum().item()
            mean = total / count
            var = max(squares / count - mean * mean, 0.0)
            records.append({"layer": layer, "name": name, "stage": stage_of(name), "std": var**0.5, "mean": mean})
        return records


@torch.no_grad()
def layer_responses(
    model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], *, amp: bool = False
) -> list[dict]:
    """One record per 3x3 conv: {layer, name, stage, std, mean}, layer = order in the forward pass.

    A pass of its own over `batches`, in eval mode (the model's mode is restored after)."""
    was_training = model.training
    try:
        with ResponseProbe(model) as probe:
            model.eval()
            device = next(model.parameters()).device
            autocast = torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext()
            with autocast:
                for x, _ in batches:
                    model(x)
    finally:
        model.train(was_training)
    return probe.records()
