"""Placing forward hooks for the length of a check, and always removing them.

A check that leaves a hook behind changes every later forward pass of the
user's model, so hooks are only ever placed through ``forward_hooks``, whose
``finally`` removes them whether the body returned or raised.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from torch import nn

ForwardHook = Callable[[str, nn.Module, tuple, Any], Any]
ForwardPreHook = Callable[[str, nn.Module, tuple, dict], Any]


@contextlib.contextmanager
def forward_hooks(
    modules: Iterable[tuple[str, nn.Module]],
    hook: ForwardHook | None = None,
    pre_hook: ForwardPreHook | None = None,
) -> Iterator[None]:
    """Place a forward hook and/or pre-hook on each ``(name, module)``; remove all on exit.

    ``hook(name, module, args, output)`` and ``pre_hook(name, module, args, kwargs)``
    receive the qualified name first.  A non-``None`` return value replaces the
    output (hook) or the ``(args, kwargs)`` pair (pre-hook), as in PyTorch.

    >>> import torch
    >>> seen = []
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
    >>> with forward_hooks(model.named_modules(), hook=lambda n, m, a, o: seen.append(n)):
    ...     _ = model(torch.zeros(1, 2))
    >>> seen, len(model[0]._forward_hooks)
    (['0', '1', ''], 0)
    """
    handles = []
    try:
        for name, module in modules:
            if hook is not None:
                handles.append(module.register_forward_hook(_bind_hook(hook, name)))
            if pre_hook is not None:
                handles.append(module.register_forward_pre_hook(_bind_pre_hook(pre_hook, name), with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _bind_hook(hook: ForwardHook, name: str) -> Callable:
    def bound(module: nn.Module, args: tuple, output: Any) -> Any:
        return hook(name, module, args, output)

    return bound


def _bind_pre_hook(pre_hook: ForwardPreHook, name: str) -> Callable:
    def bound(module: nn.Module, args: tuple, kwargs: dict) -> Any:
        return pre_hook(name, module, args, kwargs)

    return bound
