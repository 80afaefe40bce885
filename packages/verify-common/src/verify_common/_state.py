"""Saving and restoring everything a check could change on the user's model.

The contract promises no side effects: after a check the parameters, buffers
(BatchNorm running statistics included), ``.grad`` tensors, ``requires_grad``
flags, train/eval flags, registered hooks and the global RNG state are exactly
as before, also when the check raises.  ``preserved_state`` is the one place
that keeps that promise.
"""

from __future__ import annotations

import contextlib
import copy
import random
import sys
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ._errors import VerificationError

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)


class ModelState:
    """A snapshot of a model's mutable state and the global RNG.

    >>> import torch
    >>> bn = torch.nn.BatchNorm1d(3)
    >>> state = ModelState.capture(bn)
    >>> _ = bn(torch.randn(4, 3))  # training mode: updates running_mean
    >>> state.restore()
    >>> bn.running_mean.abs().sum().item()
    0.0
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        modules = list(model.modules())
        self.training = [(module, module.training) for module in modules]
        params = list(model.parameters())
        self.requires_grad = [(param, param.requires_grad) for param in params]
        self.grads = [(param, param.grad) for param in params]
        # Forward passes may rewrite parameters in place (``nn.Embedding(max_norm=...)``, a
        # ``clamp_`` in ``forward``).  The copy is put back only where the values changed, so
        # untouched parameters keep their version counters (graphs the caller holds stay valid).
        self.values = [
            (param, param._version, param.detach().clone()) for param in params if not _uninitialized(param)
        ]
        # An uninitialized (lazy) buffer holds no data to save; it is put back as the same object.
        self.buffers = [
            (module, name, buffer, None if _uninitialized(buffer) else buffer.detach().clone())
            for module in modules
            for name, buffer in module._buffers.items()
        ]
        self.parameter_slots = [(module, dict(module._parameters)) for module in modules]
        self.hook_keys = [
            (module, attr, list(getattr(module, attr).keys())) for module in modules for attr in _HOOK_DICTS if hasattr(module, attr)
        ]
        self.rng = capture_rng_state()
        self.grad_enabled = torch.is_grad_enabled()

    @classmethod
    def capture(cls, model: nn.Module) -> ModelState:
        """Take the snapshot."""
        return cls(model)

    def restore(self) -> None:
        """Put everything back; buffers are restored in place so references stay valid."""
        torch.set_grad_enabled(self.grad_enabled)
        for module, flag in self.training:
            module.training = flag
        for module, slots in self.parameter_slots:
            module._parameters.clear()
            module._parameters.update(slots)
        for param, flag in self.requires_grad:
            param.requires_grad_(flag)
        for param, grad in self.grads:
            param.grad = grad
        with torch.no_grad():
            for param, version, saved in self.values:
                if param._version != version or not _same_bits(param, saved):
                    param.copy_(saved)
            for module, name, buffer, saved in self.buffers:
                module._buffers[name] = buffer
                if buffer is not None and saved is not None:
                    buffer.copy_(saved)
        for module, attr, keys in self.hook_keys:
            hooks = getattr(module, attr)
            for key in [key for key in hooks if key not in keys]:
                del hooks[key]
        restore_rng_state(self.rng)


@contextlib.contextmanager
def preserved_state(model: nn.Module) -> Iterator[ModelState]:
    """Snapshot ``model`` and the RNG, run the body, restore on exit (also on error).

    >>> import torch
    >>> model = torch.nn.Dropout(0.5)
    >>> with preserved_state(model):
    ...     _ = model.eval()
    >>> model.training
    True
    """
    state = ModelState.capture(model)
    try:
        yield state
    finally:
        state.restore()


def materializable_copy(model: nn.Module, check_name: str, error: type[Exception] = VerificationError) -> nn.Module:
    """The model itself, or a deep copy when a lazy module would materialize on the forward pass.

    A check's forward pass would initialize the user's lazy modules for good;
    on a copy the user's model stays lazy.

    >>> import torch
    >>> lazy = torch.nn.LazyLinear(2)
    >>> copy_ = materializable_copy(lazy, "MyCheck")
    >>> copy_ is lazy, materializable_copy(torch.nn.Linear(2, 2), "MyCheck").__class__.__name__
    (False, 'Linear')
    """
    uninitialized = {
        id(tensor): tensor for tensor in (*model.parameters(), *model.buffers()) if _uninitialized(tensor)
    }
    if not uninitialized:
        return model
    # Uninitialized tensors refuse deepcopy; give the copy fresh ones of the same kind.
    memo: dict[int, Any] = {
        key: type(tensor)(requires_grad=tensor.requires_grad, device=tensor.device, dtype=tensor.dtype)
        for key, tensor in uninitialized.items()
    }
    try:
        return copy.deepcopy(model, memo)
    except Exception as exc:
        raise error(
            f"{check_name}: {type(model).__name__} has lazy modules that are not initialized yet, and it "
            f"cannot be deep-copied to initialize them without touching your model ({type(exc).__name__}: {exc}). "
            "Run one forward pass first, then check."
        ) from exc


def _same_bits(tensor: torch.Tensor, saved: torch.Tensor) -> bool:
    # Bitwise, so that a parameter holding NaN compares equal to its own copy.
    try:
        return torch.equal(tensor.detach().reshape(-1).view(torch.uint8), saved.reshape(-1).view(torch.uint8))
    except RuntimeError:
        return torch.equal(tensor.detach(), saved)


def _uninitialized(buffer: torch.Tensor | None) -> bool:
    return buffer is None or isinstance(buffer, torch.nn.parameter.UninitializedTensorMixin)


def capture_rng_state() -> dict[str, Any]:
    """The global RNG states: torch (CPU and initialized CUDA devices), Python's ``random``, NumPy.

    >>> import torch
    >>> state = capture_rng_state()
    >>> first = torch.rand(1)
    >>> restore_rng_state(state)
    >>> torch.equal(torch.rand(1), first)
    True
    """
    rng: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        rng["numpy"] = numpy.random.get_state()
    return rng


def restore_rng_state(rng: dict[str, Any]) -> None:
    """Put back the states ``capture_rng_state`` returned."""
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    if "cuda" in rng:
        torch.cuda.set_rng_state_all(rng["cuda"])
    if "numpy" in rng:
        sys.modules["numpy"].random.set_state(rng["numpy"])
