"""Wording and serialisation shared by the checks' reports and warnings.

Messages name the qualified module and its class the same way in both
checks, and ``to_dict()`` output is plain JSON, so that a report can be logged,
diffed and parsed by CI tools without knowing which check produced it.
"""

from __future__ import annotations

import dataclasses
import enum
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


def module_label(name: str) -> str:
    """A qualified module name as messages show it: the root module (``""``) is ``<root>``.

    >>> module_label("encoder.0"), module_label("")
    ('encoder.0', '<root>')
    """
    return name or "<root>"


def describe_module(name: str, module: nn.Module | str | None = None, detail: str = "") -> str:
    """``'encoder.0.conv' (Conv2d, 64 channels)``: the house way to name a module.

    ``module`` is the module or its class name (reports keep only the name).

    >>> import torch
    >>> describe_module("encoder.0", torch.nn.Conv2d(3, 8, 3), "8 channels")
    "'encoder.0' (Conv2d, 8 channels)"
    >>> describe_module("", torch.nn.ReLU())
    "'<root>' (ReLU)"
    >>> describe_module("head", "Linear")
    "'head' (Linear)"
    """
    parts = [] if module is None else [module if isinstance(module, str) else type(module).__name__]
    if detail:
        parts.append(detail)
    label = f"'{module_label(name)}'"
    return f"{label} ({', '.join(parts)})" if parts else label


def json_safe(value: Any) -> Any:
    """Convert dataclasses, tuples, enums, tensors and dtypes into JSON types.

    >>> import json, torch
    >>> json.dumps(json_safe({"shape": torch.Size([2, 3]), "dtype": torch.float16}))
    '{"shape": [2, 3], "dtype": "torch.float16"}'
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return json_safe(value.value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: json_safe(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, torch.Tensor):
        return json_safe(value.tolist())
    if isinstance(value, (tuple, list, set, frozenset, torch.Size)):
        items = sorted(value) if isinstance(value, (set, frozenset)) else value
        return [json_safe(item) for item in items]
    return str(value)


def emit_warning(message: str, category: type[Warning], stacklevel: int = 2) -> None:
    """Issue ``message`` as ``category``; ``stacklevel`` counts from the caller of this function.

    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     emit_warning("careful", UserWarning)
    >>> str(caught[0].message)
    'careful'
    """
    warnings.warn(message, category, stacklevel=stacklevel + 1)
