"""Construction-time argument checks with messages that name the argument."""

import math
import numbers


def check_number(name, value, minimum=None, inclusive=True, integer=False):
    """Validates a finite real (or integer) argument; returns it as a Python number."""
    kind = "an integer" if integer else "a finite number"
    ok_type = isinstance(value, numbers.Integral if integer else numbers.Real)
    if isinstance(value, bool) or not ok_type:
        raise TypeError(
            f"Argument `{name}` must be {kind}. Received: {name}={value!r} "
            f"of type {type(value).__name__}."
        )
    if not integer and not math.isfinite(value):
        raise ValueError(
            f"Argument `{name}` must be {kind}. Received: {name}={value!r}."
        )
    if minimum is not None:
        bad = value < minimum if inclusive else value <= minimum
        if bad:
            relation = ">=" if inclusive else ">"
            raise ValueError(
                f"Argument `{name}` must be {relation} {minimum}. "
                f"Received: {name}={value!r}."
            )
    return int(value) if integer else float(value)


def check_bool(name, value):
    if not isinstance(value, bool):
        raise TypeError(
            f"Argument `{name}` must be True or False. "
            f"Received: {name}={value!r}."
        )
    return value


def check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(
            f"Argument `{name}` must be one of {list(choices)}. "
            f"Received: {name}={value!r}."
        )
    return value


def check_count(name, value, minimum):
    """Validates an integer argument >= `minimum` (bools are rejected)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(
            f"Argument `{name}` must be an integer >= {minimum}. Received: {name}={value!r}."
        )
    return int(value)


def check_fraction(name, value):
    """Validates a number in [0, 1]; returns it."""
    value = check_number(name, value, minimum=0.0)
    if value > 1.0:
        raise ValueError(f"Argument `{name}` must be <= 1. Received: {name}={value!r}.")
    return value
