"""Walking nested inputs and outputs: tuples, lists, dicts, dataclasses, ModelOutput.

Models take and return arbitrarily nested containers.  Every check needs the
tensors inside them in a stable order, and some need a copy of the container
with each tensor replaced.  This module owns both operations so that the
containers are understood the same way everywhere.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch


def iter_tensors(obj: Any) -> Iterator[torch.Tensor]:
    """Yield every tensor in a nested collection, depth first, in container order.

    Mappings (``dict``, ``OrderedDict``, Hugging Face ``ModelOutput``) yield
    their values in key order; dataclasses their fields; ``None`` and other
    leaves yield nothing.

    >>> import torch
    >>> [t.shape[0] for t in iter_tensors({"a": torch.zeros(2), "b": (None, [torch.zeros(3)])})]
    [2, 3]
    """
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, Mapping):
        for value in obj.values():
            yield from iter_tensors(value)
    elif isinstance(obj, (tuple, list)):
        for value in obj:
            yield from iter_tensors(value)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for field in dataclasses.fields(obj):
            yield from iter_tensors(getattr(obj, field.name))


def map_tensors(obj: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    """Return a copy of a nested collection with ``fn`` applied to every tensor.

    Containers are rebuilt with their own type where that is possible
    (namedtuples, ``OrderedDict``, ``ModelOutput``, dataclasses); other
    leaves are returned as they are, not copied.

    >>> import torch
    >>> out = map_tensors((torch.ones(2), "keep"), lambda t: t * 2)
    >>> out[0].tolist(), out[1]
    ([2.0, 2.0], 'keep')
    """
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, Mapping):
        items = {key: map_tensors(value, fn) for key, value in obj.items()}
        return _rebuild_mapping(obj, items)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*(map_tensors(value, fn) for value in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(map_tensors(value, fn) for value in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {
            field.name: map_tensors(getattr(obj, field.name), fn)
            for field in dataclasses.fields(obj)
            if field.init
        }
        return dataclasses.replace(obj, **changes)
    return obj


def _rebuild_mapping(original: Mapping, items: dict) -> Any:
    # ModelOutput and OrderedDict accept keyword/dict construction; a mapping
    # type that accepts neither still gets its values mapped, as a plain dict.
    cls = type(original)
    if cls is dict:
        return items
    try:
        return cls(**items) if dataclasses.is_dataclass(original) else cls(items)
    except TypeError:
        return items
