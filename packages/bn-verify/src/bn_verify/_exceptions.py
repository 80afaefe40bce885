"""The warning category and the exception type of bn_verify.

One of each, so that users can filter the warning (``-W error::bn_verify.BiasBeforeNormWarning``)
and catch every failure of the check with one ``except``.
"""

from __future__ import annotations

from verify_common import VerificationError


class BiasBeforeNormWarning(UserWarning):
    """Issued when a normalization cancels the bias of the layer before it.

    >>> import warnings
    >>> issubclass(BiasBeforeNormWarning, UserWarning)
    True
    """


class BatchNormVerificationError(VerificationError):
    """``BatchNormVerification`` could not run on the given model and input.

    A ``ValueError`` (bad input: no tensor, no parameters) and a ``RuntimeError``
    (the forward pass raised) at the same time.

    >>> issubclass(BatchNormVerificationError, (ValueError, RuntimeError))
    True
    """
