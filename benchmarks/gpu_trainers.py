"""trainers on a GPU: ResNet-20 on CIFAR-sized synthetic data (3x32x32, 10 classes, 50,000 training
and 10,000 test images), 2 epochs, with and without the GPU-resident loader and bf16.

    python -m benchmarks.gpu_trainers [--device cuda|cpu] [--num-train N] [--num-test N] [--json]

Four runs of trainers.loop.Loop, each on a freshly initialised model (same seed):
  resident + bf16   the whole dataset on the GPU, batches cut/shuffled/augmented there; bf16
                    autocast and channels_last (what a trial does on a GPU)
  resident + fp32   the same data path, fp32, contiguous
  host + bf16       the dataset in host memory, batches and augmentation made by the CPU and
                    copied to the GPU one by one (the same Batches code on CPU tensors)
  host + fp32       both off: the baseline
Printed per run: images/s of each epoch (epoch 1 includes cuDNN autotuning; epoch 2 counts),
train_err of each epoch and the final test_err (all four must learn). Then a probe pass against an
evaluation pass, and a checkpoint/resume of trainers.trainable.train on the device (its CUDA
RNG and generator states must round-trip). Under 3 minutes on one H200.

`--device cpu` runs the same code with small sizes on the CPU to check its logic (there "resident"
and "host" are the same memory); its figures are not GPU figures.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

import torch

from benchmarks.common import result
from resweep.config import TrialConfig
from trainers.data import load_data
from trainers.loop import Loop
from trainers.models import build_model
from trainers.probes import layer_responses
from trainers.trainable import LocalReporter, train

EPOCHS = 2
BATCH = 128
SIZES = {"cuda": (50_000, 10_000), "cpu": (256, 128)}  # training, test images
VARIANTS = [  # name, data on the GPU, bf16 autocast + channels_last
    ("resident + bf16", True, True),
    ("resident + fp32", True, False),
    ("host + bf16", False, True),
    ("host + fp32", False, False),
]


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)  # progress; stdout is kept for --json


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_variant(device: torch.device, spec: dict, resident: bool, fast: bool) -> dict:
    """Two epochs of ResNet-20 in one configuration: images/s and errors per epoch."""
    where = device if resident else torch.device("cpu")
    data = load_data("synthetic", synthetic=spec, device=where)
    torch.manual_seed(0)
    model = build_model("cifar", 20, "basic", "A", data.num_classes)
    loop = Loop(model, data, TrialConfig(epochs=EPOCHS, batch_size=BATCH),
                generator=torch.Generator(device=where).manual_seed(0), device=device,
                amp=fast, channels_last=fast)
    epochs = list(loop)
    return {
        "images_per_s": [m["images_per_s"] for m in epochs],
        "train_err": [m["train_err"] for m in epochs],
        "test_err": epochs[-1]["test_err"],
        "loop": loop,
    }


def probe_vs_eval(loop: Loop, repeats: int = 3) -> tuple[float, float]:
    """Median seconds of an evaluation pass and of a probe pass over the test set."""
    dev, test = loop.device, loop.data.test

    def timed(fn) -> float:
        _sync(dev)
        start = time.perf_counter()
        fn()
        _sync(dev)
        return time.perf_counter() - start

    evals, probes = [], []
    for _ in range(repeats):
        evals.append(timed(lambda: loop.evaluate(test)))
        probes.append(timed(lambda: layer_responses(loop.model, loop.eval_batches(test), amp=loop.amp)))
    return statistics.median(evals), statistics.median(probes)


class _Crash(Exception):
    pass


def resume_check(device: torch.device) -> str:
    """train on the device, killed after epoch 2 and resumed: epochs 1, 2, then epoch 2's result
    again from the checkpoint and epoch 3, finite losses, the milestone's lr."""
    config = {"dataset": "synthetic", "depth": 8, "epochs": 3, "batch_size": 64, "lr_milestones": [2],
              "probes_every": 3, "val_size": 64,
              "synthetic": {"num_train": 512, "num_test": 128, "image_size": 32, "channels": 3, "num_classes": 10}}

    class Crashing(LocalReporter):
        def report(self, metrics, checkpoint=None):
            super().report(metrics, checkpoint)
            if metrics["epoch"] == 2:
                raise _Crash

    first = Crashing()
    try:
        train(config, first, device=device)
    except _Crash:
        pass
    second = LocalReporter(checkpoint=first.checkpoint)
    train(config, second, device=device)
    epochs = [r["epoch"] for r in first.results + second.results]
    losses = [r["train_loss"] for r in first.results + second.results]
    # The resumed run first reports the restored epoch's result again (it may never have reached
    # the driver; the recorder keeps one row per epoch), then trains epoch 3.
    again = second.results[0] if second.results else {}
    same = all(again.get(k) == first.results[-1][k] for k in ("epoch", "train_loss", "test_err"))
    ok = (epochs == [1, 2, 2, 3] and same and all(math.isfinite(x) for x in losses)
          and "layer_stats" in second.results[-1])
    lr = second.results[-1]["lr"]
    return f"{'ok' if ok and abs(lr - 0.01) < 1e-12 else 'FAILED'}: epochs {epochs}, lr after milestone {lr:g}"


