"""The check's result: which output samples depend on which input samples, and where it starts.

Small frozen dataclasses with ``__str__`` for people (the contract's three
lines first, then the detail) and ``to_dict()`` for machines (plain JSON).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from verify_common import describe_module, json_safe

_BM_HEADLINE = (
    "Your model is mixing data across the batch dimension.\n"
    "This can lead to wrong gradient updates in the optimizer.\n"
    "Check the operations that reshape and permute tensor dimensions in your model."
)
_BM_MAX_LISTED = 8


@dataclasses.dataclass(frozen=True)
class SampleDependency:
    """Output sample ``output_sample`` depends on input sample ``input_sample`` (a different one).

    ``both_ways`` is ``True`` when the reverse dependency exists too, ``False``
    when it does not, and ``None`` when it was not checked (``sample_idx`` mode).

    >>> str(SampleDependency(3, 0, both_ways=False))
    'output sample 3 depends on input sample 0 (one-way)'
    """

    output_sample: int
    input_sample: int
    both_ways: bool | None = None

    def __str__(self) -> str:
        return f"output sample {self.output_sample} depends on input sample {self.input_sample}{_bm_direction(self.both_ways)}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields."""
        return json_safe(self)


@dataclasses.dataclass(frozen=True)
class MixingModule:
    """A module of the model, named the house way: ``'encoder.attn' (MultiheadAttention)``.

    ``detail`` says what was found there (shapes, direction).

    >>> str(MixingModule("encoder.attn", "MultiheadAttention"))
    "'encoder.attn' (MultiheadAttention)"
    """

    name: str
    module_type: str
    detail: str = ""

    def __str__(self) -> str:
        return describe_module(self.name, self.module_type)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields."""
        return json_safe(self)


@dataclasses.dataclass(frozen=True)
class BatchMixingReport:
    """What ``BatchGradientVerification.check`` found.

    Attributes:
        ok: ``True`` when no checked output sample depends on another input sample.
        batch_size: B, the size of the batch dimension.
        batch_dim: the batch dimension of inputs and outputs.
        sample_idx: the one output sample checked, or ``None`` for the complete check.
        backward_passes: backward passes the decision took (k for B samples, or 1).
        dependencies: every (output sample, input sample) dependency found.
        first_mixing_module: the first module whose output rows depend on other rows of its
            input, when the data mixes and such a module was found.
        batchnorm_as_eval: BatchNorm/SyncBatchNorm modules that use batch statistics (training
            mode) and were treated as in evaluation mode: they mix samples by design.
        gradient_sources: where the gradients were measured (inputs, or the first floating
            tensors computed from integer inputs).

    >>> report = BatchMixingReport(ok=False, batch_size=2, batch_dim=0, sample_idx=None,
    ...     backward_passes=2, dependencies=(SampleDependency(1, 0, both_ways=False),))
    >>> print(str(report).splitlines()[0])
    Your model is mixing data across the batch dimension.
    >>> report.pairs
    [(1, 0)]
    """

    ok: bool
    batch_size: int
    batch_dim: int
    sample_idx: int | None
    backward_passes: int
    dependencies: tuple[SampleDependency, ...] = ()
    first_mixing_module: MixingModule | None = None
    batchnorm_as_eval: tuple[MixingModule, ...] = ()
    gradient_sources: tuple[str, ...] = ()

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """``(output_sample, input_sample)`` for every dependency found."""
        return [(dep.output_sample, dep.input_sample) for dep in self.dependencies]

    @property
    def matrix(self) -> list[list[bool]]:
        """``matrix[i][j]``: output sample i depends on input sample j (i != j; the diagonal is False)."""
        rows = [[False] * self.batch_size for _ in range(self.batch_size)]
        for i, j in self.pairs:
            rows[i][j] = True
        return rows

    def __str__(self) -> str:
        lines = [_BM_HEADLINE] if not self.ok else [self._clean_line()]
        if not self.ok:
            if self.first_mixing_module is not None:
                module = self.first_mixing_module
                lines.append(f"Mixing starts in {module}: {module.detail}" if module.detail else f"Mixing starts in {module}.")
            else:
                lines.append("No single module could be blamed: the mixing happens outside the modules' own inputs and outputs.")
            lines.extend(self._dependency_lines())
        if self.batchnorm_as_eval:
            names = ", ".join(str(module) for module in self.batchnorm_as_eval[:_BM_MAX_LISTED])
            more = len(self.batchnorm_as_eval) - _BM_MAX_LISTED
            names += f" and {more} more" if more > 0 else ""
            lines.append(
                f"Treated as in evaluation mode (batch statistics mix samples by design, which is not a bug): {names}."
            )
        if self.gradient_sources:
            lines.append("Gradients measured at: " + "; ".join(self.gradient_sources) + ".")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields plus ``message`` (``str(self)``); survives ``json.dumps``/``json.loads`` unchanged."""
        data = json_safe(self)
        data["pairs"] = json_safe(self.pairs)
        data["message"] = str(self)
        return data

    # -- wording ------------------------------------------------------------------
    def _scope(self) -> str:
        if self.sample_idx is None:
            pairs = self.batch_size * (self.batch_size - 1)
            passes = f"{self.backward_passes} backward pass{'es' if self.backward_passes != 1 else ''}"
            return f"batch size {self.batch_size}, batch_dim={self.batch_dim}; all {pairs} ordered pairs checked in {passes}"
        return (
            f"batch size {self.batch_size}, batch_dim={self.batch_dim}; only output sample {self.sample_idx} "
            "checked, in 1 backward pass"
        )

    def _clean_line(self) -> str:
        if self.sample_idx is None:
            return f"No output sample depends on another input sample ({self._scope()})."
        return f"Output sample {self.sample_idx} depends on no other input sample ({self._scope()})."

    def _dependency_lines(self) -> list[str]:
        by_output: dict[int, list[SampleDependency]] = {}
        for dep in self.dependencies:
            by_output.setdefault(dep.output_sample, []).append(dep)
        one_way = sum(dep.both_ways is False for dep in self.dependencies)
        both = sum(dep.both_ways is True for dep in self.dependencies)
        summary = f"{len(self.dependencies)} dependencies between different samples ({self._scope()})"
        if self.sample_idx is None:
            summary += f": {one_way} one-way, {both} both ways"
        lines = [summary + ":"]
        for output in sorted(by_output)[:_BM_MAX_LISTED]:
            groups = []
            for label in (False, True, None):
                inputs = [dep.input_sample for dep in by_output[output] if dep.both_ways is label]
                if inputs:
                    groups.append(f"{_bm_ranges(inputs)}{_bm_direction(label)}")
            noun = "input sample" if len(by_output[output]) == 1 else "input samples"
            lines.append(f"  output sample {output} depends on {noun} {', '.join(groups)}")
        hidden = len(by_output) - _BM_MAX_LISTED
        if hidden > 0:
            lines.append(f"  ... and {hidden} more output samples (see report.dependencies)")
        return lines


def _bm_direction(both_ways: bool | None) -> str:
    return {True: " (both ways)", False: " (one-way)", None: ""}[both_ways]


def _bm_ranges(numbers: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``'0-2, 5'``."""
    spans: list[list[int]] = []
    for number in sorted(numbers):
        if spans and number == spans[-1][1] + 1:
            spans[-1][1] = number
        else:
            spans.append([number, number])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans)
