"""A stored probe result: its schema, bounds and validation (what the relay accepts)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from monitor.validate import (
    Invalid,
    check_table,
    is_integer,
    is_number,
    join_path,
    shorten,
    within,
)

RESULT_VERSION = 1
MAX_RESULT_BYTES = 48 * 1024  # compact JSON; the relay's request body limit is 64 KiB
MAX_SITE_CHARS = 64
MAX_DURATION_S = 3600.0
MAX_KBPS = 10_000_000.0  # 10 Gbit/s
MAX_MS = 600_000.0
MAX_DROPOUTS = 1000
MAX_SERIES_POINTS = 3600
MAX_REASONS = 20
MAX_TEXT_CHARS = 500
_RESOLUTION_RE = re.compile(r"^[1-9][0-9]{1,3}x[1-9][0-9]{1,3}$")


class ProbeResultError(Invalid):
    """A probe submission that cannot be stored; ``field`` is its dotted path."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem, field)

    @property
    def field(self) -> str:
        return self.path


@dataclass(frozen=True)
class ProbeSubmission:
    site: str
    latitude: float | None
    longitude: float | None
    result: dict[str, Any]

    @property
    def verdict_line(self) -> str:
        """The store's one-line verdict: the English one (it starts with Good, Fair or Poor;
        the Vietnamese one is in the result)."""
        return str(self.result["verdict"]["en"])


def _show(value: object) -> str:
    return shorten(repr(value), 40, "...")


class _Spec:
    nullable = False

    def check(self, value: object, path: str) -> Any:
        if value is None:
            if self.nullable:
                return None
            raise ProbeResultError(path, "must not be null")
        return self._check(value, path)

    def _check(self, value: object, path: str) -> Any:
        raise NotImplementedError


class _Num(_Spec):
    def __init__(self, lo: float, hi: float, nullable: bool = False) -> None:
        self.lo, self.hi, self.nullable = lo, hi, nullable

    def _check(self, value: object, path: str) -> float:
        if not is_number(value) or not within(value, self.lo, self.hi):
            raise ProbeResultError(path, f"must be a finite number within [{self.lo:g}, "
                                         f"{self.hi:g}], got {_show(value)}")
        return float(value)


class _Int(_Spec):
    def __init__(self, lo: int, hi: int, nullable: bool = False) -> None:
        self.lo, self.hi, self.nullable = lo, hi, nullable

    def _check(self, value: object, path: str) -> int:
        if not is_integer(value) or not within(value, self.lo, self.hi):
            raise ProbeResultError(path, f"must be an integer within [{self.lo}, {self.hi}], "
                                         f"got {_show(value)}")
        return value


class _Bool(_Spec):
    def _check(self, value: object, path: str) -> bool:
        if not isinstance(value, bool):
            raise ProbeResultError(path, f"must be true or false, got {_show(value)}")
        return value


class _Text(_Spec):
    def __init__(self, max_chars: int, min_chars: int = 0, nullable: bool = False,
                 pattern: re.Pattern[str] | None = None,
                 choices: tuple[str, ...] | None = None) -> None:
        self.max_chars, self.min_chars, self.nullable = max_chars, min_chars, nullable
        self.pattern, self.choices = pattern, choices

    def _check(self, value: object, path: str) -> str:
        if not isinstance(value, str):
            raise ProbeResultError(path, f"must be a string, got {_show(value)}")
        if self.choices is not None:
            if value not in self.choices:
                raise ProbeResultError(path, f"must be one of {', '.join(self.choices)}, "
                                             f"got {_show(value)}")
            return value
        if not self.min_chars <= len(value) <= self.max_chars:
            raise ProbeResultError(path, f"must be {self.min_chars}..{self.max_chars} "
                                         f"characters, got {len(value)}")
        if not value.isprintable():
            raise ProbeResultError(path, "must contain printable characters only")
        if self.pattern is not None and not self.pattern.match(value):
            raise ProbeResultError(path, f"must look like {self.pattern.pattern}, "
                                         f"got {_show(value)}")
        return value


