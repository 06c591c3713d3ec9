"""Checks of tpembed's scalar arguments, before anything reaches the extension module.

Each check raises tpembed.ArgumentError (a TypeError and a ValueError) naming the argument, showing
what was given and saying what is accepted, so that no value can reach nanobind's type dispatch
(whose "incompatible function arguments" names neither). Integers are
Python ints (or anything with __index__, such as NumPy integers), never floats, strings or bools:
int("2") or int(4.0) would hide a caller's mistake.
"""

from __future__ import annotations

import operator
from typing import Any, List, Optional, Sequence

from ._tpembed import ArgumentError

_INT64_MAX = 2**63 - 1
_INT32_MAX = 2**31 - 1


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def integer(value: Any, name: str, minimum: Optional[int] = None, bits: int = 64) -> int:
    """`value` as an int within [minimum, the largest `bits`-bit signed integer]."""
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        raise ArgumentError(f"{name} must be an integer, got {_shown(value)} "
                            f"({type(value).__name__})")
    number = operator.index(value)
    largest = _INT64_MAX if bits == 64 else _INT32_MAX
    if (minimum is not None and number < minimum) or number > largest or number < -largest - 1:
        low = minimum if minimum is not None else -largest - 1
        raise ArgumentError(f"{name} must be an integer in [{low}, {largest}], got {number}")
    return number


def optional_integer(value: Any, name: str, minimum: Optional[int] = None,
                     bits: int = 64) -> Optional[int]:
    return None if value is None else integer(value, name, minimum, bits)


def boolean(value: Any, name: str) -> bool:
    """True or False (NumPy bools too); not 0, 1, strings or None, which usually mean a slip."""
    numpy_bool = type(value).__module__ == "numpy" and type(value).__name__ in ("bool_", "bool")
    if isinstance(value, bool) or numpy_bool:
        return bool(value)
    raise ArgumentError(f"{name} must be True or False, got {_shown(value)} "
                        f"({type(value).__name__})")


def string(value: Any, name: str, accepted: Sequence[str]) -> str:
    """A str; the names in `accepted` are what the message offers (the core checks the value)."""
    if isinstance(value, str):
        if "\0" in value:  # C++ messages (and file names) would end at it
            raise ArgumentError(f"{name} {value!r} holds a NUL character, which no name may hold")
        return value
    names = f" ({', '.join(repr(a) for a in accepted)})" if accepted else ""
    raise ArgumentError(f"{name} must be a str{names}, got {_shown(value)} "
                        f"({type(value).__name__})")


def optional_string(value: Any, name: str, accepted: Sequence[str]) -> Optional[str]:
    return None if value is None else string(value, name, accepted)


def rank_list(value: Any, name: str) -> List[int]:
    """A sequence of ranks (ints); None is the empty list."""
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ArgumentError(f"{name} must be a sequence of ranks (e.g. [0, 1]), got "
                            f"{_shown(value)} ({type(value).__name__})")
    return [integer(rank, f"{name}[{i}]", 0, bits=32) for i, rank in enumerate(value)]


def optional_seconds(value: Any, name: str) -> Optional[float]:
    return None if value is None else positive_seconds(value, name)


def positive_seconds(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentError(f"{name} must be a number of seconds, got {_shown(value)} "
                            f"({type(value).__name__})")
    if not 0 < value < float("inf"):  # NaN too
        raise ArgumentError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)
