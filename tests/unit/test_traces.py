"""Trace readers (Mahimahi, cooked, csv), looping, scaling and native outage detection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linklab.traces import (
    MTU_BYTES,
    Outage,
    Trace,
    TraceError,
    load_trace,
    parse_trace,
    phases_trace,
    rate_to_opportunities,
    scale_trace,
)

TRACES = Path(__file__).resolve().parents[3] / "shared" / "traces"
ATT = TRACES / "mahimahi" / "ATT-LTE-driving.up"
TMOBILE = TRACES / "mahimahi" / "TMobile-UMTS-driving.up"
BUS = TRACES / "hsdpa" / "norway_bus_1"

needs_shared = pytest.mark.skipif(not ATT.exists(), reason="shared traces not present")


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


# --- the real shared traces --------------------------------------------------------------------
@needs_shared
@pytest.mark.parametrize(("path", "mean_mbps", "zero_seconds", "period_ms"), [
    (ATT, 0.83, 94, 1_012_472),
    (TMOBILE, 0.94, 27, 931_233),
])
def test_mahimahi_trace_matches_readme_mean_and_zero_seconds(
        path: Path, mean_mbps: float, zero_seconds: int, period_ms: int) -> None:
    trace = load_trace(path)
    assert trace.period_ms == period_ms
    assert trace.name == path.stem
    assert trace.opportunities_ms.dtype == np.int64
    assert trace.mean_kbps() / 1000 == pytest.approx(mean_mbps, abs=0.01)
    caps = trace.capacity_kbps(trace.period_s)
    assert int((caps == 0).sum()) == zero_seconds


@needs_shared
def test_att_longest_native_outage_is_the_78_second_gap() -> None:
    trace = load_trace(ATT)
    longest = max(trace.outages(trace.period_s), key=lambda o: o.length_s)
    assert longest.length_s == pytest.approx(78.319)


@needs_shared
def test_fast_reader_and_line_reader_agree_on_att(tmp_path: Path) -> None:
    data = ATT.read_bytes()
    fast = load_trace(ATT)
    # a comment and CRLF endings force the line-by-line reader
    slow = parse_trace(b"# from mahimahi\r\n" + data.replace(b"\n", b"\r\n"), path="x")
    np.testing.assert_array_equal(fast.opportunities_ms, slow.opportunities_ms)
    assert fast.period_ms == slow.period_ms


@needs_shared
def test_hsdpa_cooked_trace_mean_is_the_time_weighted_rate() -> None:
    trace = load_trace(BUS)
    rows = [line.split() for line in BUS.read_text().splitlines() if line.strip()]
    times = [float(t) for t, _ in rows]
    mbps = [float(r) for _, r in rows]
    spacing = float(np.median(np.diff(times)))
    ends = [*times[1:], times[-1] + spacing]
    expected_kbps = sum(r * (e - t) for t, r, e in zip(times, mbps, ends, strict=True)) * 1000
    expected_kbps /= ends[-1] - times[0]
    assert trace.name == "norway_bus_1"
    assert trace.mean_kbps() == pytest.approx(expected_kbps, rel=0.005)


# --- rate traces by hand ----------------------------------------------------------------------
def test_cooked_carries_the_remainder_across_samples(tmp_path: Path) -> None:
    # 0.01 Mbit/s = 1250 B/s; period 2 s (last sample + 1 s spacing) holds 2500 B: one
    # opportunity, when 1500 B have accumulated at 1.2 s (during millisecond 1199), the first
    # second's 1250 B carried over.
    trace = load_trace(write(tmp_path, "slow.cooked", "0.0\t0.01\n1.0  0.01\n"))
    assert trace.period_ms == 2000
    assert trace.opportunities_ms.tolist() == [1199]


def test_csv_with_header_hand_computed(tmp_path: Path) -> None:
    # 1200 kbit/s = 150 000 B/s: 100 opportunities 10 ms apart in the first second (the n-th
    # 1500 B are complete at 10n ms, during millisecond 10n - 1); nothing in the second;
    # 2400 kbit/s: 200 opportunities 5 ms apart in the third (period 3 s).
    trace = load_trace(write(tmp_path, "steps.csv", "seconds,kbps\n0,1200\n1,0\n2,2400\n"))
    expected = list(range(9, 1000, 10)) + list(range(2004, 3000, 5))
    assert trace.opportunities_ms.tolist() == expected
    assert trace.period_ms == 3000
    assert trace.name == "steps"
    assert trace.mean_kbps() == pytest.approx(300 * MTU_BYTES * 8 / 3000)


def test_csv_without_header_and_with_comments(tmp_path: Path) -> None:
    text = "# recorded on the hill\n0, 120  # 10 opportunities a second\n\n0.5,120\n"
    trace = load_trace(write(tmp_path, "hill.csv", text))
    # spacing 0.5 s -> period 1 s at 15 000 B/s -> 10 opportunities 100 ms apart
    assert trace.opportunities_ms.tolist() == list(range(99, 1000, 100))
    assert trace.period_ms == 1000


def test_rate_trace_is_shifted_to_start_at_its_first_sample(tmp_path: Path) -> None:
    shifted = load_trace(write(tmp_path, "a.cooked", "5.0 0.12\n6.0 0.12\n"))
    plain = load_trace(write(tmp_path, "b.cooked", "0.0 0.12\n1.0 0.12\n"))
    np.testing.assert_array_equal(shifted.opportunities_ms, plain.opportunities_ms)
    assert shifted.period_ms == plain.period_ms == 2000


def test_rate_to_opportunities_with_explicit_period() -> None:
    opps, period_ms = rate_to_opportunities([0.0], [1200.0], period_s=0.1)
    assert period_ms == 100
    assert opps.tolist() == list(range(9, 100, 10))


def test_phases_trace_plays_the_phases_one_after_the_other() -> None:
    trace = phases_trace([(0.1, 1200.0), (0.05, 0.0), (0.1, 2400.0)], name="steps")
    assert (trace.name, trace.period_ms) == ("steps", 250)
    # 1200 kbit/s: one 1500-byte opportunity every 10 ms; none for 50 ms; then every 5 ms
    assert trace.opportunities_ms.tolist() == (list(range(9, 100, 10))
                                               + list(range(154, 250, 5)))
    with pytest.raises(ValueError, match="at least one"):
        phases_trace([])
    with pytest.raises(ValueError, match="must be > 0"):
        phases_trace([(0.0, 100.0)])


def test_explicit_format_overrides_detection(tmp_path: Path) -> None:
    path = write(tmp_path, "t.txt", "0 1.2\n1 1.2\n")
    assert load_trace(path, fmt="cooked").opportunities_ms.size == 200
    with pytest.raises(TraceError, match=r"t\.txt:1: mixed formats: two whitespace-separated "
                                         r"numbers \(cooked\) in a mahimahi trace"):
        load_trace(path, fmt="mahimahi")
    with pytest.raises(ValueError, match="unknown trace format 'tsv'"):
        load_trace(path, fmt="tsv")


def test_mahimahi_comments_blank_lines_and_repeats(tmp_path: Path) -> None:
    trace = load_trace(write(tmp_path, "m.up", "# header\n\n3\n3\n  7 # two at 3 ms\n10\n"))
    assert trace.opportunities_ms.tolist() == [3, 3, 7, 10]
    assert trace.period_ms == 10


# --- malformed files ------------------------------------------------------------------------
MALFORMED = [
    ("empty", b"", "auto", 0, "empty file"),
    ("blank", b"\n \n\t\n", "auto", 0, "empty file"),
    ("only_comments", b"# nothing\n\n# here\n", "auto", 0, "no data lines"),
    ("non_numeric", b"1\n2\nabc\n", "auto", 3, "timestamp 'abc' is not a number"),
    ("non_numeric_rate", b"0 1\n1 fast\n", "auto", 2, "rate 'fast' is not a number"),
    ("mixed_cooked_in_mahimahi", b"1\n2 3\n", "auto", 2, "mixed formats"),
    ("mixed_csv_in_mahimahi", b"1\n2,3\n", "auto", 2, "mixed formats: comma-separated"),
    ("mixed_cooked_in_csv", b"0,100\n1 100\n", "auto", 2, "mixed formats"),
    ("three_columns_cooked", b"0 1\n1 2 3\n", "auto", 2,
     "wrong column count: expected 2 (time_s Mbit_per_s), got 3"),
    ("three_columns_csv", b"seconds,kbps\n0,100,5\n", "auto", 2,
     "wrong column count: expected 2 (seconds,kbps), got 3"),
    ("unknown_shape", b"1 2 3\n", "auto", 1, "cannot tell the format: 3 columns"),
    ("negative_timestamp", b"5\n-3\n", "auto", 2, "negative timestamp '-3'"),
    ("negative_rate", b"0 1\n2 -1\n", "auto", 2, "negative rate '-1'"),
    ("negative_time", b"-1,100\n", "auto", 1, "negative time '-1'"),
    ("decreasing_timestamps", b"5\n3\n", "auto", 2, "timestamp 3 is before the previous one"),
    ("decreasing_times", b"2 1\n1 1\n", "auto", 2, "time 1 is before the previous one"),
    ("nan_timestamp", b"1\nnan\n", "auto", 2, "NaN and infinity are not allowed"),
    ("inf_rate", b"0 1\n1 inf\n", "auto", 2, "NaN and infinity are not allowed"),
    ("overflow_rate", b"0 1\n1 1e400\n", "auto", 2, "not a finite number"),
    ("last_timestamp_zero", b"0\n0\n", "auto", 2, "the last timestamp is 0"),
    ("fractional_ms", b"1.5\n", "auto", 1, "not a whole number of ms"),
    ("no_capacity_cooked", b"0 0\n1 0\n", "auto", 0, "no positive capacity"),
    ("no_capacity_csv", b"seconds,kbps\n0,0\n", "auto", 0, "no positive capacity"),
    ("header_only", b"seconds,kbps\n", "auto", 0, "no data lines after the header"),
    ("too_little_capacity", b"0 0.000001\n1 0.000001\n", "auto", 0, "capacity too low"),
    ("not_utf8", b"1\n\xff\xfe2\n", "auto", 2, "not UTF-8"),
    ("wrong_format_asked", b"0 1\n1 1\n", "csv", 1, "mixed formats"),
    ("huge_timestamp", b"123456789012\n", "auto", 1, "too large"),
]


@pytest.mark.parametrize(("case", "content", "fmt", "line", "reason"), MALFORMED,
                         ids=[m[0] for m in MALFORMED])
def test_malformed_file_names_file_line_and_reason(
        tmp_path: Path, case: str, content: bytes, fmt: str, line: int, reason: str) -> None:
    path = write(tmp_path, f"{case}.trace", content)
    with pytest.raises(TraceError) as info:
        load_trace(path, fmt=fmt)
    assert str(info.value).startswith(f"{path}:{line}: ")
    assert reason in str(info.value)
    assert info.value.path == str(path)
    assert info.value.line == line
    assert "\n" not in str(info.value)


def test_missing_file_is_an_os_error_not_a_trace_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_trace(tmp_path / "nope.up")


TOKENS = ["0", "1", "7", "1000", "-1", "1.5", "0.25", "1e3", "1e400", "nan", "inf", "abc",
          "seconds", "kbps", "#", ",", " ", "\t", "", "\r", "\x00", "é", "99999999999999"]


def _check_parse(data: bytes) -> None:
    try:
        trace = parse_trace(data, path="fuzz")
    except TraceError as exc:
        assert str(exc).startswith("fuzz:")
        return
    opps = trace.opportunities_ms
    assert opps.size > 0
    assert (np.diff(opps) >= 0).all()
    assert opps[0] >= 0 and opps[-1] <= trace.period_ms


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_ever_raise_trace_error(data: bytes) -> None:
    _check_parse(data)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(st.sampled_from(TOKENS), max_size=4).map(
    lambda parts: " ".join(parts) if len(parts) % 2 else ",".join(parts)), max_size=12))
def test_random_lines_only_ever_raise_trace_error(lines: list[str]) -> None:
    _check_parse("\n".join(lines).encode())


# --- scaling ----------------------------------------------------------------------------------
def simple(opps: list[int], period_ms: int) -> Trace:
    return Trace(name="t", opportunities_ms=np.array(opps, dtype=np.int64), period_ms=period_ms)


def test_scale_half_keeps_every_other_opportunity() -> None:
    scaled = scale_trace(simple([1, 2, 3, 4, 5, 6], 6), 0.5)
    assert scaled.opportunities_ms.tolist() == [2, 4, 6]
    assert scaled.name == "t x0.5"
    assert scaled.period_ms == 6


def test_scale_two_doubles_each_opportunity() -> None:
    scaled = scale_trace(simple([1, 5], 5), 2)
    assert scaled.opportunities_ms.tolist() == [1, 1, 5, 5]
    assert scaled.mean_kbps() == pytest.approx(2 * simple([1, 5], 5).mean_kbps())


def test_fractional_scale_accumulates_evenly() -> None:
    scaled = scale_trace(simple(list(range(1, 11)), 10), 0.3)
    assert scaled.opportunities_ms.tolist() == [4, 7, 10]
    scaled = scale_trace(simple(list(range(1, 5)), 4), 1.5)
    assert scaled.opportunities_ms.tolist() == [1, 2, 2, 3, 4, 4]


@needs_shared
def test_load_with_scale_thins_the_real_trace() -> None:
    full = load_trace(ATT)
    scaled = load_trace(ATT, scale=0.4)
    assert scaled.name == "ATT-LTE-driving x0.4"
    assert scaled.mean_kbps() == pytest.approx(0.4 * full.mean_kbps(), rel=1e-3)


@pytest.mark.parametrize("factor", [0, -1, float("nan"), float("inf")])
def test_scale_rejects_non_positive_factors(factor: float) -> None:
    with pytest.raises(ValueError, match="scale factor must be a finite number > 0"):
        scale_trace(simple([1], 1), factor)


# --- looping, capacity, outages -------------------------------------------------------------
def test_looped_ms_repeats_the_period_and_stops_before_duration() -> None:
    trace = simple([0, 500, 1000], 1000)
    assert trace.looped_ms(2.5).tolist() == [0, 500, 1000, 1000, 1500, 2000, 2000]
    assert trace.looped_ms(0.5).tolist() == [0]


def test_capacity_per_bin_scales_a_short_last_bin() -> None:
    trace = simple(list(range(0, 1000, 100)), 1000)  # 10 x 1500 B per second = 120 kbit/s
    assert trace.capacity_kbps(2.5).tolist() == pytest.approx([120, 120, 120])
    assert trace.capacity_kbps(2.0, bin_s=0.5).tolist() == pytest.approx([120] * 4)
    assert trace.mean_kbps() == pytest.approx(120)
    assert trace.mean_kbps(2.5) == pytest.approx(120)


def test_outages_find_native_gaps_with_looping() -> None:
    opps = [t for t in range(0, 5000, 10) if not 2000 < t < 3500]
    trace = simple(opps, 5000)
    assert trace.outages(5.0) == [Outage(2.0, 1.5)]
    assert trace.outages(10.0) == [Outage(2.0, 1.5), Outage(7.0, 1.5)]
    assert trace.outages(5.0, min_length_s=2.0) == []


def test_outages_at_the_edges_of_the_window() -> None:
    trace = simple([800, 900, 1000], 1000)  # nothing before 800 ms in each loop
    assert trace.outages(1.0) == [Outage(0.0, 0.8)]
    assert trace.outages(2.0) == [Outage(0.0, 0.8), Outage(1.0, 0.8)]
    # the window ends inside a gap: the outage is truncated there
    assert trace.outages(1.6) == [Outage(0.0, 0.8), Outage(1.0, 0.6)]


def test_empty_trace_is_one_long_outage() -> None:
    trace = simple([], 1000)
    assert trace.outages(3.0) == [Outage(0.0, 3.0)]
    assert trace.mean_kbps(3.0) == 0


def test_outage_end_is_start_plus_length() -> None:
    assert Outage(2.5, 1.5).end_s == 4.0


def test_trace_rejects_inconsistent_arrays() -> None:
    with pytest.raises(ValueError, match="must not decrease"):
        simple([5, 3], 10)
    with pytest.raises(ValueError, match="period_ms"):
        simple([5, 30], 10)
    trace = simple([1, 2], 2)
    with pytest.raises(ValueError):
        trace.opportunities_ms[0] = 0  # read-only
