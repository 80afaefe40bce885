"""What the check found, for people (``str``) and for machines (``to_dict``).

The first lines of the message are fixed by the public contract (three lines
per pair, all pairs first); the details that follow name the layers, the axes
and the parameters wasted, one line per finding.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from verify_common import describe_module, json_safe, module_label

_BN_CONTRACT_LINES = (
    "Detected a layer '{bias}' with bias followed by a normalization layer '{norm}'.",
    "This makes the normalization ineffective and can lead to unstable training.",
    "Either remove the normalization or turn off the bias.",
)


@dataclasses.dataclass(frozen=True)
class BiasNormFinding:
    """One bias layer whose bias a following normalization cancels.

    ``normalization`` is the qualified name of the normalization module, or,
    for a functional call such as ``F.layer_norm`` made in some module's
    ``forward``, the qualified name of that module (``functional`` is then
    ``True`` and ``normalization_call`` names the call).  Axes index the
    normalized tensor of shape ``input_shape``.  The root module is named ``""``
    as in ``model.named_modules()`` and shown as ``<root>``.

    >>> finding = BiasNormFinding("conv", "Conv2d", "bn", "BatchNorm2d", "F.batch_norm", False,
    ...     (2, 8, 4, 4), (0, 2, 3), (1,), ("N", "C", "H", "W"), 8, False)
    >>> print(str(finding).splitlines()[0])
    Detected a layer 'conv' with bias followed by a normalization layer 'bn'.
    >>> finding.to_dict()["mean_axes"]
    [0, 2, 3]
    """

    bias_layer: str
    bias_layer_type: str
    normalization: str
    normalization_type: str
    normalization_call: str
    functional: bool
    input_shape: tuple[int, ...]
    mean_axes: tuple[int, ...]
    bias_axes: tuple[int, ...]
    axis_labels: tuple[str, ...]
    wasted_parameters: int
    frozen: bool

    @property
    def pair(self) -> tuple[str, str]:
        """``(bias layer, normalization)`` as qualified names."""
        return (self.bias_layer, self.normalization)

    @property
    def fix(self) -> str:
        """How to remove the wasted bias."""
        if self.bias_layer_type in _BN_BIAS_FLAG_TYPES:
            return f"construct '{module_label(self.bias_layer)}' with bias=False"
        return f"remove the bias parameter of {describe_module(self.bias_layer, self.bias_layer_type)}"

    def contract_lines(self) -> list[str]:
        """The three fixed lines of the message for this pair."""
        first = _BN_CONTRACT_LINES[0].format(bias=module_label(self.bias_layer), norm=module_label(self.normalization))
        return [first, *_BN_CONTRACT_LINES[1:]]

    def detail(self) -> str:
        """One sentence: which layers, which axes, how many parameters, the fix."""
        labels = self.axis_labels

        def axes(indices: tuple[int, ...]) -> str:
            return ", ".join(labels[index] for index in indices) or "no axis"

        norm = describe_module(self.normalization, self.normalization_type)
        if self.functional:
            norm = f"{self.normalization_call} called in {norm}"
        frozen = " (frozen: requires_grad=False)" if self.frozen else ""
        shape = ", ".join(str(size) for size in self.input_shape)
        return (
            f"{describe_module(self.bias_layer, self.bias_layer_type, f'{self.wasted_parameters} bias parameters')}"
            f"{frozen}: bias cancelled by {norm} -- it takes the mean over ({axes(self.mean_axes)}) of a "
            f"({shape}) tensor, and the bias varies only along ({axes(self.bias_axes)}); "
            f"{self.wasted_parameters} parameters wasted. Fix: {self.fix}."
        )

    def __str__(self) -> str:
        return "\n".join([*self.contract_lines(), self.detail()])

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields, plus ``fix``."""
        return {**json_safe(self), "fix": self.fix}


@dataclasses.dataclass(frozen=True)
class BiasNormReport:
    """All findings of one check, in forward order, and what was looked at.

    >>> report = BiasNormReport(findings=(), biased_layers_checked=2, normalizations_checked=1)
    >>> report.ok, str(report)
    (True, 'No normalization cancels a bias: checked 2 biased layers and 1 normalization call.')
    """

    findings: tuple[BiasNormFinding, ...] = ()
    biased_layers_checked: int = 0
    normalizations_checked: int = 0

    @property
    def ok(self) -> bool:
        """True when nothing was found."""
        return not self.findings

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """``(bias layer, normalization)`` per finding, in forward order."""
        return [finding.pair for finding in self.findings]

    @property
    def wasted_parameters(self) -> int:
        """Bias parameters wasted in total (a layer cancelled by two normalizations counts once)."""
        return sum({finding.bias_layer: finding.wasted_parameters for finding in self.findings}.values())

    def __str__(self) -> str:
        if self.ok:
            layers = "layer" if self.biased_layers_checked == 1 else "layers"
            calls = "call" if self.normalizations_checked == 1 else "calls"
            return (
                f"No normalization cancels a bias: checked {self.biased_layers_checked} biased {layers} "
                f"and {self.normalizations_checked} normalization {calls}."
            )
        lines = [line for finding in self.findings for line in finding.contract_lines()]
        lines += ["", "Details:"]
        lines += [f"- {finding.detail()}" for finding in self.findings]
        lines.append(f"In total {self.wasted_parameters} bias parameters are wasted.")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary: ``ok``, ``pairs``, ``wasted_parameters``, ``findings`` and the counts."""
        return {
            "ok": self.ok,
            "pairs": json_safe(self.pairs),
            "wasted_parameters": self.wasted_parameters,
            "biased_layers_checked": self.biased_layers_checked,
            "normalizations_checked": self.normalizations_checked,
            "findings": [finding.to_dict() for finding in self.findings],
        }


_BN_BIAS_FLAG_TYPES = frozenset(
    "Linear Bilinear LazyLinear Conv1d Conv2d Conv3d LazyConv1d LazyConv2d LazyConv3d ConvTranspose1d "
    "ConvTranspose2d ConvTranspose3d LazyConvTranspose1d LazyConvTranspose2d LazyConvTranspose3d "
    "NonDynamicallyQuantizableLinear MultiheadAttention".split()
)
