"""``BatchNormVerification``: one traced forward pass, then findings in forward order.

This module owns the run around the tracer: input resolution, training mode
for the length of the pass, lazy modules (materialized on a copy, never on the
user's model), the module stack hooks, and turning per-bias records into a
report.  Everything the pass touches is restored by ``preserved_state``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from verify_common import (
    call_model,
    copy_to_device,
    forward_hooks,
    iter_tensors,
    materializable_copy,
    model_device,
    module_label,
    preserved_state,
    resolve_input,
)

from ._exceptions import BatchNormVerificationError
from ._findings import BiasNormFinding, BiasNormReport
from ._trace import BiasSource, BiasTracer, Cancellation

_BN_CHECK_NAME = "BatchNormVerification"


class BatchNormVerification:
    """Find every layer whose bias a following normalization cancels.

    ``check()`` runs one forward pass on an example input and follows what
    really flows: a bias is reported when its layer's output reaches a
    normalization only through operations that keep the bias a constant
    along the normalization's mean axes, and nothing else uses it.  The model
    is checked as it trains (batch statistics, dropout off), whatever its mode.

    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
    >>> verification = BatchNormVerification(model)
    >>> verification.check(input_array=torch.rand(2, 3, 8, 8))
    False
    >>> verification.detected_pairs
    [('0', '1')]
    >>> print(str(verification.report).splitlines()[0])
    Detected a layer '0' with bias followed by a normalization layer '1'.
    """

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"BatchNormVerification needs a torch.nn.Module, got {type(model).__name__}.")
        self.model = model
        self.report = BiasNormReport()

    @property
    def detected_pairs(self) -> list[tuple[str, str]]:
        """``(bias layer, normalization)`` qualified module names, in forward order."""
        return self.report.pairs

    def check(self, input_array: Any = None) -> bool:
        """Run the model once on ``input_array``; return ``True`` when no bias is cancelled.

        Args:
            input_array: a tensor (the single argument), a tuple (positional
                arguments), a dict (keyword arguments), or ``None`` to use
                ``model.example_input_array``.

        Returns:
            ``True`` when nothing was found; the details are in ``self.report``.

        Raises:
            BatchNormVerificationError: no input or no tensor in it, a model
                without parameters, a TorchScript module, or a forward pass that raised.

        >>> import torch
        >>> mlp = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8))
        >>> BatchNormVerification(mlp).check(torch.rand(2, 4))
        True
        """
        model = self.model
        call_args = resolve_input(model, input_array, _BN_CHECK_NAME, error=BatchNormVerificationError)
        if next(model.parameters(), None) is None:
            raise BatchNormVerificationError(
                f"{_BN_CHECK_NAME}: {type(model).__name__} has no parameters, so it has no bias to check."
            )
        scripted = next((name for name, module in model.named_modules() if isinstance(module, torch.jit.ScriptModule)), None)
        if scripted is not None:
            raise BatchNormVerificationError(
                f"{_BN_CHECK_NAME}: '{module_label(scripted)}' is a TorchScript module, whose calls cannot be "
                "followed; check the Python module before scripting it."
            )
        # A copy (lazy modules only) leaves the model untouched; either way the RNG is restored.
        target = materializable_copy(model, _BN_CHECK_NAME, error=BatchNormVerificationError)
        with preserved_state(target), torch.no_grad():
            target.train()
            tracer = BiasTracer(target)
            inputs = copy_to_device(call_args, model_device(target))
            # preserved_state also puts back parameters the pass rewrites (embedding max_norm, say).
            with forward_hooks(target.named_modules(), hook=tracer.exit_module, pre_hook=tracer.enter_module):
                with tracer:
                    output = call_model(target, inputs, _BN_CHECK_NAME, error=BatchNormVerificationError)
            tracer.finish(list(iter_tensors(output)))
        self.report = _bn_build_report(list(tracer.sources.values()), tracer.normalization_calls)
        return self.report.ok


def _bn_build_report(sources: list[BiasSource], normalization_calls: int) -> BiasNormReport:
    # One finding per (bias layer, normalization) pair; a layer called several times counts once.
    pairs: dict[tuple[str, str], tuple[Cancellation, dict[int, BiasSource]]] = {}
    for source in sources:
        if not source.redundant:
            continue
        for cancel in source.cancellations:
            first, members = pairs.setdefault((source.name, cancel.norm_name), (cancel, {}))
            members[source.key] = source
            if cancel.order < first.order:
                pairs[(source.name, cancel.norm_name)] = (cancel, members)
    findings = []
    for (bias_layer, _), (cancel, members) in pairs.items():
        first_source = min(members.values(), key=lambda item: item.order)
        finding = BiasNormFinding(
            bias_layer=bias_layer,
            bias_layer_type=first_source.module_type,
            normalization=cancel.norm_name,
            normalization_type=cancel.norm_type,
            normalization_call=cancel.call,
            functional=cancel.functional,
            input_shape=cancel.shape,
            mean_axes=cancel.mean_axes,
            bias_axes=cancel.bias_axes,
            axis_labels=cancel.axis_labels,
            wasted_parameters=sum(member.numel for member in members.values()),
            frozen=all(member.frozen for member in members.values()),
        )
        findings.append(((cancel.order, first_source.order), finding))
    findings.sort(key=lambda item: item[0])
    return BiasNormReport(
        findings=tuple(finding for _, finding in findings),
        biased_layers_checked=len({source.name for source in sources}),
        normalizations_checked=normalization_calls,
    )
