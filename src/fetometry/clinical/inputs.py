"""Input checks shared by the clinical functions, and the errors they raise.

Every public function of ``fetometry.clinical`` raises only ``ValueError`` subclasses,
each documented here or next to the function that raises it:

- ``InvalidInputError``: the input is not what the function takes (a bool, a string,
  None or another object where a number is needed; NaN, infinity or a number too large
  for a float; a negative or zero length). The message names the input and says what to
  pass instead.
- ``OutOfRangeError``: a number of the right kind that lies outside the range a formula
  or a standard was built for (the message names the range).
- ``growth.UnknownMeasureError``, ``dating.CircularDatingError`` and
  ``visits.VisitStoreError``: see their modules.

Booleans are refused as numbers although Python treats ``True`` as 1: a length of
``True`` mm is a programming error upstream, never a measurement. Strings are refused
even when they spell a number (``"20"``): accepting them hides where the number came
from and which unit it had.
"""

from __future__ import annotations

import math
import numbers


class InvalidInputError(ValueError):
    """An input of the wrong kind (bool, text, None, NaN, infinity, non-positive length)."""


class OutOfRangeError(ValueError):
    """An input lies outside the range a formula or standard was built for."""


def _kind(value: object) -> str:
    return type(value).__name__


def _is_numpy_bool(value: object) -> bool:
    # numpy's bool scalar (numpy.bool_, named "bool" in numpy 2) is not a bool subclass.
    kind = type(value)
    return kind.__module__ == "numpy" and kind.__name__ in ("bool_", "bool")


def number(value: object, name: str, unit: str, *, positive: bool = False, minimum: float | None = None) -> float:
    """``value`` as a finite float, or InvalidInputError saying what to pass instead.

    ``positive`` refuses zero and negative numbers (lengths, weights); ``minimum``
    refuses numbers below it. Accepts ints, floats and other real numbers (numpy
    scalars included); refuses bools, strings, None and anything else.
    """
    if isinstance(value, bool) or _is_numpy_bool(value):
        raise InvalidInputError(
            f"{name} must be a number of {unit}, got the boolean {value!r}; pass the measured value"
        )
    if isinstance(value, (str, bytes)):
        raise InvalidInputError(
            f"{name} must be a number of {unit}, got the text {value!r}; convert it to a number first "
            f"(and check that it is in {unit})"
        )
    if not isinstance(value, numbers.Real):
        raise InvalidInputError(f"{name} must be a number of {unit}, got {_kind(value)} {value!r}")
    try:
        result = float(value)
    except (OverflowError, TypeError, ValueError):
        raise InvalidInputError(
            f"{name} = {value!r} cannot be used as a number of {unit}; pass a finite number"
        ) from None
    if not math.isfinite(result):
        raise InvalidInputError(f"{name} must be a finite number of {unit}, got {value!r}")
    if positive and result <= 0:
        raise InvalidInputError(f"{name} must be a positive number of {unit}, got {value!r}")
    if minimum is not None and result < number(minimum, "minimum", unit):
        raise InvalidInputError(f"{name} must be at least {minimum:g} {unit}, got {value!r}")
    return result


def optional_number(value: object, name: str, unit: str, *, positive: bool = False) -> float | None:
    """``number(...)`` for an optional input: None stays None."""
    return None if value is None else number(value, name, unit, positive=positive)
