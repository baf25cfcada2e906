"""The connection check's cores, without I/O: the analysis on hand-computed samples, the
recommendation rule, the wire messages, the client's sender and the relay's session, and the
validator of stored results (fuzzed with hypothesis)."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probe.analysis import ProbeAnalysis
from probe.client import (
    FILLER_MESSAGE_BYTES,
    IDLE_PING_INTERVAL_S,
    MIN_INFLIGHT_BYTES,
    STALL_TIMEOUT_S,
    AckedTotal,
    ProbeSender,
    RttMeasured,
)
from probe.recommend import RESOLUTIONS, buffer_ms_for, recommend
from probe.report import format_report
from probe.result import (
    MAX_RESULT_BYTES,
    ProbeResultError,
    check_site,
    validate_result,
    validate_submission,
)
from probe.stats import percentile
from probe.wire import (
    Ack,
    Filler,
    Ping,
    Pong,
    encode_ack,
    encode_filler,
    encode_ping,
    encode_pong,
    parse_client_message,
    parse_relay_message,
)
from relay.web.probe import ProbeServerSession
from steadycast.cli import main
from uplink import CloseCode, ProtocolError
from uplink.media import parse_resolution

T0 = 100.0  # the probe's start on the test clock


def _hand_computed_probe() -> tuple[ProbeAnalysis, dict[str, Any]]:
    """2 s idle then 8 s loaded; per loaded second 800, 1000, 1200, (outage), 900, 1100, 1000
    kbit/s in ACKs every 0.1 s; nothing acknowledged from 5.0 s until 7.1 s, and a PONG sent
    at 4.8 s ends the outage at 7.0 s."""
    a = ProbeAnalysis(T0, idle_s=2.0)
    for t, rtt_ms in ((0.4, 80), (0.8, 90), (1.2, 70), (1.6, 100), (2.0, 80)):
        a.on_rtt(T0 + t, rtt_ms / 1000, loaded=False)
    total = 0
    per_second_bytes = {2: 100_000, 3: 125_000, 4: 150_000, 7: 112_500, 8: 137_500, 9: 125_000}
    loaded_rtts = {3.0: 300, 4.0: 500, 8.0: 400, 9.0: 600}
    for second, nbytes in per_second_bytes.items():
        for k in range(1, 11):
            t = second + k / 10  # 5.0 s: the last ACK before the outage
            total += nbytes // 10
            if second == 7 and k == 1:
                a.on_rtt(T0 + 7.0, 2.2, loaded=True)  # sent at 4.8 s, answered after the outage
            a.on_acked(T0 + t, total)
            a.poll(T0 + t)
            if round(t, 1) in loaded_rtts:
                a.on_rtt(T0 + t, loaded_rtts[round(t, 1)] / 1000, loaded=True)
        if second == 4:
            for k in range(1, 21):  # the outage: the client polls, nothing arrives
                a.poll(T0 + 5.0 + k / 10)
    return a, a.finish(T0 + 10.0)


def test_analysis_on_hand_computed_samples() -> None:
    a, r = _hand_computed_probe()
    tp = r["throughput_kbps"]
    # used windows: [2,3) 800, [3,4) 1000, [4,5) 1200, [7,8) 900, [8,9) 1100, [9,10) 1000;
    # [5,6) and [6,7) overlap the dropout 5.0..7.0
    assert tp["windows"] == 6
    assert tp["p10"] == pytest.approx(850, abs=0.2)  # 800 + 0.5 * (900 - 800)
    assert tp["p50"] == pytest.approx(1000, abs=0.2)
    assert tp["p90"] == pytest.approx(1150, abs=0.2)  # 1100 + 0.5 * (1200 - 1100)
    assert tp["mean"] == pytest.approx(1000, abs=0.2)
    assert tp["overall_mean"] == pytest.approx(750, abs=0.2)  # 750 000 bytes over 8 s
    used = [(round(t), round(k), u) for t, k, u in r["series"]["throughput_kbps"]]
    assert used == [(2, 800, True), (3, 1000, True), (4, 1200, True), (5, 0, False),
                    (6, 0, False), (7, 900, True), (8, 1100, True), (9, 1000, True)]
    assert r["dropouts"] == [{"start_s": 5.0, "duration_s": 2.0, "cause": "no_data",
                              "open_at_end": False}]
    assert r["dropout_total_s"] == 2.0
    rtt = r["rtt_ms"]
    assert (rtt["idle_median"], rtt["idle_p95"]) == (80.0, 98.0)  # 90 + 0.8 * (100 - 90)
    assert rtt["jitter"] == 20.0  # (10 + 20 + 30 + 20) / 4
    # the 2.2 s sample spans the dropout and is left out
    assert (rtt["loaded_median"], rtt["loaded_p95"]) == (450.0, 585.0)
    assert rtt["loaded_samples"] == 4 and rtt["idle_samples"] == 5
    assert rtt["bufferbloat"] == 370.0
    assert rtt["jitter_loaded"] == pytest.approx(166.7, abs=0.05)  # (200 + 100 + 200) / 3
    # start 0.7 * 850 - 64 = 531 -> 530; max 0.9 * 1000 - 64 = 836 -> 830; 480p (floor 369);
    # buffer ceil(2.0 + 2) = 4 s; 20 % of the time in dropouts: fair, not good
    assert r["recommendation"] == {"streamable": True, "start_kbps": 530, "max_kbps": 830,
                                   "resolution": "854x480", "audio_kbps": 64,
                                   "buffer_ms": 4000}
    assert r["verdict"]["level"] == "fair"
    assert "854x480" in r["verdict"]["en"] and "854x480" in r["verdict"]["vi"]
    assert all(reason["en"] and reason["vi"] for reason in r["reasons"])
    assert validate_result(r) == r
    report = format_report("Đồi A", r)
    assert "--resolution 854x480 --start-kbps 530 --max-kbps 830" in report
    assert "buffer_ms = 4000" in report and "Kết luận" in report


def test_dropout_open_at_the_end_and_lost_connection() -> None:
    a = ProbeAnalysis(0.0, idle_s=0.0)
    for k in range(1, 21):
        a.on_acked(k / 10, k * 1000)
    a.on_connection_lost(2.5)  # no progress since 2.0; noticed as a lost connection
    r = a.finish(4.0)
    assert r["dropouts"] == [{"start_s": 2.5, "duration_s": 1.5, "cause": "connection_lost",
                              "open_at_end": True}]
    assert validate_result(r) == r


def test_nothing_measured_is_a_poor_verdict_not_a_crash() -> None:
    r = ProbeAnalysis(5.0, idle_s=3.0).finish(35.0)
    assert r["throughput_kbps"]["windows"] == 0 and r["throughput_kbps"]["p10"] is None
    assert r["rtt_ms"]["idle_median"] is None and r["dropouts"] == []
    assert r["recommendation"]["streamable"] is False
    assert r["verdict"]["level"] == "poor"
    assert validate_result(r) == r
    assert "do not livestream" in format_report("x", r)


def test_acknowledged_bytes_never_go_back() -> None:
    a = ProbeAnalysis(0.0, idle_s=0.0)
    a.on_acked(1.0, 500)
    with pytest.raises(ValueError):
        a.on_acked(1.1, 400)


@pytest.mark.parametrize(("p10", "p50", "longest", "expected"), [
    # 0.7 * 2000 - 64 = 1336; 0.9 * 2200 - 64 = 1916; no outage: the 3 s floor
    (2000, 2200, 0.0, (True, 1330, 1910, "1280x720", 3000, False)),
    # the max is capped at 2500 and the start never above it
    (10_000, 10_000, 1.5, (True, 2500, 2500, "1280x720", 4000, False)),
    # 0.7 * 500 - 64 = 286 -> 280: 640x360 (floor 207); 854x480 needs 369
    (500, 900, 4.1, (True, 280, 740, "640x360", 7000, False)),
    # 0.7 * 240 - 64 = 104: 426x240 (floor 92)
    (240, 300, 0.0, (True, 100, 200, "426x240", 3000, False)),
    # 0.7 * 200 - 64 = 76 < 100: not streamable
    (200, 300, 0.0, (False, None, None, None, 3000, False)),
    # 28 s + 2 s = 30 s (the cap, still hidden); 28.5 s needs more than the cap
    (2000, 2000, 28.0, (True, 1330, 1730, "1280x720", 30_000, False)),
    (2000, 2000, 28.5, (True, 1330, 1730, "1280x720", 30_000, True)),
])
def test_recommendation_rule(p10: float, p50: float, longest: float,
                             expected: tuple[Any, ...]) -> None:
    r = recommend(p10, p50, longest)
    assert (r.streamable, r.start_kbps, r.max_kbps, r.resolution, r.buffer_ms,
            r.buffer_capped) == expected


def test_buffer_rule() -> None:
    assert [buffer_ms_for(s) for s in (0.0, 0.5, 1.0, 1.2, 4.0, 4.1, 27.9, 40.0)] == [
        3000, 3000, 3000, 4000, 6000, 7000, 30_000, 30_000]


def test_percentile_matches_linear_interpolation() -> None:
    assert percentile([], 50) is None
    assert percentile([7.0], 90) == 7.0
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10, 20, 30, 40, 50], 10) == 14.0


def test_every_recommended_size_is_a_valid_encode_resolution() -> None:
    for w, h in RESOLUTIONS:
        assert parse_resolution(f"{w}x{h}") == (w, h)


# --- wire ----------------------------------------------------------------------------------
def test_wire_round_trip() -> None:
    assert parse_client_message(encode_ping(7)) == Ping(7)
    assert parse_client_message(encode_filler(100)) == Filler(101)
    assert parse_relay_message(encode_ack(123_456)) == Ack(123_456)
    assert parse_relay_message(encode_pong(2**64 - 1)) == Pong(2**64 - 1)


@pytest.mark.parametrize(("data", "code"), [
    (b"", CloseCode.MALFORMED),
    (b"\x01", CloseCode.MALFORMED),
    (b"\x02\x00\x00", CloseCode.MALFORMED),
    (encode_ping(1) + b"x", CloseCode.MALFORMED),
    (b"\x7f" + bytes(8), CloseCode.UNKNOWN_TYPE),
    (encode_ack(5), CloseCode.UNKNOWN_TYPE),  # an ACK is the relay's, not the client's
    (b"\x01" + bytes(64 * 1024 + 1), CloseCode.TOO_LARGE),
])
def test_relay_refuses_malformed_client_messages(data: bytes, code: CloseCode) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_client_message(data)
    assert info.value.code == code and info.value.detail


def test_client_refuses_malformed_relay_messages() -> None:
    for data in (b"", b"\x81", encode_ping(1), encode_ack(1) + b"\x00"):
        with pytest.raises(ProtocolError):
            parse_relay_message(data)


# --- the relay's session -------------------------------------------------------------------
def test_relay_session_acks_at_most_every_interval_and_answers_pings() -> None:
    s = ProbeServerSession(0.0, ack_interval_s=0.1)
    filler = encode_filler(999)
    assert s.receive(filler, 0.00) == [encode_ack(1000)]
    assert s.receive(filler, 0.05) == []  # within the interval: later
    assert s.ack_due == pytest.approx(0.1)
    assert s.on_timer(0.08) == []
    assert s.on_timer(0.10) == [encode_ack(2000)]
    assert s.ack_due is None  # everything acknowledged: no timer
    assert s.receive(encode_ping(42), 0.11) == [encode_ack(2009), encode_pong(42)]
    with pytest.raises(ProtocolError):
        s.receive(b"\x09", 0.2)


# --- the client's sender -------------------------------------------------------------------
def test_sender_pings_only_while_idle_then_fills_its_window() -> None:
    snd = ProbeSender(0.0, idle_s=1.0)
    assert snd.messages_to_send(0.0) == []  # not connected
    snd.connection_made(0.0)
    first = snd.messages_to_send(0.0)
    assert [m[0] for m in first] == [0x02]  # one PING, no filler while idle
    assert snd.messages_to_send(0.05) == []
    assert [m[0] for m in snd.messages_to_send(IDLE_PING_INTERVAL_S)] == [0x02]
    (event,) = snd.on_message(encode_pong(1), 0.08)
    assert isinstance(event, RttMeasured) and not event.loaded
    assert event.rtt_s == pytest.approx(0.08)
    loaded = snd.messages_to_send(1.0)
    assert loaded[0][0] == 0x02
    fillers = [m for m in loaded if m[0] == 0x01]
    pings_bytes = 3 * 9
    assert len(fillers) == (MIN_INFLIGHT_BYTES - pings_bytes) // FILLER_MESSAGE_BYTES
    assert snd.messages_to_send(1.01) == []  # the window is full, the next ping not due
    sent = pings_bytes + len(fillers) * FILLER_MESSAGE_BYTES
    assert snd.on_message(encode_ack(sent), 1.1) == [AckedTotal(sent)]
    assert snd.on_message(encode_ack(sent), 1.15) == []  # no news, no sample
    with pytest.raises(ProtocolError):
        snd.on_message(encode_ack(sent + 1), 1.2)  # more than was sent


def test_sender_window_follows_the_acknowledged_rate() -> None:
    snd = ProbeSender(0.0, idle_s=0.0)
    snd.connection_made(0.0)
    acked = 0
    for k in range(1, 11):  # 1 MB/s acknowledged for a second
        snd.messages_to_send(k / 10)
        acked += 100_000
        snd._sent = max(snd._sent, acked)  # as if that much had been sent
        snd.on_message(encode_ack(acked), k / 10)
    assert snd.window_bytes(1.0) == pytest.approx(1_000_000, rel=0.15)
    assert snd.window_bytes(10.0) == MIN_INFLIGHT_BYTES  # nothing acknowledged lately


def test_sender_keeps_the_acked_total_across_reconnects_and_detects_a_stall() -> None:
    snd = ProbeSender(0.0, idle_s=0.0)
    snd.connection_made(0.0)
    out = snd.messages_to_send(0.0)
    n = sum(len(m) for m in out)
    snd.on_message(encode_ack(n), 0.1)
    snd.messages_to_send(0.2)
    assert not snd.stalled(STALL_TIMEOUT_S)
    assert snd.stalled(0.1 + STALL_TIMEOUT_S + 0.01)
    snd.connection_lost(11.0)
    snd.connection_made(12.0)
    assert snd.acked_total == n and snd.in_flight == 0
    out2 = snd.messages_to_send(12.0)
    n2 = sum(len(m) for m in out2)
    assert snd.on_message(encode_ack(n2), 12.1) == [AckedTotal(n + n2)]


# --- the validator -------------------------------------------------------------------------
VALID_RESULT = _hand_computed_probe()[1]


def _leaves(obj: Any, path: str = "result") -> list[tuple[str, list[Any], Any]]:
    """(dotted path, key path, value) of every scalar in a result."""
    out: list[tuple[str, list[Any], Any]] = []

    def walk(o: Any, p: str, keys: list[Any]) -> None:
        if isinstance(o, dict):
            for k, v in o.items():
                walk(v, f"{p}.{k}", [*keys, k])
        elif isinstance(o, list):
            for i, v in enumerate(o):
                walk(v, f"{p}[{i}]", [*keys, i])
        else:
            out.append((p, keys, o))

    walk(obj, path, [])
    return out


LEAVES = _leaves(VALID_RESULT)


def _bad_values(value: Any) -> list[Any]:
    if isinstance(value, bool):
        return ["yes", 1, None]
    if isinstance(value, str):
        return [12345, [value], "bad\x00text"]
    if isinstance(value, int | float):
        return ["12", True, math.nan, math.inf, -1, 1e18, [value]]
    return ["x", {}]  # None: a nullable number


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(LEAVES), st.data())
def test_one_bad_field_is_refused_and_named(leaf: tuple[str, list[Any], Any],
                                            data: st.DataObject) -> None:
    path, keys, value = leaf
    bad = data.draw(st.sampled_from(_bad_values(value)))
    if path.endswith("cause") or path.endswith("level"):
        bad = data.draw(st.sampled_from([bad, "something_else"]))
    result = copy.deepcopy(VALID_RESULT)
    target: Any = result
    for k in keys[:-1]:
        target = target[k]
    target[keys[-1]] = bad
    with pytest.raises(ProbeResultError) as info:
        validate_submission({"site": "farm", "result": result})
    assert info.value.field == path


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30)


@settings(max_examples=150, deadline=None)
@given(JSON)
def test_any_json_is_either_valid_or_refused_with_a_named_field(body: Any) -> None:
    try:
        validate_submission(body)
    except ProbeResultError as exc:
        assert exc.field and str(exc).startswith(exc.field)
    with pytest.raises(ProbeResultError):
        validate_submission({"site": "farm", "result": body})


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_site_names(site: str) -> None:
    ok = 1 <= len(site) <= 64 and site.isprintable() and bool(site.strip())
    try:
        assert check_site(site) == site and ok
    except ProbeResultError as exc:
        assert not ok and exc.field == "site"


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True), st.floats(allow_nan=True))
def test_positions(lat: float, lon: float) -> None:
    ok = math.isfinite(lat) and math.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180
    body = {"site": "farm", "latitude": lat, "longitude": lon, "result": VALID_RESULT}
    try:
        sub = validate_submission(body)
        assert ok and (sub.latitude, sub.longitude) == (lat, lon)
    except ProbeResultError as exc:
        assert not ok and exc.field in ("latitude", "longitude")


def test_submission_envelope_errors_name_the_field() -> None:
    cases = [
        ({"result": VALID_RESULT}, "site"),
        ({"site": "a", "result": VALID_RESULT, "extra": 1}, "extra"),
        ({"site": "a", "latitude": 10.0, "result": VALID_RESULT}, "longitude"),
        ({"site": "a"}, "result"),
        ({"site": "a", "result": {**VALID_RESULT, "surprise": 1}}, "result.surprise"),
        ({"site": "a", "result": {k: v for k, v in VALID_RESULT.items() if k != "verdict"}},
         "result.verdict"),
        ([], "body"),
    ]
    for body, field in cases:
        with pytest.raises(ProbeResultError) as info:
            validate_submission(body)
        assert info.value.field == field, body
    big = copy.deepcopy(VALID_RESULT)
    big["reasons"] = [{"en": "e" * 500, "vi": "v" * 500}] * 20
    big["series"]["throughput_kbps"] = [[float(i), 1_000_000.123, True] for i in range(1500)]
    assert len(json.dumps(big)) > MAX_RESULT_BYTES
    with pytest.raises(ProbeResultError) as info:
        validate_result(big)
    assert info.value.field == "result"


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["ack", "rtt", "lost", "poll"]),
                          st.floats(0.0, 3.0), st.integers(0, 10**6),
                          st.floats(0.0, 5.0), st.booleans()), max_size=60),
       st.floats(0.0, 5.0))
def test_any_sample_sequence_gives_a_valid_result(
        steps: list[tuple[str, float, int, float, bool]], idle_s: float) -> None:
    a = ProbeAnalysis(1000.0, idle_s=idle_s)
    now, total = 1000.0, 0
    for kind, dt, nbytes, rtt_s, loaded in steps:
        now += dt
        if kind == "ack":
            total += nbytes
            a.on_acked(now, total)
        elif kind == "rtt":
            a.on_rtt(now, rtt_s, loaded)
        elif kind == "lost":
            a.on_connection_lost(now)
        else:
            a.poll(now)
    r = a.finish(now + 1.0)
    assert validate_result(r) == r
    format_report("site", r)


@pytest.mark.parametrize(("args", "message"), [
    (["--relay", "ftp://relay", "--site", "a"], "--relay 'ftp://relay' must start with http"),
    (["--relay", "http://r", "--site", " "], "--site: must not be blank"),
    (["--relay", "http://r", "--site", "a\tb"], "--site: must contain printable"),
    (["--relay", "http://r", "--site", "a", "--gps", "91,10"], "latitude must be within"),
    (["--relay", "http://r", "--site", "a", "--gps", "north"], "must be LAT,LON"),
    (["--relay", "http://r", "--site", "a", "--duration", "1"], "--duration 1: must be within"),
    (["--relay", "http://r", "--site", "a", "--json", "/no/such/dir/x.json"], "does not exist"),
])
def test_probe_cli_refuses_bad_arguments(args: list[str], message: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["probe", "--token", "some-token-1234", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "some-token-1234" not in err


def test_probe_cli_needs_a_token(monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("STEADYCAST_TOKEN", raising=False)
    assert main(["probe", "--relay", "http://r", "--site", "a"]) == 2
    assert "no token: pass --token or set STEADYCAST_TOKEN" in capsys.readouterr().err
