"""Which tensors of the input and output carry the batch, and in which dimension.

The public mappings keep the original tool's behaviour (nested tuples, lists
and dicts; outputs flattened per sample and concatenated to ``(B, N)``) and
add a ``batch_dim``.  The private helpers find the batch axis of any tensor
the check meets on its way through the model.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch

from verify_common import iter_tensors


def default_input_mapping(data: Any, batch_dim: int = 0) -> list[torch.Tensor]:
    """The tensors in a nested input that have the batch size of the first one.

    The batch size is that of the first tensor with more than ``batch_dim``
    dimensions; tensors of another size along ``batch_dim`` (masks, states)
    and non-tensor entries are left out.

    Args:
        data: a tensor or nested tuples/lists/dicts holding tensors.
        batch_dim: the batch dimension of the inputs.

    Returns:
        The batch tensors, in container order (the same objects, not copies).

    >>> import torch
    >>> x, mask = torch.zeros(4, 3), torch.zeros(3, 3)
    >>> [t.shape for t in default_input_mapping({"x": x, "mask": mask, "n": 2})]
    [torch.Size([4, 3])]
    """
    batches: list[torch.Tensor] = []
    for tensor in iter_tensors(data):
        if tensor.ndim > batch_dim and (not batches or tensor.shape[batch_dim] == batches[0].shape[batch_dim]):
            batches.append(tensor)
    return batches


def default_output_mapping(data: Any, batch_dim: int = 0) -> torch.Tensor:
    """All batch tensors of a nested output, flattened per sample and concatenated to ``(B, N)``.

    As in the original tool, a plain tensor is returned unchanged.  From a
    collection, ``None`` and non-tensor entries are skipped, and so are
    tensors without the first tensor's size along ``batch_dim``; each of the
    others is moved to the batch-first layout, viewed as ``(B, -1)``,
    converted to float32 and concatenated.

    Args:
        data: a tensor, or nested tuples/lists/dicts/``ModelOutput`` holding tensors.
        batch_dim: the batch dimension of the outputs.

    Returns:
        The tensor itself, or one ``(B, N)`` tensor with the batch first.

    Raises:
        ValueError: no tensor of the output has the batch dimension.

    >>> import torch
    >>> out = {"logits": torch.zeros(4, 3, 2), "loss": None, "score": torch.zeros(4)}
    >>> default_output_mapping(out).shape
    torch.Size([4, 7])
    >>> default_output_mapping(torch.zeros(4, 3, 2)).shape
    torch.Size([4, 3, 2])
    """
    if isinstance(data, torch.Tensor):
        return data
    rows = [tensor.movedim(batch_dim, 0) for tensor in _bm_batch_tensors(data, batch_dim, None)]
    # As in the original tool, every block becomes float32 before the concatenation.
    return torch.cat([row.reshape(row.shape[0], -1).float() for row in rows], dim=1)


def _bm_output_rows(data: Any, batch_dim: int, batch_size: int) -> torch.Tensor:
    """The check's view of an output: ``(B, N)``, batch first, in at least float32 precision."""
    rows = [_bm_flatten_rows(tensor, batch_dim) for tensor in _bm_batch_tensors(data, batch_dim, batch_size)]
    return rows[0] if len(rows) == 1 else torch.cat(rows, dim=1)


def _bm_batch_tensors(data: Any, batch_dim: int, batch_size: int | None) -> list[torch.Tensor]:
    # Tensors with ``batch_size`` samples along ``batch_dim`` (the first such tensor's size when None).
    tensors = [t for t in iter_tensors(data) if t.ndim > batch_dim]
    if batch_size is None and tensors:
        batch_size = tensors[0].shape[batch_dim]
    batches = [t for t in tensors if t.shape[batch_dim] == batch_size]
    if not batches:
        shapes = ", ".join(str(tuple(t.shape)) for t in iter_tensors(data)) or "no tensor"
        wanted = f"size {batch_size}" if batch_size is not None else "a batch dimension"
        raise ValueError(f"no output tensor has {wanted} along batch_dim={batch_dim} (output shapes: {shapes})")
    return batches


def _bm_flatten_rows(tensor: torch.Tensor, batch_dim: int) -> torch.Tensor:
    # reshape, not flatten(1): a (B,) tensor becomes (B, 1).
    rows = tensor.movedim(batch_dim, 0)
    rows = rows.reshape(rows.shape[0], -1)
    dtype = torch.promote_types(rows.dtype, torch.float32) if rows.is_floating_point() else torch.float32
    return rows.to(dtype)


def _bm_batch_axis(tensor: torch.Tensor, batch_size: int, batch_dim: int) -> int | None:
    """The axis of ``tensor`` that holds the batch: ``batch_dim`` if its size fits, else the first that does."""
    if tensor.ndim > batch_dim and tensor.shape[batch_dim] == batch_size:
        return batch_dim
    for axis, size in enumerate(tensor.shape):
        if size == batch_size:
            return axis
    return None


def _bm_is_differentiable(tensor: torch.Tensor) -> bool:
    return tensor.is_floating_point() or tensor.is_complex()


def _bm_codes(size: int) -> torch.Tensor:
    """``(B, k)`` bool: distinct codes with k//2 ones, k the smallest with C(k, k//2) >= B."""
    k = 2
    while math.comb(k, k // 2) < size:
        k += 1
    bits = torch.zeros(size, k, dtype=torch.bool)
    for row, ones in enumerate(itertools.islice(itertools.combinations(range(k), k // 2), size)):
        bits[row, list(ones)] = True
    return bits
