"""Every use of torch's internals in one place: written for torch 2.14 (`TORCH_VERSION`, which
tests/trainers/test_torch_compat.py checks against the installed torch, with a test that fails by
name when the wrapping below changes).

`SGD`: torch.optim.SGD as the trials use it (eager, never under torch.compile), without the
import of torch._dynamo that torch.optim makes on an optimizer's first use.

torch.optim guards its methods against being traced by torch.compile: `add_param_group`,
`zero_grad`, `state_dict` and `load_state_dict` are wrapped by `torch._disable_dynamo`, which
imports torch._dynamo on the first call, and every `step` runs inside
`_use_grad_for_differentiable`, which imports it to call `torch._dynamo.graph_break()` around
the update. In eager mode (no torch.compile anywhere, as in every resweep trial) neither guard
does anything but that import (~900 modules), paid by each new worker's first trial.

`SGD` calls the same methods unwrapped (`inspect.unwrap`: torch's own code, not a copy), with
the one thing the step guard does besides: the grad mode set to the optimizer's `differentiable`
for the update and restored after. The arithmetic, the state dict and the checkpoints are
torch.optim.SGD's, bit for bit (tests/trainers/test_torch_compat.py). Where a torch release wraps them
differently, `inspect.unwrap` finds the function itself and this class is plain SGD again
(slower, never different).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

TORCH_VERSION = "2.14"


def _unwrapped(owner: type, name: str) -> Any:
    return inspect.unwrap(getattr(owner, name))


_STEP = _unwrapped(torch.optim.SGD, "step")
_ADD_PARAM_GROUP = _unwrapped(torch.optim.Optimizer, "add_param_group")
_ZERO_GRAD = _unwrapped(torch.optim.Optimizer, "zero_grad")
_STATE_DICT = _unwrapped(torch.optim.Optimizer, "state_dict")
_LOAD_STATE_DICT = _unwrapped(torch.optim.Optimizer, "load_state_dict")


class SGD(torch.optim.SGD):
    """torch.optim.SGD for eager training; never use it under torch.compile."""

    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        previous = torch.is_grad_enabled()
        try:
            torch.set_grad_enabled(self.defaults["differentiable"])
            return _STEP(self, closure)
        finally:
            torch.set_grad_enabled(previous)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        _ADD_PARAM_GROUP(self, param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        _ZERO_GRAD(self, set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return _STATE_DICT(self)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        _LOAD_STATE_DICT(self, state_dict)
