"""Declarative parameter checks with one error-message format.

Every check raises :class:`ParameterError` whose message reads, in scikit-learn's words::

    The 'clip_norm' parameter of DPFedAvg must be a float in the range (0, inf). Got -1.0 instead.

The CLI turns a :class:`ParameterError` into one line on stderr and exit code 2.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ParameterError",
    "Interval",
    "Options",
    "check_param",
    "check_params",
]


class ParameterError(ValueError):
    """A parameter (of a function, class, config file or CLI option) is outside its allowed range."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class Interval:
    """A numeric range; ``closed`` is one of ``"both"``, ``"left"``, ``"right"``, ``"neither"``."""

    kind: type  # int or float (int accepts only integers; float accepts any real number)
    low: float | None
    high: float | None
    closed: str = "both"

    def __post_init__(self) -> None:
        if self.closed not in {"both", "left", "right", "neither"}:
            raise ValueError(f"closed must be both/left/right/neither, got {self.closed!r}")

    def describe(self) -> str:
        lo = "-inf" if self.low is None else _fmt(self.low)
        hi = "inf" if self.high is None else _fmt(self.high)
        left = "[" if self.closed in {"both", "left"} and self.low is not None else "("
        right = "]" if self.closed in {"both", "right"} and self.high is not None else ")"
        noun = "an int" if self.kind is int else "a float"
        return f"{noun} in the range {left}{lo}, {hi}{right}"

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool):
            return False
        if self.kind is int:
            if not isinstance(value, numbers.Integral):
                return False
        elif not isinstance(value, numbers.Real):
            return False
        v = float(value)
        if math.isnan(v):
            return False
        if self.low is not None:
            if v < self.low or (v == self.low and self.closed in {"right", "neither"}):
                return False
        if self.high is not None:
            if v > self.high or (v == self.high and self.closed in {"left", "neither"}):
                return False
        return True


@dataclass(frozen=True)
class Options:
    """A finite set of allowed values."""

    values: tuple[Any, ...]

    def describe(self) -> str:
        return "one of {" + ", ".join(repr(v) for v in self.values) + "}"

    def contains(self, value: Any) -> bool:
        return value in self.values


def _fmt(x: float) -> str:
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return str(x)


Constraint = Interval | Options | type | None


def _describe(c: Constraint) -> str:
    if c is None:
        return "None"
    if isinstance(c, type):
        return f"an instance of {c.__name__!r}"
    return c.describe()


def _satisfies(value: Any, c: Constraint) -> bool:
    if c is None:
        return value is None
    if isinstance(c, type):
        return isinstance(value, c)
    return c.contains(value)


def check_param(name: str, value: Any, owner: str, *constraints: Constraint) -> Any:
    """Check ``value`` against any of ``constraints`` (an OR); return it unchanged or raise.

    Parameters
    ----------
    name : str
        The parameter's name as the user wrote it (``"fraction_fit"``, ``"privacy.epsilon"``).
    value : object
        The value given.
    owner : str
        What the parameter belongs to (a class, function, config section or CLI command).
    *constraints : Interval, Options, type or None
        The value is valid if it satisfies at least one.
    """
    if any(_satisfies(value, c) for c in constraints):
        return value
    allowed = " or ".join(_describe(c) for c in constraints)
    raise ParameterError(
        f"The '{name}' parameter of {owner} must be {allowed}. Got {value!r} instead.", param=name
    )


def check_params(owner: str, spec: Iterable[tuple[str, Any, Constraint | tuple[Constraint, ...]]]) -> None:
    """Check several ``(name, value, constraint_or_tuple)`` triples for one owner."""
    for name, value, cons in spec:
        cs = cons if isinstance(cons, tuple) else (cons,)
        check_param(name, value, owner, *cs)


# Frequently used ranges, so that every module describes them the same way.
POSITIVE_INT = Interval(int, 1, None, "left")
NONNEG_INT = Interval(int, 0, None, "left")
POSITIVE_FLOAT = Interval(float, 0, None, "neither")
NONNEG_FLOAT = Interval(float, 0, None, "left")
UNIT_OPEN = Interval(float, 0, 1, "neither")
UNIT_LEFT_OPEN = Interval(float, 0, 1, "right")