def run(quick: bool, device: str | None = None, num_train: int | None = None,
        num_test: int | None = None) -> list[dict]:
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    default_train, default_test = SIZES[dev.type]
    if quick and dev.type == "cuda":
        default_train, default_test = 10_000, 2_000
    spec = {"num_train": num_train or default_train, "num_test": num_test or default_test,
            "image_size": 32, "channels": 3, "num_classes": 10}
    if dev.type == "cpu":
        torch.set_num_threads(1)  # a logic check: one thread is steadier on a shared machine
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        _say(f"device: {torch.cuda.get_device_name(dev)}, torch {torch.__version__}")
    _say(f"ResNet-20 (A), synthetic {spec['num_train']:,} train / {spec['num_test']:,} test 3x32x32, "
         f"batch {BATCH}, {EPOCHS} epochs")

    runs = {}
    for name, resident, fast in VARIANTS:
        start = time.perf_counter()
        runs[name] = r = train_variant(dev, spec, resident, fast)
        _say(f"  {name:16s} images/s per epoch {', '.join(f'{x:9,.0f}' for x in r['images_per_s'])}   "
             f"train_err {', '.join(f'{e:.3f}' for e in r['train_err'])}   test_err {r['test_err']:.3f}   "
             f"({time.perf_counter() - start:.1f} s)")
        learned = r["train_err"][-1] < r["train_err"][0] and r["test_err"] < 0.5
        if not learned and dev.type == "cuda":  # the CPU check has too few images to learn in 2 epochs
            _say(f"  WARNING: {name} did not learn (chance is 0.9)")

    base_name = "host + fp32"
    base = runs[base_name]["images_per_s"][-1]
    rows = [
        result(f"ResNet-20 training, {name}", r["images_per_s"][-1], "images/s", base_name, base,
               note=f"epoch {EPOCHS} of {EPOCHS}; {spec['num_train']:,} images; test_err {r['test_err']:.3f}")
        for name, r in runs.items()
    ]
    eval_s, probe_s = probe_vs_eval(runs["resident + bf16"]["loop"])
    _say(f"  probe pass {probe_s:.3f} s vs evaluation pass {eval_s:.3f} s: ratio {probe_s / eval_s:.2f}")
    rows.append(result("probe pass (test set)", probe_s, "s", "evaluation pass", eval_s))
    verdict = resume_check(dev)
    _say(f"  checkpoint/resume on {dev.type}: {verdict}")
    rows.append(result("run_trial checkpoint/resume", 1.0 if verdict.startswith("ok") else 0.0, "ok", note=verdict))
    if dev.type == "cpu":
        for row in rows:
            row["note"] = "CPU logic check, not a GPU figure" + (f"; {row['note']}" if row.get("note") else "")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda if present")
    parser.add_argument("--num-train", type=int, default=None)
    parser.add_argument("--num-test", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="10,000 training images on CUDA")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON on stdout")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is visible; use --device cpu for the logic check",
              file=sys.stderr)
        return 2
    start = time.perf_counter()
    rows = run(args.quick, args.device, args.num_train, args.num_test)
    if args.json:
        print(json.dumps(rows))
    else:
        for row in rows:
            ratio = f"   x{row['ratio']:.2f} vs {row['baseline']}" if row.get("ratio") is not None else ""
            print(f"{row['name']:40s} {row['value']:12,.3f} {row['unit']}{ratio}")
    _say(f"total {time.perf_counter() - start:.1f} s")
    return 0 if all(r["value"] != 0.0 for r in rows if r["unit"] == "ok") else 1


if __name__ == "__main__":
    raise SystemExit(main())
