"""What trainers' machinery costs: loop.py against a bare hand-written PyTorch loop, and a probe
pass (probes.layer_responses) against an evaluation pass (Loop.evaluate).

    python -m benchmarks.train_throughput [--quick] [--device cpu|cuda] [--threads N] [--json]

Same model (ResNet-20, option A), same synthetic data already on the device, same batch size,
same SGD, same autocast/channels_last choice (both on only on CUDA), in one process. The bare
loop is what anyone would write: randperm, index, forward, cross-entropy, backward, step; loop.py
adds its on-device loss/error sums and its Batches. Measurements alternate (bare, loop, bare,
...) after one untimed warm-up epoch of each, and the median of each side counts, so a neighbour
taking the CPU for a while hurts both sides alike. Augmentation is off on both sides for the ratio;
a third row shows loop.py with augmentation on, for its cost. Expected: loop/bare >= 0.95 and
probe/eval <= 1.2.

On the CPU it runs single-threaded by default (--threads) and counts CPU seconds of this process
(--clock cpu): on a shared machine wall-clock time and a second intra-op thread mostly measure the
neighbours. One thread's CPU seconds are its wall-clock seconds on an idle machine. On CUDA it
counts wall-clock seconds, the device synchronised before each reading.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from benchmarks.common import result
from resweep.config import TrialConfig
from trainers.data import load_data
from trainers.loop import Loop
from trainers.models import build_model
from trainers.probes import layer_responses

SIZES = {  # quick: image size, training and test images, timed repeats
    False: dict(image_size=32, num_train=1024, num_test=1024, repeats=5),
    True: dict(image_size=16, num_train=256, num_test=256, repeats=3),
}
BATCH = 128


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_epoch(model, optimizer, x, y, generator, batch_size, amp, memory_format) -> None:
    """One hand-written training epoch."""
    device = x.device
    model.train()
    order = torch.randperm(len(y), generator=generator, device=device)
    for i in range(0, len(y), batch_size):
        idx = order[i : i + batch_size]
        xb, yb = x[idx], y[idx]
        if memory_format is not None:
            xb = xb.contiguous(memory_format=memory_format)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(xb), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def run(quick: bool, device: str | None = None, threads: int | None = None, clock: str | None = None) -> list[dict]:
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cpu":
        torch.set_num_threads(threads or 1)
    clock = clock or ("cpu" if dev.type == "cpu" else "wall")
    now = time.process_time if clock == "cpu" else time.perf_counter

    def timed(fn) -> float:
        _sync(dev)
        start = now()
        fn()
        _sync(dev)
        return now() - start

    sizes = SIZES[quick]
    spec = {"num_train": sizes["num_train"], "num_test": sizes["num_test"], "image_size": sizes["image_size"],
            "channels": 3, "num_classes": 10}
    torch.manual_seed(0)
    plain = load_data("synthetic", synthetic=spec, augment=False, device=dev)
    augmented = load_data("synthetic", synthetic=spec, augment=True, device=dev)
    model = build_model("cifar", 20, "basic", "A", 10)
    cfg = TrialConfig(epochs=1, batch_size=BATCH, precision="bf16" if dev.type == "cuda" else "fp32")
    loop = Loop(model, plain, cfg, generator=torch.Generator(device=dev).manual_seed(0), device=dev)
    loop_aug = Loop(model, augmented, cfg, generator=torch.Generator(device=dev).manual_seed(0), device=dev)
    bare_opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    bare_gen = torch.Generator(device=dev).manual_seed(0)

    def bare() -> float:
        x, y = plain.train.x, plain.train.y
        return timed(lambda: bare_epoch(model, bare_opt, x, y, bare_gen, BATCH, loop.amp, loop.memory_format))

    def ours(lp: Loop) -> float:
        return timed(lambda: lp.train_epoch(0.1))

    def evaluate() -> float:
        return timed(lambda: loop.evaluate(plain.test))

    def probe() -> float:
        return timed(lambda: layer_responses(model, loop.eval_batches(plain.test), amp=loop.amp))

    for warm in (bare, lambda: ours(loop), lambda: ours(loop_aug), evaluate, probe):
        warm()  # allocator, cuDNN autotuning, first-call dispatch
    times: dict[str, list[float]] = {"bare": [], "loop": [], "loop_aug": [], "eval": [], "probe": []}
    for _ in range(sizes["repeats"]):
        times["bare"].append(bare())
        times["loop"].append(ours(loop))
        times["loop_aug"].append(ours(loop_aug))
        times["eval"].append(evaluate())
        times["probe"].append(probe())
    med = {k: statistics.median(v) for k, v in times.items()}
    n_train, n_test = len(plain.train), len(plain.test)
    where = f"{dev.type}" + (f", {torch.get_num_threads()} thread(s)" if dev.type == "cpu" else ", bf16 + channels_last")
    where += f", {clock} seconds"
    note = (f"ResNet-20 (A), {n_train} train / {n_test} test synthetic 3x{sizes['image_size']}x{sizes['image_size']}, "
            f"batch {BATCH}, {where}, median of {sizes['repeats']}")
    return [
        result("loop.py training epoch", n_train / med["loop"], "images/s",
               "bare PyTorch loop", n_train / med["bare"], note=note),
        result("loop.py training epoch, augmentation on", n_train / med["loop_aug"], "images/s",
               "bare PyTorch loop (no augmentation)", n_train / med["bare"]),
        result("probe pass (layer_responses, test set)", med["probe"], "s",
               "evaluation pass (Loop.evaluate)", med["eval"]),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: checks that it works")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if present")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default 1)")
    parser.add_argument("--clock", choices=["cpu", "wall"], default=None,
                        help="what a second is: this process's CPU time (default on cpu) or wall-clock")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    rows = run(args.quick, args.device, args.threads, args.clock)
    if args.json:
        print(json.dumps(rows))
        return 0
    for row in rows:
        print(f"{row['name']:42s} {row['value']:10.3f} {row['unit']:9s} vs {row['baseline']:38s} "
              f"{row['baseline_value']:10.3f}   ratio {row['ratio']:.3f}")
    print(rows[0]["note"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
