"""trainers.torch_compat.SGD: torch.optim.SGD's numbers and state bit for bit, its hooks and grad mode,
and no torch._dynamo import in a trial's process (the ~1-2 s it removes from a slot's first trial)."""

from __future__ import annotations

import copy
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from trainers.torch_compat import SGD


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))


def _steps(model: nn.Module, optimizer: torch.optim.Optimizer, n: int, seed: int) -> None:
    data = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x, y = torch.randn(8, 3, 8, 8, generator=data), torch.randint(0, 5, (8,), generator=data)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def _same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


@pytest.mark.parametrize("options", [
    {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4},  # the paper's recipe
    {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": True},
    {"lr": 0.1},  # no momentum: no momentum buffers in the state
])  # fmt: skip
def test_the_same_numbers_and_state_as_torch_sgd_to_the_last_bit(options):
    ours, theirs = _net(), _net()
    mine, torchs = SGD(ours.parameters(), **options), torch.optim.SGD(theirs.parameters(), **options)
    _steps(ours, mine, 6, seed=1)
    _steps(theirs, torchs, 6, seed=1)
    assert _same(ours, theirs)
    assert str(mine.state_dict()) == str(torchs.state_dict())  # tensors and the param groups' settings

    # A checkpoint of either loads into the other (checkpoints made before this class existed hold
    # torch.optim.SGD's state), and training on from it stays equal. (Copies, as a checkpoint file
    # would be: load_state_dict keeps the very tensors it is given as the momentum buffers.)
    resumed_ours, resumed_theirs = _net(), _net()
    resumed_ours.load_state_dict(copy.deepcopy(theirs.state_dict()))
    resumed_theirs.load_state_dict(copy.deepcopy(ours.state_dict()))
    into_ours, into_theirs = SGD(resumed_ours.parameters(), **options), torch.optim.SGD(resumed_theirs.parameters(), **options)
    into_ours.load_state_dict(copy.deepcopy(torchs.state_dict()))
    into_theirs.load_state_dict(copy.deepcopy(mine.state_dict()))
    _steps(resumed_ours, into_ours, 4, seed=2)
    _steps(resumed_theirs, into_theirs, 4, seed=2)
    _steps(theirs, torchs, 4, seed=2)
    assert _same(resumed_ours, theirs) and _same(resumed_theirs, theirs)


def test_the_step_runs_without_grad_restores_the_grad_mode_and_keeps_torchs_hooks():
    model = _net()
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9)
    seen = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: seen.append(("pre", torch.is_grad_enabled())))
    optimizer.register_step_post_hook(lambda opt, args, kwargs: seen.append(("post", torch.is_grad_enabled())))
    in_step = []
    module = sys.modules[torch.optim.SGD.__module__]  # torch.optim.sgd, whose step calls its sgd()
    original = module.sgd

    def spy(*args, **kwargs):
        in_step.append(torch.is_grad_enabled())
        return original(*args, **kwargs)

    module.sgd = spy
    try:
        _steps(model, optimizer, 1, seed=0)
    finally:
        module.sgd = original
    assert in_step == [False]  # the update itself is not recorded by autograd
    assert torch.is_grad_enabled()  # and the caller's mode is back
    assert seen == [("pre", True), ("post", True)]
    with torch.no_grad():  # a caller's no_grad is kept too
        optimizer.step()
        assert not torch.is_grad_enabled()


def test_a_trial_trains_checkpoints_and_resumes_without_importing_torch_dynamo(tmp_path):
    # In a fresh process: a whole trial (train, checkpoint, resume from it) with resweep's loop,
    # then, for contrast, one step of torch.optim.SGD, which imports torch._dynamo itself.
    script = (
        "import sys\n"
        "from tests.trainers.test_trainable import CONFIG\n"
        "from trainers.trainable import LocalReporter, train\n"
        "first = LocalReporter()\n"
        "train(dict(CONFIG, epochs=2, lr_milestones=[]), first)\n"
        "again = LocalReporter(first.checkpoint)\n"
        "train(dict(CONFIG, epochs=3, lr_milestones=[]), again)\n"
        "assert [r['epoch'] for r in again.results] == [2, 3], again.results  # epoch 2's result again, then 3\n"
        "print('torch._dynamo' in sys.modules)\n"
        "import torch\n"
        "p = torch.nn.Parameter(torch.ones(2)); p.grad = torch.ones(2)\n"
        "torch.optim.SGD([p], lr=0.1).step()\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]


def test_the_torch_internals_this_adapter_relies_on_are_where_torch_2_14_put_them():
    """trainers/torch_compat.py was written for torch 2.14: torch.optim wraps these methods (the
    torch.compile guards whose torch._dynamo import SGD avoids). When a torch upgrade changes that,
    this fails by name: read the adapter again (SGD stays correct, it may no longer be faster)."""
    from trainers import torch_compat

    assert torch.__version__.startswith(torch_compat.TORCH_VERSION + "."), (
        f"torch {torch.__version__}: trainers/torch_compat.py was written for {torch_compat.TORCH_VERSION}")
    for owner, name in ((torch.optim.SGD, "step"), (torch.optim.Optimizer, "add_param_group"),
                        (torch.optim.Optimizer, "zero_grad"), (torch.optim.Optimizer, "state_dict"),
                        (torch.optim.Optimizer, "load_state_dict")):
        method = getattr(owner, name)
        assert inspect.unwrap(method) is not method, f"torch.optim no longer wraps {owner.__name__}.{name}"
