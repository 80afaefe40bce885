"""The one exception type of verify_common; each check subclasses it.

It derives from both ``ValueError`` (most failures are bad input: no tensor,
batch size 1, a ``batch_dim`` out of range) and ``RuntimeError`` (a forward
pass that raised), so callers that catch either keep working.
"""


class VerificationError(ValueError, RuntimeError):
    """A check could not run on the given model and input.

    >>> raise VerificationError("no tensor in the input")
    Traceback (most recent call last):
    ...
    verify_common._errors.VerificationError: no tensor in the input
    """
