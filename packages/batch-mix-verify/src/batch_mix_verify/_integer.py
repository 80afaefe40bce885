"""Following integer inputs (token ids, masks) to the first floating tensors computed from them.

Gradients cannot be taken with respect to token ids.  While the model runs,
a ``TorchFunctionMode`` watches every torch call that reads an integer batch
input (or an integer tensor computed from one).  Integer results are watched
in turn; the first floating result that no differentiable tensor feeds (an
embedding lookup, ``ids.float()``, a mask turned into an additive bias)
is replaced by a detached copy that requires grad.  Those copies are where
the check measures which input samples an output sample depends on.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from ._mapping import _bm_batch_axis, _bm_is_differentiable


class _BmIntegerFollower(TorchFunctionMode):
    """Turns the first floating tensors computed from watched integer tensors into gradient leaves."""

    def __init__(self, tensors: list[torch.Tensor], batch_size: int, batch_dim: int) -> None:
        super().__init__()
        # Holding the tensors keeps their id() from being reused while watched.
        self.watched: dict[int, torch.Tensor] = {id(t): t for t in tensors}
        self.batch_size = batch_size
        self.batch_dim = batch_dim
        self.roots: list[tuple[torch.Tensor, int | None, str]] = []  # (leaf, batch axis, producing op)

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        arguments = list(_bm_walk_tensors((args, kwargs)))
        if not any(id(t) in self.watched for t in arguments):
            return out
        if isinstance(out, torch.Tensor):
            return self._follow(out, arguments, func)
        if isinstance(out, (tuple, list)):
            for item in out:
                if isinstance(item, torch.Tensor) and not _bm_is_differentiable(item):
                    self.watched[id(item)] = item
        return out

    def _follow(self, out: torch.Tensor, arguments: list[torch.Tensor], func: Any) -> torch.Tensor:
        if not _bm_is_differentiable(out):
            self.watched[id(out)] = out
            return out
        if out.requires_grad or any(t.requires_grad for t in arguments):
            return out  # already on a differentiable path (e.g. masked_fill of activations)
        leaf = out.detach().requires_grad_()
        axis = _bm_batch_axis(leaf, self.batch_size, self.batch_dim)
        self.roots.append((leaf, axis, getattr(func, "__name__", str(func))))
        return leaf


def _bm_walk_tensors(obj: Any) -> Iterator[torch.Tensor]:
    # Arguments of torch calls: plain tuples, lists and dicts (torch.cat([...]), kwargs).
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _bm_walk_tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _bm_walk_tensors(item)