class _Obj(_Spec):
    def __init__(self, fields: dict[str, _Spec], optional: tuple[str, ...] = ()) -> None:
        self.fields, self.optional = fields, optional

    def _check(self, value: object, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ProbeResultError(path, f"must be an object, got {_show(value)}")
        return check_table(
            value, self.fields, path,
            check=lambda key, raw, key_path: self.fields[key].check(raw, key_path),
            unknown=lambda key: ProbeResultError(join_path(path, _key_label(key)),
                                                 "unknown field"),
            missing=lambda key, key_path: (None if key in self.optional
                                           else ProbeResultError(key_path, "missing")),
            report=_stop,
        )


class _List(_Spec):
    def __init__(self, item: _Spec, max_items: int) -> None:
        self.item, self.max_items = item, max_items

    def _check(self, value: object, path: str) -> list[Any]:
        if not isinstance(value, list):
            raise ProbeResultError(path, f"must be a list, got {_show(value)}")
        if len(value) > self.max_items:
            raise ProbeResultError(path, f"at most {self.max_items} items, got {len(value)}")
        return [self.item.check(v, f"{path}[{i}]") for i, v in enumerate(value)]


class _Tuple(_Spec):
    def __init__(self, *items: _Spec) -> None:
        self.items = items

    def _check(self, value: object, path: str) -> list[Any]:
        if not isinstance(value, list) or len(value) != len(self.items):
            raise ProbeResultError(path, f"must be a list of {len(self.items)} items, "
                                         f"got {_show(value)}")
        return [s.check(v, f"{path}[{i}]") for i, (s, v) in enumerate(zip(self.items, value,
                                                                          strict=True))]


def _key_label(key: object) -> str:
    """An unknown key as it can be shown: itself when short and printable, else its repr."""
    if isinstance(key, str) and key and key.isprintable() and len(key) <= 40:
        return key
    return _show(key)


def _stop(problem: Invalid) -> None:
    """A stored result is refused at its first problem."""
    raise problem


_KBPS = _Num(0, MAX_KBPS, nullable=True)
_MS = _Num(0, MAX_MS, nullable=True)
_SECONDS = _Num(0, MAX_DURATION_S)
_TEXT = _Text(MAX_TEXT_CHARS, min_chars=1)

RESULT_SPEC = _Obj({
    "version": _Int(RESULT_VERSION, RESULT_VERSION),
    "duration_s": _SECONDS,
    "idle_s": _SECONDS,
    "bytes_acked": _Int(0, 10**15),
    "throughput_kbps": _Obj({"p10": _KBPS, "p50": _KBPS, "p90": _KBPS, "mean": _KBPS,
                             "overall_mean": _Num(0, MAX_KBPS),
                             "windows": _Int(0, MAX_SERIES_POINTS)}),
    "rtt_ms": _Obj({"idle_median": _MS, "idle_p95": _MS, "loaded_median": _MS,
                    "loaded_p95": _MS, "bufferbloat": _MS, "jitter": _MS, "jitter_loaded": _MS,
                    "idle_samples": _Int(0, 10**7), "loaded_samples": _Int(0, 10**7)}),
    "dropouts": _List(_Obj({"start_s": _SECONDS, "duration_s": _SECONDS,
                            "cause": _Text(32, choices=("no_data", "connection_lost")),
                            "open_at_end": _Bool()}), MAX_DROPOUTS),
    "dropout_total_s": _SECONDS,
    "series": _Obj({"throughput_kbps": _List(_Tuple(_SECONDS, _Num(0, MAX_KBPS), _Bool()),
                                             MAX_SERIES_POINTS)}),
    "recommendation": _Obj({"streamable": _Bool(),
                            "start_kbps": _Int(0, int(MAX_KBPS), nullable=True),
                            "max_kbps": _Int(0, int(MAX_KBPS), nullable=True),
                            "resolution": _Text(9, nullable=True, pattern=_RESOLUTION_RE),
                            "audio_kbps": _Int(0, 1000),
                            "buffer_ms": _Int(0, int(MAX_MS))}),
    "verdict": _Obj({"level": _Text(8, choices=("good", "fair", "poor")),
                     "en": _TEXT, "vi": _TEXT}),
    "reasons": _List(_Obj({"en": _TEXT, "vi": _TEXT}), MAX_REASONS),
})

SUBMISSION_SPEC = _Obj({
    "site": _Text(MAX_SITE_CHARS, min_chars=1),
    "latitude": _Num(-90, 90, nullable=True),
    "longitude": _Num(-180, 180, nullable=True),
    "result": RESULT_SPEC,
}, optional=("latitude", "longitude"))


def check_site(site: object, path: str = "site") -> str:
    """A site name: 1..64 printable characters, not blank. Raises ProbeResultError."""
    value: str = SUBMISSION_SPEC.fields["site"].check(site, path)
    if not value.strip():
        raise ProbeResultError(path, "must not be blank")
    return value


def validate_result(result: object, path: str = "result") -> dict[str, Any]:
    """The result, checked (see RESULT_SPEC); raises ProbeResultError naming the bad field."""
    checked: dict[str, Any] = RESULT_SPEC.check(result, path)
    size = len(json.dumps(checked, ensure_ascii=False, separators=(",", ":")).encode())
    if size > MAX_RESULT_BYTES:
        raise ProbeResultError(path, f"{size} bytes of JSON, at most {MAX_RESULT_BYTES}")
    return checked


def validate_submission(body: object) -> ProbeSubmission:
    """The body of ``POST /api/probes``: ``{"site", "latitude"?, "longitude"?, "result"}``.
    Raises ProbeResultError naming the first bad field."""
    if not isinstance(body, dict):
        raise ProbeResultError("body", f"must be a JSON object, got {_show(body)}")
    for key in body:
        if key not in SUBMISSION_SPEC.fields:
            raise ProbeResultError(_key_label(key), "unknown field")
    site = check_site(body.get("site"))
    lat = SUBMISSION_SPEC.fields["latitude"].check(body.get("latitude"), "latitude")
    lon = SUBMISSION_SPEC.fields["longitude"].check(body.get("longitude"), "longitude")
    if (lat is None) != (lon is None):
        raise ProbeResultError("latitude" if lat is None else "longitude",
                               "give latitude and longitude together, or neither")
    if "result" not in body:
        raise ProbeResultError("result", "missing")
    return ProbeSubmission(site, lat, lon, validate_result(body["result"]))
