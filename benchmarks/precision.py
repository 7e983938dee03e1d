"""fp32 against bf16 training: what the sweep file's `train.precision` costs and changes.

For ResNet-20, ResNet-110 and pre-activation ResNet-164 on CIFAR-sized data (3x32x32, 10 classes,
synthetic and GPU-resident like a trial's), through the real `trainers.loop.Loop`:

- training throughput (images/s over timed epochs after one warm-up epoch) with `precision: fp32`
  (no autocast, TF32 off: the paper's arithmetic) and with `precision: bf16` (autocast,
  channels_last on CUDA); the ratio bf16 / fp32 is the speed-up a sweep would buy;
- how far bf16 moves the numbers: the largest relative difference of one batch's logits between
  the two precisions on the same weights.

Needs a GPU for figures that mean anything (`python -m benchmarks.precision`, about 3 minutes on
one GPU); on a CPU (`--device cpu --quick`) it only checks that both paths run. No GPU was lent
to the session that wrote it, so it has not yet run on one (see docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from benchmarks.common import result
from resweep.config import TrialConfig
from trainers.data import load_data
from trainers.loop import Loop
from trainers.models import build_model

NETS = [("ResNet-20", 20, "basic", "A"), ("ResNet-110", 110, "basic", "A"),
        ("pre-act ResNet-164", 164, "preact_bottleneck", "B")]


def _throughput(net, data, precision: str, epochs: int, device: torch.device) -> float:
    torch.manual_seed(0)
    model = build_model("cifar", net[1], net[2], net[3], 10)
    loop = Loop(model, data, TrialConfig(epochs=epochs + 1, batch_size=128, precision=precision),
                generator=torch.Generator(device=device).manual_seed(0), device=device)
    loop.train_epoch()  # warm-up: cuDNN autotuning, allocator
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(epochs):
        loop.train_epoch()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return epochs * len(data.train) / (time.perf_counter() - start)


@torch.no_grad()
def _logit_difference(net, data, device: torch.device) -> float:
    torch.manual_seed(0)
    model = build_model("cifar", net[1], net[2], net[3], 10).to(device).eval()
    x = data.test.x[:256].to(device).float()
    Loop(model, data, TrialConfig(epochs=1), generator=torch.Generator(device=device), device=device)  # fp32 flags
    ref = model(x)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        low = model(x).float()
    return float(((low - ref).abs().max() / ref.abs().max().clamp(min=1e-12)).item())


def run(quick: bool, device: str | None = None) -> list[dict]:
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = dev.type == "cuda"
    num_train = (10_000 if quick else 50_000) if cuda else 256
    epochs = (2 if quick else 3) if cuda else 1
    nets = NETS if cuda else NETS[:1]
    data = load_data("synthetic", synthetic={"num_train": num_train, "num_test": 512, "image_size": 32,
                                             "channels": 3, "num_classes": 10}, device=dev)
    rows = []
    where = torch.cuda.get_device_name(dev) if cuda else "cpu (logic check only)"
    for net in nets:
        fp32 = _throughput(net, data, "fp32", epochs, dev)
        bf16 = _throughput(net, data, "bf16", epochs, dev)
        rows.append(result(f"precision: {net[0]} training, bf16 (autocast{', channels_last' if cuda else ''})",
                           bf16, "images/s", "fp32 (TF32 off)", fp32, note=f"{where}, {num_train} images"))
        rows.append(result(f"precision: {net[0]}, bf16 vs fp32 logits, max relative difference",
                           _logit_difference(net, data, dev), "x", note=where))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default=None)
    args = p.parse_args()
    for row in run(args.quick, args.device):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
