"""monitor.validate, the checks the relay config, the stored probe results and the dashboard
query share: type and range tests, the walk over a table, shown values, durations."""

from __future__ import annotations

import math

import pytest

from monitor.validate import (
    Invalid,
    check_table,
    is_integer,
    is_number,
    join_path,
    parse_duration_s,
    shorten,
    within,
)
from relay.web.dashboard import QueryError, parse_since_s


def test_a_bool_is_neither_an_integer_nor_a_number() -> None:
    assert is_integer(3) and not is_integer(True) and not is_integer(3.0)
    assert is_number(3) and is_number(2.5) and is_number(math.nan)
    assert not is_number(False) and not is_number("3") and not is_number(None)


def test_within_refuses_nan_infinities_and_huge_integers_without_raising() -> None:
    assert within(0, 0, 1) and within(1, 0, 1) and not within(0, 0, 1, lo_exclusive=True)
    assert within(0.5, 0, 1, lo_exclusive=True)
    assert not within(math.nan, 0, 1) and not within(math.inf, 0, math.inf)
    assert not within(-math.inf, -math.inf, 0)
    assert not within(10**400, 0, 1e300)  # an int no float holds: out of range, no error


def _walk(table: dict[object, object], raise_first: bool) -> tuple[dict[str, object],
                                                                   list[str]]:
    fields = {"a": int, "b": int, "c": int}
    problems: list[str] = []

    def check(key: str, raw: object, key_path: str) -> object:
        if not is_integer(raw):
            raise Invalid(f"expected an integer, got {raw!r}")
        return raw

    def report(problem: Invalid) -> None:
        if raise_first:
            raise problem
        problems.append(str(problem))

    checked = check_table(table, fields, "top", check=check,
                          unknown=lambda key: Invalid("unknown key", join_path("top", str(key))),
                          missing=lambda key, path: Invalid("missing", path) if key == "a"
                          else None,
                          report=report)
    return checked, problems


def test_check_table_reports_unknown_keys_then_fields_in_schema_order() -> None:
    checked, problems = _walk({"z": 1, "c": "x", "b": 2, 5: 0}, raise_first=False)
    assert checked == {"b": 2}
    assert problems == ["top.z: unknown key", "top.5: unknown key", "top.a: missing",
                        "top.c: expected an integer, got 'x'"]


def test_check_table_stops_at_the_first_problem_when_report_raises() -> None:
    with pytest.raises(Invalid) as info:
        _walk({"a": 1, "b": "x", "c": "y"}, raise_first=True)
    assert (info.value.path, info.value.problem) == ("top.b", "expected an integer, got 'x'")
    assert _walk({"a": 1, "c": 3}, raise_first=True) == ({"a": 1, "c": 3}, [])


def test_shorten_keeps_the_limit_marker_included() -> None:
    assert shorten("abc", 3) == "abc"
    assert shorten("abcdef", 4) == "abc…"
    assert shorten("abcdef", 5, "...") == "ab..."


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("30m", 1800), ("30min", 1800), ("24h", 86400), ("7d", 7 * 86400),
    ("2w", 14 * 86400), ("1.5h", 5400), (" 24H ", 86400), ("5 MIN", 300),
])
def test_durations_have_one_syntax(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == seconds
    assert parse_duration_s(text, default_unit="s") == seconds


@pytest.mark.parametrize("text", ["", "h", "-5m", "24 hours", "1e3s", "5m3s", "2024-05-01",
                                  ".5h", "5x"])
def test_what_is_not_a_duration_is_none(text: str) -> None:
    assert parse_duration_s(text) is None
    assert parse_duration_s(text, default_unit="s") is None


def test_a_bare_number_is_a_duration_only_with_a_default_unit() -> None:
    assert parse_duration_s("90") is None
    assert parse_duration_s("90", default_unit="s") == 90
    assert parse_duration_s("2", default_unit="h") == 7200


def test_the_dashboard_since_takes_the_same_durations_within_a_week() -> None:
    assert parse_since_s("30m") == parse_since_s("30min") == 1800
    assert parse_since_s("600") == 600 and parse_since_s("1w") == 7 * 86400
    for bad, why in (("abc", "not a duration"), ("0", "out of range"),
                     ("8d", "out of range"), ("2w", "out of range")):
        with pytest.raises(QueryError, match=why):
            parse_since_s(bad)
