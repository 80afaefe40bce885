"""Find layers whose bias a following normalization cancels (Conv+BatchNorm and friends).

>>> import torch
>>> from bn_verify import BatchNormVerification
>>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8))
>>> BatchNormVerification(model).check(torch.rand(3, 4))
False
"""

from .__about__ import __version__
from ._callback import BatchNormVerificationCallback
from ._check import BatchNormVerification
from ._exceptions import BatchNormVerificationError, BiasBeforeNormWarning
from ._findings import BiasNormFinding, BiasNormReport

__all__ = [
    "BatchNormVerification",
    "BatchNormVerificationCallback",
    "BatchNormVerificationError",
    "BiasBeforeNormWarning",
    "BiasNormFinding",
    "BiasNormReport",
    "__version__",
]
