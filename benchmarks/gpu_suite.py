"""GPU throughput: resweep's GPU-resident loader + bf16 against a classic DataLoader in fp32, and
several trials sharing one GPU through fractional GPU resources. Under 5 minutes on one GPU.

    python -m benchmarks.gpu_suite [--device cuda|cpu] [--quick] [--json] [--out FILE]

1. Images per second of one training epoch, ResNet-20 and ResNet-56 on CIFAR-sized data
   (3x32x32, 10 classes; synthetic, so nothing is downloaded): resweep's path (trainers.data +
   trainers.loop: the whole set on the GPU, batches cut, shuffled and augmented by tensor ops,
   bf16 autocast, channels_last) against the torchvision recipe most CIFAR code uses (uint8
   images -> PIL -> RandomCrop(32, 4) + RandomHorizontalFlip + ToTensor + Normalize in DataLoader
   workers, pinned memory, fp32). Same model, optimizer and batch size (128); the first epoch
   (cuDNN autotuning, worker start-up) is not timed; the median of the timed epochs counts.
2. Aggregate images per second of 1, 2, 4 and 8 concurrent ResNet-20 trials on one GPU: a real
   Ray Tune run of trainers.trainable.train_trial with resources {cpu: 1, gpu: 1/k}, each trial
   reporting images_per_s (training only) per epoch; aggregate = the sum over trials of their
   median images_per_s after the first epoch. Baseline: one trial alone.

`--device cpu --quick` runs the same code on the CPU with tiny sizes (CPU threads instead of GPU
shares), to check the logic on a machine without a GPU; its numbers are not GPU figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.common import REPO, result
from resweep.config import TrialConfig
from trainers.data import load_data, make_synthetic
from trainers.loop import Loop
from trainers.models import build_model

DEPTHS = (20, 56)
CONCURRENCY = (1, 2, 4, 8)
BATCH = 128
SIZES = {  # per device and quick: training images, timed epochs, DataLoader workers, concurrency
    # Trials train on CIFAR-10's 50,000 images an epoch, so that each timed epoch is long beside
    # the few seconds between the first and the last of 8 trials starting.
    ("cuda", False): dict(num_train=25_000, epochs=3, workers=8, trial_epochs=3, levels=CONCURRENCY,
                          trial_train=50_000),
    ("cuda", True): dict(num_train=5_000, epochs=2, workers=4, trial_epochs=3, levels=(1, 2),
                         trial_train=5_000),
    ("cpu", False): dict(num_train=2_048, epochs=2, workers=1, trial_epochs=3, levels=(1, 2),
                         trial_train=1_024),
    ("cpu", True): dict(num_train=256, epochs=1, workers=1, trial_epochs=2, levels=(1, 2),
                        trial_train=256),
}
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def synthetic_spec(num_train: int) -> dict:
    return {"num_train": num_train, "num_test": 512, "image_size": 32, "channels": 3,
            "num_classes": 10}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resweep_images_per_s(depth: int, device: torch.device, num_train: int, epochs: int) -> float:
    """trainers' own path: data resident on the device, tensor-op augmentation, bf16 on CUDA."""
    data = load_data("synthetic", synthetic=synthetic_spec(num_train), device=device)
    model = build_model("cifar", depth, "basic", "A", data.num_classes)
    loop = Loop(model, data, TrialConfig(epochs=epochs + 1, batch_size=BATCH, precision="bf16"),
                generator=torch.Generator(device=device).manual_seed(0), device=device)
    loop.train_epoch(0.1)  # warm-up: cuDNN autotuning, allocator
    seconds = [loop.train_epoch(0.1)[2] for _ in range(epochs)]  # .item() inside waits for the GPU
    return num_train / statistics.median(seconds)


