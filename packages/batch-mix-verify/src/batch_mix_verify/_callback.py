"""The Lightning callback: the complete check once, before or at the first training batch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from verify_common import CallArgs, VerificationCallback

from ._check import BatchGradientVerification, BatchMixingWarning
from ._findings import BatchMixingReport


class BatchGradientVerificationCallback(VerificationCallback):
    """Runs ``BatchGradientVerification`` on the LightningModule once, before training starts.

    It uses ``example_input_array`` when the module has one, otherwise the arguments of the
    module's first forward call in training.  A finding is warned as ``BatchMixingWarning``
    (on global rank zero), or raised as ``RuntimeError`` with ``error=True``.  The report is
    kept in ``callback.report``.  Needs Lightning: ``pip install "batch-mix-verify[lightning]"``.

    Args:
        input_mapping, output_mapping, sample_idx, batch_dim: as for ``BatchGradientVerification.check``.
        warn: warn when mixing is found.
        error: raise ``RuntimeError`` when mixing is found.

    >>> callback = BatchGradientVerificationCallback(batch_dim=1)  # doctest: +SKIP
    """

    install_command = 'pip install "batch-mix-verify[lightning]"'
    warning_category = BatchMixingWarning

    def __init__(
        self,
        input_mapping: Callable[[Any], list[torch.Tensor]] | None = None,
        output_mapping: Callable[[Any], torch.Tensor] | None = None,
        sample_idx: int | None = None,
        batch_dim: int = 0,
        warn: bool = True,
        error: bool = False,
    ) -> None:
        super().__init__(warn=warn, error=error)
        self.input_mapping = input_mapping
        self.output_mapping = output_mapping
        self.sample_idx = sample_idx
        self.batch_dim = batch_dim
        self.report: BatchMixingReport | None = None

    def run_check(self, pl_module: nn.Module, call_args: CallArgs) -> tuple[bool, str]:
        """Run the check on ``pl_module`` with the given call arguments; return ``(ok, message)``."""
        verification = BatchGradientVerification(pl_module)
        ok = verification.check(
            input_array=call_args,
            input_mapping=self.input_mapping,
            output_mapping=self.output_mapping,
            sample_idx=self.sample_idx,
            batch_dim=self.batch_dim,
        )
        self.report = verification.report
        return ok, str(verification.report)
