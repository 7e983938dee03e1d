"""Layer responses, the paper's Fig. 7.

For every 3x3 conv layer: the standard deviation (and mean) of its output after its BN and before the
ReLU or the shortcut addition, over a whole split (the test set), with BN in eval mode. The statistic
is taken over every element of the response, (N, C, H, W) pooled, as a population std.

The BN that belongs to a 3x3 conv is the module registered right after it (conv1/bn1, conv2/bn2, ...,
as in this package's and torchvision's blocks); a forward hook on that BN sees exactly the response,
before the block applies its ReLU or addition. Hooks exist only for the probe pass.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from contextlib import nullcontext

import torch
import torch.nn as nn
from torch import Tensor

_STAGE = re.compile(r"^layer(\d+)\.")


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, nn.BatchNorm2d]]:
    """(module path of each 3x3 conv, the BN that normalises it), in registration order."""
    leaves = [(name, m) for name, m in model.named_modules() if not any(True for _ in m.children())]
    pairs = []
    for (name, m), (_, following) in zip(leaves, leaves[1:] + [("", None)]):
        if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
            if not (isinstance(following, nn.BatchNorm2d) and following.num_features == m.out_channels):
                raise ValueError(f"3x3 conv {name} is not followed by its BatchNorm2d; its response is undefined")
            pairs.append((name, following))
    return pairs


def stage_of(name: str) -> int:
    """0 for the stem, k for a module under `layerk.`."""
    match = _STAGE.match(name)
    return int(match.group(1)) if match else 0


@torch.no_grad()
def layer_responses(
    model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], *, amp: bool = False
) -> list[dict]:
    """One record per 3x3 conv: {layer, name, stage, std, mean}, layer = order in the forward pass."""
    pairs = conv_bn_pairs(model)
    # Per batch: (count, mean, var) of each response, kept on the device until the end.
    stats: dict[str, list[tuple[int, Tensor, Tensor]]] = {name: [] for name, _ in pairs}
    fired: list[str] = []  # conv paths in the order their BN first ran

    def hook_for(name: str):
        def hook(module: nn.Module, inputs: tuple[Tensor], output: Tensor) -> None:
            # Runs before any in-place ReLU that follows can touch `output`.
            var, mean = torch.var_mean(output.float(), correction=0)
            stats[name].append((output.numel(), mean, var))
            if len(stats[name]) == 1:
                fired.append(name)

        return hook

    was_training = model.training
    handles = [bn.register_forward_hook(hook_for(name)) for name, bn in pairs]
    try:
        model.eval()
        device = next(model.parameters()).device
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext()
        with autocast:
            for x, _ in batches:
                model(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)

    records = []
    for layer, name in enumerate(fired):
        counts = torch.tensor([n for n, _, _ in stats[name]], dtype=torch.float64)
        means = torch.stack([m for _, m, _ in stats[name]]).double().cpu()
        variances = torch.stack([v for _, _, v in stats[name]]).double().cpu()
        total = counts.sum()
        mean = (counts * means).sum() / total
        # Pooled variance: within-batch variance plus the spread of the batch means.
        var = (counts * (variances + (means - mean) ** 2)).sum() / total
        records.append(
            {"layer": layer, "name": name, "stage": stage_of(name), "std": var.sqrt().item(), "mean": mean.item()}
        )
    return records
