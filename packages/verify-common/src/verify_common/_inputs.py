"""Turning a user's example input into a model call, on the model's device.

The public ``check(input_array=...)`` convention is fixed: a tuple is passed
as positional arguments, a dict as keyword arguments, anything else as the
single argument.  ``CallArgs`` holds the result so that an input captured
from a real forward call (args *and* kwargs) can be replayed exactly.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from ._collections import iter_tensors, map_tensors
from ._errors import VerificationError


@dataclasses.dataclass(frozen=True)
class CallArgs:
    """Positional and keyword arguments of one forward call.

    >>> import torch
    >>> CallArgs.from_input_array({"x": torch.zeros(1)}).kwargs.keys()
    dict_keys(['x'])
    """

    args: tuple = ()
    kwargs: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def from_input_array(cls, input_array: Any) -> CallArgs:
        """Apply the tuple/dict/single-argument convention; pass ``CallArgs`` through."""
        if isinstance(input_array, CallArgs):
            return input_array
        if isinstance(input_array, tuple) and not hasattr(input_array, "_fields"):
            return cls(args=input_array)
        if isinstance(input_array, dict):
            return cls(kwargs=dict(input_array))
        return cls(args=(input_array,))

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor in the arguments, positional first, in order."""
        return list(iter_tensors((self.args, self.kwargs)))

    def map(self, fn: Any) -> CallArgs:
        """A copy with ``fn`` applied to every tensor (containers rebuilt)."""
        args, kwargs = map_tensors((self.args, self.kwargs), fn)
        return CallArgs(tuple(args), dict(kwargs))


def resolve_input(
    model: nn.Module, input_array: Any, check_name: str | None = None, error: type[Exception] = VerificationError
) -> CallArgs:
    """Return the call arguments for ``input_array``, or the model's ``example_input_array``.

    Raises ``error`` naming the problem (after ``check_name``, when given) when
    there is no input at all or the input holds no tensor.

    >>> import torch
    >>> model = torch.nn.Linear(2, 2)
    >>> resolve_input(model, torch.zeros(3, 2)).args[0].shape
    torch.Size([3, 2])
    """
    prefix = f"{check_name}: " if check_name else ""
    if input_array is None:
        input_array = getattr(model, "example_input_array", None)
        if input_array is None:
            raise error(
                f"{prefix}No input to check {type(model).__name__} with: pass input_array=... "
                "or set model.example_input_array."
            )
    call_args = CallArgs.from_input_array(input_array)
    if not call_args.tensors():
        raise error(
            f"{prefix}The input holds no tensor (got {_describe(input_array)}); "
            "a check needs at least one torch.Tensor to run the model on."
        )
    return call_args


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for an empty model)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def copy_to_device(data: Any, device: torch.device) -> Any:
    """Detached copies of every tensor on ``device``: the caller's objects are never touched.

    ``data`` is ``CallArgs`` or any nested collection (rebuilt as by ``map_tensors``).
    Floating tensors keep their dtype; ``requires_grad`` is off on the copies.

    >>> import torch
    >>> x = torch.ones(2, requires_grad=True)
    >>> copied = copy_to_device({"x": x}, torch.device("cpu"))["x"]
    >>> copied is x, copied.requires_grad
    (False, False)
    """

    def copy(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.detach().to(device=device, copy=True)

    return data.map(copy) if isinstance(data, CallArgs) else map_tensors(data, copy)


def call_model(
    model: nn.Module, call_args: CallArgs, check_name: str, error: type[Exception] = VerificationError
) -> Any:
    """Run ``model`` on the arguments; a failure is re-raised naming the check.

    >>> import torch
    >>> call_model(torch.nn.Linear(2, 1), CallArgs((torch.zeros(4, 3),)), "MyCheck")
    Traceback (most recent call last):
    ...
    verify_common._errors.VerificationError: MyCheck: the forward pass of Linear raised RuntimeError: ...
    """
    try:
        return model(*call_args.args, **call_args.kwargs)
    except Exception as exc:
        raise error(
            f"{check_name}: the forward pass of {type(model).__name__} raised "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _describe(obj: Any) -> str:
    text = repr(obj)
    return text if len(text) <= 80 else f"{type(obj).__name__} {text[:60]}..."
