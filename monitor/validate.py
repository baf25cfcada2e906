"""Checking untrusted structured values (a TOML config, a JSON request body, a query string)
against what they may be, for every family of checks in the project.

- ``Invalid``: one value that does not fit; ``problem`` says what was found and what would be
  valid, ``path`` where (dotted keys, ``[i]`` for items; ``""`` until the caller knows).
- Type tests: a bool is never an integer or a number (``is_integer``, ``is_number``);
  ``within`` is a range test that no NaN, infinity or huge integer passes by accident.
- ``check_table``: one table (a TOML table, a JSON object) against its fields. Every unknown
  key first, in the table's order, then every field in the schema's order: an absent one
  through ``missing`` (None: it may be absent), a present one through ``check``. Each problem
  goes to ``report``: a caller that lists every problem (a config) collects it, one that
  stops at the first (a request body) raises it.
- ``shorten``: a shown value cut to a length, so no message grows with its input.
- ``parse_duration_s``: the one way durations are written: ``90s``, ``30m`` or ``30min``,
  ``24h``, ``7d``, ``2w``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeGuard

DURATION_UNITS_S = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0,
                    "w": 604800.0}
DURATION_UNITS = "s, m, min, h, d or w"
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(min|s|m|h|d|w)?", re.IGNORECASE)


class Invalid(ValueError):
    """A value that does not fit: ``str()`` is ``path: problem`` (just ``problem`` without a
    path)."""

    def __init__(self, problem: str, path: str = "") -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem


def is_integer(value: object) -> TypeGuard[int]:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[int | float]:
    """An int or a float that is not a bool (NaN and the infinities included: see within)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def within(value: int | float, lo: float, hi: float, *, lo_exclusive: bool = False) -> bool:
    """``lo <= value <= hi`` (``lo < value`` with ``lo_exclusive``), false for NaN and the
    infinities; compared as given, so an integer too large for a float is out of range, not an
    OverflowError."""
    if isinstance(value, float) and not math.isfinite(value):
        return False
    above_lo = lo < value if lo_exclusive else lo <= value
    return above_lo and value <= hi


def join_path(path: str, key: str) -> str:
    """``a.b`` + ``c`` -> ``a.b.c``; a key at the top stands alone."""
    return f"{path}.{key}" if path else key


def check_table(table: Mapping[Any, object], fields: Mapping[str, Any], path: str, *,
                check: Callable[[str, object, str], Any],
                unknown: Callable[[object], Invalid],
                missing: Callable[[str, str], Invalid | None],
                report: Callable[[Invalid], None]) -> dict[str, Any]:
    """The checked values of ``table``'s fields, by key (a field that is absent or bad has no
    entry). ``check(key, value, key_path)`` returns the checked value or raises Invalid (a
    problem without a path gets ``key_path``); ``unknown(key)`` and ``missing(key, key_path)``
    say what is wrong with a key; see the module docstring for the order."""
    out: dict[str, Any] = {}
    for key in table:
        if not isinstance(key, str) or key not in fields:
            report(unknown(key))
    for key in fields:
        key_path = join_path(path, key)
        if key not in table:
            problem = missing(key, key_path)
            if problem is not None:
                report(problem)
            continue
        try:
            out[key] = check(key, table[key], key_path)
        except Invalid as e:
            report(e if e.path else Invalid(e.problem, key_path))
    return out


def shorten(text: str, max_chars: int, marker: str = "…") -> str:
    """``text``, or its first characters and ``marker`` in ``max_chars`` characters."""
    return text if len(text) <= max_chars else text[:max_chars - len(marker)] + marker


def parse_duration_s(text: str, default_unit: str | None = None) -> float | None:
    """A duration in seconds: a number (decimals allowed) and a unit of ``DURATION_UNITS_S``
    in any case, spaces around and between allowed; a bare number is in ``default_unit``
    (None: a bare number is no duration). None when ``text`` is not a duration."""
    m = _DURATION_RE.fullmatch(text.strip())
    if m is None:
        return None
    unit = m.group(2) or default_unit
    if unit is None:
        return None
    return float(m.group(1)) * DURATION_UNITS_S[unit.lower()]
