"""Following integer inputs (token ids, masks) to the first floating tensors computed from them.

Gradients cannot be taken with respect to token ids.  While the model runs,
a ``TorchFunctionMode`` watches every torch call that reads an integer batch
input (or an integer tensor computed from one).  Integer results are watched
in turn; the first floating result that no differentiable tensor feeds (an
embedding lookup, ``ids.float()``, a mask turned into an additive bias)
is replaced by a detached copy that requires grad (the model gets a clone of
it, which it may edit in place).  Those copies are where the check measures
which input samples an output sample depends on.

Rows of such a copy need not belong to the sample of the same index: ids
flipped, rolled or viewed wrongly before the embedding mix samples in the
integer domain, where no gradient flows.  The follower therefore records the
integer calls it watched, and ``_bm_root_provenance`` replays them with the
ids of some samples changed, to learn which input samples each row of each
copy really comes from (element by element: ids flattened to ``(B * T,)``
before the lookup give a copy without a batch axis whose elements still each
belong to one sample).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from verify_common import capture_rng_state, restore_rng_state

from ._mapping import _bm_batch_axis, _bm_codes, _bm_is_differentiable


class _BmIntegerFollower(TorchFunctionMode):
    """Turns the first floating tensors computed from watched integer tensors into gradient leaves."""

    def __init__(self, tensors: list[torch.Tensor], batch_size: int, batch_dim: int) -> None:
        super().__init__()
        # Holding the tensors keeps their id() from being reused while watched.
        self.watched: dict[int, torch.Tensor] = {id(t): t for t in tensors}
        self.batch_size = batch_size
        self.batch_dim = batch_dim
        self.roots: list[tuple[torch.Tensor, int | None, str]] = []  # (leaf, batch axis, producing op)
        # (func, args, kwargs, output, root index or None) of every watched call, for replays.
        self.calls: list[tuple[Any, tuple, dict, Any, int | None]] = []

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        arguments = list(_bm_walk_tensors((args, kwargs)))
        if not any(id(t) in self.watched for t in arguments):
            return out
        if isinstance(out, torch.Tensor):
            return self._follow(out, arguments, func, args, kwargs)
        if not any(t.requires_grad for t in arguments):
            self.calls.append((func, args, kwargs, out, None))
        if isinstance(out, (tuple, list)):
            for item in out:
                if isinstance(item, torch.Tensor) and not _bm_is_differentiable(item):
                    self.watched[id(item)] = item
        return out

    def _follow(self, out: torch.Tensor, arguments: list[torch.Tensor], func: Any, args: tuple, kwargs: dict) -> torch.Tensor:
        if not _bm_is_differentiable(out):
            self.watched[id(out)] = out
            if not any(t.requires_grad for t in arguments):
                self.calls.append((func, args, kwargs, out, None))
            return out
        if out.requires_grad or any(t.requires_grad for t in arguments):
            return out  # already on a differentiable path (e.g. masked_fill of activations)
        leaf = out.detach().requires_grad_()
        axis = _bm_batch_axis(leaf, self.batch_size, self.batch_dim)
        self.calls.append((func, args, kwargs, out, len(self.roots)))
        self.roots.append((leaf, axis, getattr(func, "__name__", str(func))))
        # The model gets an exact copy that is not a leaf: it may edit it in place (a bool mask
        # turned into a bias with ``masked_fill_``), and its gradient still reaches ``leaf``.
        return leaf.clone()


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


def _bm_root_provenance(
    follower: _BmIntegerFollower, inputs: list[tuple[torch.Tensor, torch.Tensor]], size: int, batch_dim: int
) -> list[torch.Tensor | None] | None:
    """Per root: which input samples each ELEMENT of the root comes from.

    ``None`` for a root whose row r along its batch axis comes from input sample r only (the
    usual embedding lookup); else either an int64 ``(numel,)`` tensor, the one owner sample of
    each element (-1: none), or, when some element has several owners, a ``(numel, B)`` bool
    table.  Elements matter, not rows: ids flattened to ``(B * T,)`` before the lookup give a
    root without a batch axis (or whose embedding size happens to be B) whose elements still
    each belong to one sample.  The whole list is ``None`` when the recorded integer calls cannot
    be replayed.  ``inputs`` pairs each integer tensor the forward pass used with a pristine copy
    of its values.  The calls are replayed with the ids of some samples changed (to other values
    seen in the same tensor), first for the k code passes, then, only when an element changed
    that should not have, once per sample.  An element no replay changed is owned by its row
    along the batch axis (when the root has one).
    """
    if not follower.roots:
        return []
    try:
        baseline = _bm_replay(follower, inputs, None, batch_dim)
        axes = [axis for _, axis, _ in follower.roots]
        bits = _bm_codes(size)
        suspicious = False
        for column in range(bits.shape[1]):
            changed = _bm_replay(follower, inputs, ~bits[:, column], batch_dim)
            for index, axis in enumerate(axes):
                rows = _bm_changed_rows(baseline[index], changed[index], axis)
                if rows is None:
                    continue
                # A changed row of an unperturbed sample, or any change of a root without a batch axis.
                unexpected = rows if axis is None else rows & bits[:, column].to(rows.device)
                suspicious = suspicious or bool(unexpected.any())
        if not suspicious:
            return [None] * len(axes)
        maps: list[torch.Tensor | None] = [None] * len(axes)
        for sample in range(size):
            changed = _bm_replay(follower, inputs, torch.arange(size) == sample, batch_dim)
            for index in range(len(axes)):
                differ = _bm_changed_elements(baseline[index], changed[index])
                if differ is not None:
                    maps[index] = _bm_add_owner(maps[index], differ, sample, size)
        for index, axis in enumerate(axes):
            if maps[index] is not None and axis is not None:
                maps[index] = _bm_own_rows_by_default(maps[index], baseline[index], axis, size)
        return maps
    except Exception:  # noqa: BLE001 - an integer pipeline that cannot be replayed: keep the identity
        return None


def _bm_changed_elements(before: torch.Tensor | None, after: torch.Tensor | None) -> torch.Tensor | None:
    if before is None or after is None or before.shape != after.shape:
        return None
    return ~((before == after) | (before.isnan() & after.isnan())).reshape(-1)


def _bm_add_owner(owners: torch.Tensor | None, differ: torch.Tensor, sample: int, size: int) -> torch.Tensor:
    """Record ``sample`` as an owner of the elements in ``differ`` (owner vector, or table once shared)."""
    if owners is None:
        owners = torch.full(differ.shape, -1, dtype=torch.long, device=differ.device)
    if owners.dtype == torch.long:
        if not bool((differ & (owners >= 0)).any()):
            return owners.masked_fill(differ, sample)
        owners = _bm_owner_table(owners, size)
    owners[:, sample] |= differ
    return owners


def _bm_owner_table(owners: torch.Tensor, size: int) -> torch.Tensor:
    table = torch.zeros(owners.shape[0], size, dtype=torch.bool, device=owners.device)
    known = owners >= 0
    table[known.nonzero().flatten(), owners[known]] = True
    return table


def _bm_own_rows_by_default(owners: torch.Tensor, root: torch.Tensor, axis: int, size: int) -> torch.Tensor:
    """Elements that no replay changed belong to their row along the batch axis."""
    shape = [1] * root.ndim
    shape[axis] = size
    rows = torch.arange(size, device=owners.device).reshape(shape).expand(root.shape).reshape(-1)
    if owners.dtype == torch.long:
        return torch.where(owners >= 0, owners, rows)
    lonely = ~owners.any(dim=1)
    owners[lonely.nonzero().flatten(), rows[lonely]] = True
    return owners


def _bm_map_mixes(owners: torch.Tensor | None, root: torch.Tensor, axis: int | None, size: int, batch_dim: int) -> bool:
    """Whether some element of a root has several owners, or another owner than its row along ``batch_dim``.

    An axis found elsewhere only by its size (an embedding size equal to B) says nothing about rows.
    """
    if owners is None:
        return False
    if owners.dtype != torch.long:
        shared = bool((owners.sum(dim=1) > 1).any())
        if axis != batch_dim or shared:
            return shared
        owners = owners.to(torch.long).argmax(dim=1)
    if axis != batch_dim:
        return False
    return not bool(torch.equal(owners, _bm_own_rows_by_default(torch.full_like(owners, -1), root, axis, size)))


def _bm_changed_rows(before: torch.Tensor | None, after: torch.Tensor | None, axis: int | None) -> torch.Tensor | None:
    if before is None or after is None or before.shape != after.shape:
        return None
    same = (before == after) | (before.isnan() & after.isnan())
    differ = ~same
    if axis is None:
        return differ.any().reshape(1)
    others = tuple(d for d in range(differ.ndim) if d != axis)
    return differ.any(dim=others) if others else differ


_BM_MUTATING_DUNDERS = frozenset(
    {"__setitem__", "__delitem__"}
    | {f"__i{op}__" for op in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "and", "or", "xor", "lshift", "rshift", "matmul")}
)


def _bm_replay(
    follower: _BmIntegerFollower,
    inputs: list[tuple[torch.Tensor, torch.Tensor]],
    perturbed: torch.Tensor | None,
    batch_dim: int,
) -> list[torch.Tensor | None]:
    """Re-run the recorded integer calls from the pristine inputs (samples in ``perturbed`` changed)."""
    env: dict[int, Any] = {}
    for used, tensor in inputs:
        copy = tensor.clone()
        if perturbed is not None and bool(perturbed.any()):
            index = perturbed.nonzero().flatten().to(tensor.device)
            copy.index_copy_(batch_dim, index, _bm_other_values(tensor).index_select(batch_dim, index))
        env[id(used)] = copy
    roots: list[torch.Tensor | None] = [None] * len(follower.roots)
    state = capture_rng_state()
    try:
        for func, args, kwargs, out, root in follower.calls:
            if not any(id(t) in env for t in _bm_walk_tensors((args, kwargs))):
                continue
            name = getattr(func, "__name__", "")
            target = kwargs.get("out", args[0] if args else None)
            mutates = name in _BM_MUTATING_DUNDERS or "out" in kwargs or (name.endswith("_") and not name.startswith("__"))
            if mutates and not (isinstance(target, torch.Tensor) and id(target) in env):
                continue  # never edit a tensor of the real forward pass
            new_args, new_kwargs = _bm_substitute((args, kwargs), env)
            new_out = func(*new_args, **new_kwargs)
            if isinstance(out, torch.Tensor):
                env[id(out)] = new_out
            elif isinstance(out, (tuple, list)) and isinstance(new_out, (tuple, list)):
                for old, new in zip(out, new_out):
                    if isinstance(old, torch.Tensor):
                        env[id(old)] = new
            if root is not None and isinstance(new_out, torch.Tensor):
                roots[root] = new_out.detach()
    finally:
        restore_rng_state(state)
    return roots


def _bm_other_values(tensor: torch.Tensor) -> torch.Tensor:
    """Every element changed to another value seen in the same tensor (so ids stay valid ids)."""
    if tensor.dtype == torch.bool:
        return ~tensor
    values = tensor.unique()
    if values.numel() < 2:
        value = int(values[0]) if values.numel() else 0
        return torch.full_like(tensor, value - 1 if value > 0 else value + 1)
    position = torch.searchsorted(values, tensor.contiguous())
    return values[(position + 1) % values.numel()]


def _bm_substitute(obj: Any, env: dict[int, Any]) -> Any:
    if isinstance(obj, torch.Tensor):
        return env.get(id(obj), obj)
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(_bm_substitute(item, env) for item in obj)
    if isinstance(obj, list):
        return [_bm_substitute(item, env) for item in obj]
    if isinstance(obj, dict):
        return {key: _bm_substitute(item, env) for key, item in obj.items()}
    return obj
