"""Find PyTorch models that mix data across the batch dimension.

``BatchGradientVerification(model).check(input_array)`` proves, with one
forward pass and a handful of backward passes, that no output sample depends
on another input sample, and says which do and where it starts otherwise.
``BatchGradientVerificationCallback`` runs it once in a Lightning ``Trainer``.
"""

from ._callback import BatchGradientVerificationCallback
from ._check import BatchGradientVerification, BatchGradientVerificationError, BatchMixingWarning
from ._findings import BatchMixingReport, MixingModule, SampleDependency
from ._mapping import default_input_mapping, default_output_mapping
from .__about__ import __version__

__all__ = [
    "BatchGradientVerification",
    "BatchGradientVerificationCallback",
    "BatchGradientVerificationError",
    "BatchMixingReport",
    "BatchMixingWarning",
    "MixingModule",
    "SampleDependency",
    "__version__",
    "default_input_mapping",
    "default_output_mapping",
]