class UInt8Images(torch.utils.data.Dataset):
    """Images kept as torchvision's CIFAR10 keeps them (uint8, HWC), returned as PIL images."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def dataloader_images_per_s(depth: int, device: torch.device, num_train: int, epochs: int,
                            workers: int) -> float:
    """The classic recipe: PIL transforms in DataLoader workers, pinned memory, fp32."""
    import torchvision.transforms as T

    x, y, *_ = make_synthetic(**synthetic_spec(num_train))
    lo, hi = x.amin(), x.amax()
    images = ((x - lo) / (hi - lo) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(CIFAR_MEAN, CIFAR_STD)])
    loader = torch.utils.data.DataLoader(
        UInt8Images(images, y.numpy(), transform), batch_size=BATCH, shuffle=True,
        num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    model = build_model("cifar", depth, "basic", "A", 10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    model.train()

    def epoch() -> float:
        start = time.perf_counter()
        for xb, yb in loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        _sync(device)
        return time.perf_counter() - start

    epoch()  # warm-up: workers start, cuDNN autotuning
    seconds = [epoch() for _ in range(epochs)]
    return num_train / statistics.median(seconds)


def _emit(row: dict) -> dict:
    """Print a row the moment it is measured (to stderr), so a run cut short still tells."""
    print(f"[gpu_suite] {row['name']}: {row['value']:,.0f} {row['unit']} vs {row['baseline']}: "
          f"{row['baseline_value']:,.0f} ({row['ratio']:.2f}x)", file=sys.stderr, flush=True)
    return row


def per_trial_rows(device: torch.device, sizes: dict) -> list[dict]:
    rows = []
    path = "GPU-resident + bf16" if device.type == "cuda" else "device-resident (CPU, fp32)"
    for depth in DEPTHS:
        ours = resweep_images_per_s(depth, device, sizes["num_train"], sizes["epochs"])
        base = dataloader_images_per_s(depth, device, sizes["num_train"], sizes["epochs"],
                                       sizes["workers"])
        rows.append(_emit(result(f"ResNet-{depth} one trial, {path}", ours, "images/s",
                           f"torchvision DataLoader ({sizes['workers']} workers), fp32", base,
                           note=f"{sizes['num_train']:,} images x {sizes['epochs']} timed epochs"
                                if depth == DEPTHS[0] else None)))
    return rows


def concurrent_rows(device: torch.device, sizes: dict) -> list[dict]:
    """k trials at once through Ray Tune with fractional GPUs; aggregate training images/s."""
    import ray
    from ray import tune

    from trainers.trainable import train_trial

    gpu = device.type == "cuda"
    ray.init(num_cpus=max(sizes["levels"]) + 1 if not gpu else None, include_dashboard=False,
             log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    storage = Path(tempfile.mkdtemp(prefix="resweep-gpu-suite-"))
    rows, single = [], None
    try:
        for k in sizes["levels"]:
            resources = {"cpu": 1, "gpu": 1 / k} if gpu else {"cpu": 1}
            config = {"dataset": "synthetic", "model": "cifar", "depth": 20, "block": "basic",
                      "shortcut": "A", "seed": tune.grid_search(list(range(k))),
                      "epochs": sizes["trial_epochs"], "batch_size": BATCH, "lr_milestones": [],
                      "probes_every": sizes["trial_epochs"], "checkpoint_every": sizes["trial_epochs"],
                      "synthetic": synthetic_spec(sizes["trial_train"])}
            tuner = tune.Tuner(
                tune.with_resources(train_trial, resources), param_space=config,
                tune_config=tune.TuneConfig(max_concurrent_trials=k),
                run_config=tune.RunConfig(name=f"gpu-suite-{k}", storage_path=str(storage),
                                          verbose=0))
            grid = tuner.fit()
            speeds = []
            for r in grid:
                if r.error:
                    raise RuntimeError(f"trial failed with {k} concurrent: {r.error}")
                ips = r.metrics_dataframe.sort_values("epoch")["images_per_s"].tolist()
                speeds.append(statistics.median(ips[1:] or ips))
            total = sum(speeds)
            single = single or total
            share = f"gpu: 1/{k}" if gpu else "cpu: 1"
            rows.append(_emit(result(
                f"{k} concurrent ResNet-20 trials ({share} each), aggregate", total, "images/s",
                "one trial alone", single,
                note=f"per trial: {', '.join(f'{s:,.0f}' for s in speeds)}")))
    finally:
        ray.shutdown()
        shutil.rmtree(storage, ignore_errors=True)
    return rows


def run(quick: bool, device: str | None = None, parts: str = "both") -> list[dict]:
    """The suite's rows. Without CUDA it runs the CPU logic check (`--device cpu --quick`)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        quick = quick or device == "cpu"
    dev = torch.device(device)
    sizes = SIZES[dev.type, quick]
    if dev.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    rows = per_trial_rows(dev, sizes) if parts in ("both", "per-trial") else []
    if parts in ("both", "concurrent"):
        rows += concurrent_rows(dev, sizes)
    if dev.type == "cpu":
        for r in rows:
            r["note"] = "CPU logic check, not a GPU figure" + (f"; {r['note']}" if r.get("note") else "")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default=None,
                   help="default: cuda when present, else a CPU logic check")
    p.add_argument("--quick", action="store_true", help="small sizes")
    p.add_argument("--parts", choices=("both", "per-trial", "concurrent"), default="both")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--out", type=Path, help="also write the rows to this JSON file")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here; use --device cpu --quick to check the logic")
    t0 = time.perf_counter()
    rows = run(args.quick, args.device, args.parts)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1) + "\n")
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    name = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else "CPU"
    print(f"gpu_suite on {name}, {time.perf_counter() - t0:.0f} s")
    for r in rows:
        print(f"{r['name']:<58} {r['value']:>10,.0f} {r['unit']}  vs {r['baseline']}: "
              f"{r['baseline_value']:,.0f} ({r['ratio']:.2f}x)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
