"""Shared core of the model checks ``bn-verify`` and ``batch-mix-verify``.

Small and check-agnostic: nested-collection traversal, model calls on the
model's device, forward hooks that are always removed, save/restore of model
state, message formatting and the Lightning callback base.
"""

from .__about__ import __version__
from ._collections import iter_tensors, map_tensors
from ._errors import VerificationError
from ._hooks import forward_hooks
from ._inputs import CallArgs, call_model, copy_to_device, model_device, resolve_input
from ._lightning import VerificationCallback, lightning_callback_classes
from ._report import describe_module, emit_warning, json_safe, module_label
from ._state import ModelState, capture_rng_state, materializable_copy, preserved_state, restore_rng_state

__all__ = [
    "CallArgs",
    "ModelState",
    "VerificationCallback",
    "VerificationError",
    "__version__",
    "call_model",
    "capture_rng_state",
    "copy_to_device",
    "describe_module",
    "emit_warning",
    "forward_hooks",
    "iter_tensors",
    "json_safe",
    "lightning_callback_classes",
    "map_tensors",
    "materializable_copy",
    "model_device",
    "module_label",
    "preserved_state",
    "resolve_input",
    "restore_rng_state",
]
