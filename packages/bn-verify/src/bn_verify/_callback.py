"""``BatchNormVerificationCallback``: the check, once, at the start of training.

The Lightning plumbing (both namespaces, first-batch capture, rank-zero
warnings, hook removal) lives in ``verify_common.VerificationCallback``; this
class only says which check to run and how to warn.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from verify_common import CallArgs, VerificationCallback

from ._check import BatchNormVerification
from ._exceptions import BiasBeforeNormWarning


class BatchNormVerificationCallback(VerificationCallback):
    """Lightning callback: warns (or raises) when a normalization cancels a bias of the model.

    It checks once, on ``example_input_array`` when the module has one and
    otherwise on the first real training batch, warns with
    ``BiasBeforeNormWarning`` on global rank zero, or raises ``RuntimeError``
    with ``error=True``.  It leaves training exactly as it would be without it.
    Without Lightning installed, creating it raises ``ImportError`` naming
    ``pip install "bn-verify[lightning]"``.

    Args:
        warn: issue a warning when a bias is cancelled.
        error: raise ``RuntimeError`` instead.

    >>> callback = BatchNormVerificationCallback(error=True)  # doctest: +SKIP
    >>> trainer = Trainer(callbacks=[callback])  # doctest: +SKIP
    """

    install_command = 'pip install "bn-verify[lightning]"'
    warning_category = BiasBeforeNormWarning

    def __init__(self, warn: bool = True, error: bool = False) -> None:
        super().__init__(warn=warn, error=error)
        self.verification: BatchNormVerification | None = None

    def run_check(self, pl_module: nn.Module, call_args: CallArgs) -> tuple[bool, str]:
        """Run ``BatchNormVerification`` on the module; return ``(ok, message)``."""
        verification = BatchNormVerification(pl_module)
        ok = verification.check(input_array=call_args)
        self.verification = verification
        return ok, str(verification.report)

    @property
    def report(self) -> Any:
        """The report of the check, once it ran (else ``None``)."""
        return self.verification.report if self.verification is not None else None
