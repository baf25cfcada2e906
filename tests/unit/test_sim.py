"""The simulator: the encoder model, the platform's live-time rule, the run record and its
score, and whole simulated sessions checked against the oracle (DESIGN.md, "Measuring")."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks.results import (
    SERIES_KEYS,
    ResultsFileError,
    RunResult,
    qoe_score,
    read_results,
    write_results,
)
from benchmarks.sim import (
    SENDER_START_S,
    EncoderModel,
    SimError,
    SimUnit,
    follow_kbps,
    live_seconds,
    simulate,
)
from encoder.av_encoder import AUDIO_TRACK_ID, VIDEO_TRACK_ID
from encoder.capture import OUTAGE_KEYFRAME_S
from linklab.outages import parse_outages
from linklab.traces import MTU_BYTES, Outage, Trace, load_trace

SHARED_TRACES = Path(__file__).resolve().parents[3] / "shared" / "traces"
CONTROLLERS = ["steady", "belacoder", "obs", "gcc", "fixed"]
FPS = 30


def constant_trace(kbps: int) -> Trace:
    """A link of exactly `kbps`: one MTU opportunity every MTU*8/kbps ms."""
    every_ms = MTU_BYTES * 8 // kbps
    assert every_ms * kbps == MTU_BYTES * 8, "pick a rate that divides 12000"
    return Trace(f"const{kbps}", np.arange(every_ms, 100 * every_ms + 1, every_ms),
                 100 * every_ms)


# --- the encoder model -------------------------------------------------------------------------


def _encode(model: EncoderModel, seconds: float, start: int = 0,
            change: tuple[float, int] | None = None) -> list[tuple[float, SimUnit]]:
    units = []
    for n in range(start, start + round(seconds * FPS)):
        now = n / FPS
        if change is not None and now >= change[0]:
            model.target_kbps = change[1]
        units += [(now, u) for u in model.frame(n, now)]
    return units


def _video_kbps(units: list[tuple[float, SimUnit]], t0: float, t1: float) -> float:
    size = sum(u.size for t, u in units if u.track_id == VIDEO_TRACK_ID and t0 <= t < t1)
    return size * 8 / 1000 / (t1 - t0)


def test_encoder_model_keeps_the_target_with_keyframes_every_two_seconds() -> None:
    model = EncoderModel(FPS, start_kbps=1200, max_kbps=2500, floor_kbps=829, seed=1)
    units = [u for _, u in _encode(model, 20.0)]
    video = [u for u in units if u.track_id == VIDEO_TRACK_ID]
    assert len(video) == 20 * FPS
    assert [u.pts for u in video if u.keyframe] == list(range(0, 20 * FPS, 2 * FPS))
    rate = sum(u.size for u in video) * 8 / 1000 / 20
    assert rate == pytest.approx(1200, rel=0.05)
    keys = np.mean([u.size for u in video if u.keyframe])
    deltas = np.mean([u.size for u in video if not u.keyframe])
    assert 5 < keys / deltas < 9  # a keyframe is ~7 P-frames


def test_encoder_model_follows_a_new_bitrate_like_x264() -> None:
    # the figures tests/unit/test_av_encoder_rate.py measured on libx264: 1500 -> 400 kbit/s at
    # 3.5 s is on its way down in the first second and at the new rate in the next
    model = EncoderModel(FPS, start_kbps=1500, max_kbps=2000, floor_kbps=100, seed=2)
    units = _encode(model, 8.0, change=(3.5, 400))
    before = _video_kbps(units, 1.0, 3.5)
    assert 0.8 * 1500 < before < 1.25 * 1500
    assert 400 < _video_kbps(units, 3.5, 4.5) < 0.8 * before
    assert _video_kbps(units, 4.5, 5.5) < 1.3 * 400
    assert _video_kbps(units, 5.5, 8.0) == pytest.approx(400, rel=0.15)


def test_encoder_model_rises_slower_than_it_falls_like_x264() -> None:
    # at 640x360, 15 fps libx264 reached about a third of a 2x step up in its first second
    # (benchmarks/sim.py's docstring); the same model falls to the new rate within a second
    model = EncoderModel(FPS, start_kbps=600, max_kbps=2500, floor_kbps=100, seed=6)
    units = _encode(model, 10.0, change=(3.5, 1200))
    first = _video_kbps(units, 3.5, 4.5)
    assert 600 < first < 600 + 0.5 * 600  # less than half the step in the first second
    assert _video_kbps(units, 4.5, 5.5) > first
    assert _video_kbps(units, 6.5, 10.0) == pytest.approx(1200, rel=0.12)
    assert follow_kbps(600, 1200, FPS) - 600 < 1200 - follow_kbps(1200, 600, FPS)


def test_encoder_model_below_the_floor_sends_every_other_frame_at_the_target() -> None:
    model = EncoderModel(FPS, start_kbps=600, max_kbps=2500, floor_kbps=829, seed=3)
    units = [u for _, u in _encode(model, 20.0)]
    video = [u for u in units if u.track_id == VIDEO_TRACK_ID]
    assert all(u.pts % 2 == 0 for u in video) and len(video) == 10 * FPS
    assert model.governor.effective_fps == 15
    assert sum(u.size for u in video) * 8 / 1000 / 20 == pytest.approx(600, rel=0.07)
    # x264 counts its keyframe interval in encoded frames: 60 frames at 15 fps is 4 s
    assert [u.pts for u in video if u.keyframe][:3] == [0, 120, 240]


def test_encoder_model_forces_keyframes_during_an_outage_and_keeps_the_rate() -> None:
    model = EncoderModel(FPS, start_kbps=1000, max_kbps=2500, floor_kbps=829, seed=4)
    _encode(model, 1.0)
    model.dense_keyframes = True
    units = [u for _, u in _encode(model, 10.0, start=FPS)]
    video = [u for u in units if u.track_id == VIDEO_TRACK_ID]
    keys = [u.pts for u in video if u.keyframe]
    assert np.all(np.diff(keys) == round(OUTAGE_KEYFRAME_S * FPS))  # every OUTAGE_KEYFRAME_S
    assert sum(u.size for u in video) * 8 / 1000 / 10 == pytest.approx(1000, rel=0.07)


def test_encoder_model_audio_is_aac_frames_at_64_kbits() -> None:
    model = EncoderModel(FPS, start_kbps=800, max_kbps=2500, floor_kbps=829, seed=5)
    audio = [u for _, u in _encode(model, 10.0) if u.track_id == AUDIO_TRACK_ID]
    assert len(audio) == 10 * 48000 // 1024
    assert np.all(np.diff([u.pts for u in audio]) == 1024)
    assert sum(u.size for u in audio) * 8 / 10 == pytest.approx(64000, rel=0.01)
    assert all(u.keyframe for u in audio)


# --- the platform's live time --------------------------------------------------------------------


def test_live_time_counts_every_frame_rate_down_to_ten_fps_as_live() -> None:
    for step in (1, 2, 3):
        ticks = np.arange(0, 10 * FPS, step) / FPS
        assert live_seconds(ticks, 10.0, FPS) == pytest.approx(10.0)


def test_live_time_counts_a_held_picture_as_interruption() -> None:
    ticks = np.concatenate([np.arange(0, 150), np.arange(165, 300)]) / FPS  # 0.5 s missing
    # the picture before the gap stays 16 frames: live for one frame, frozen for the rest
    assert 10.0 - live_seconds(ticks, 10.0, FPS) == pytest.approx(15 / FPS)
    assert live_seconds(np.array([]), 10.0, FPS) == 0.0


# --- the record and its score ---------------------------------------------------------------------


def test_qoe_score_is_pensieve_linear_qoe_per_four_second_chunk() -> None:
    # two chunks: 1 Mbit/s delivered, 4 s of rebuffering, one switch of 1 Mbit/s
    score = qoe_score(1000.0, 4.0, [1000.0] * 4 + [2000.0] * 4, 8.0)
    assert score == pytest.approx(1.0 - 4.3 * 4.0 / 2 - 1.0 / 2)
    assert qoe_score(800.0, 0.0, [750.0] * 300, 300.0) == pytest.approx(0.8)


def _record(**overrides: object) -> RunResult:
    fields: dict[str, object] = dict(
        trace="t", abr="steady", mode="sim", duration_s=2.0, buffer_ms=5000,
        capacity_kbps_mean=1000.0, sent_kbps_mean=900.0, delivered_kbps_mean=890.0,
        utilization=0.89, outages=[[1.0, 0.5]], unavoidable_interruption_s=0.0,
        interruption_s=0.1, platform_sessions=1, latency_ms_p50=5100.0, latency_ms_p95=None,
        bitrate_switches=3, frames_captured=60, frames_live=58, frames_archived=60,
        score=0.5, series={k: [0.0, 1.0] for k in SERIES_KEYS}, notes="n")
    fields.update(overrides)
    return RunResult(**fields)  # type: ignore[arg-type]


def test_results_file_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    runs = [_record(), _record(abr="gcc", mode="real", latency_ms_p50=None)]
    write_results(path, runs)
    assert read_results(path) == runs
    assert isinstance(json.loads(path.read_text()), list)


def test_results_file_errors_name_the_file_the_run_and_the_field(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    data = [_record().to_dict(), _record().to_dict()]
    del data[1]["score"]
    path.write_text(json.dumps(data))
    with pytest.raises(ResultsFileError, match=r"results.json: run 1: missing field\(s\) score"):
        read_results(path)
    path.write_text(json.dumps([dict(_record().to_dict(), mode="emulated")]))
    with pytest.raises(ResultsFileError, match="run 0: mode 'emulated'"):
        read_results(path)
    path.write_text("{}")
    with pytest.raises(ResultsFileError, match="expected a JSON list"):
        read_results(path)
    path.write_text("[")
    with pytest.raises(ResultsFileError, match="not JSON"):
        read_results(path)


# --- whole sessions ---------------------------------------------------------------------------


def _sane(r: RunResult) -> None:
    """Every field of a run is within what the oracle and the bookkeeping allow."""
    n = math.ceil(r.duration_s)
    assert r.mode == "sim" and r.platform_sessions == 1
    assert set(r.series) == set(SERIES_KEYS) and all(len(v) == n for v in r.series.values())
    assert 0 < r.utilization <= 1.0  # no sender delivers more than the capacity
    assert r.delivered_kbps_mean == pytest.approx(r.utilization * r.capacity_kbps_mean, rel=1e-3)
    assert r.delivered_kbps_mean <= r.sent_kbps_mean * 1.01
    assert r.capacity_kbps_mean == pytest.approx(np.mean(r.series["capacity_kbps"]), rel=0.01)
    assert r.unavoidable_interruption_s == pytest.approx(
        sum(max(0.0, length - r.buffer_ms / 1000) for _, length in r.outages), abs=1e-3)
    assert r.unavoidable_interruption_s - 1e-6 <= r.interruption_s <= r.duration_s
    assert r.latency_ms_p50 is not None and r.latency_ms_p95 is not None
    assert r.buffer_ms <= r.latency_ms_p50 <= r.latency_ms_p95 < r.buffer_ms + 3000
    assert 0 < r.frames_live <= r.frames_archived <= r.frames_captured
    assert r.frames_captured == round(r.duration_s * FPS)
    assert r.bitrate_switches >= 0 and math.isfinite(r.score)
    assert r.score == pytest.approx(qoe_score(r.delivered_kbps_mean, r.interruption_s,
                                              r.series["target_kbps"], r.duration_s), abs=1e-3)
    assert all(x in (0.0, 1.0) for x in r.series["outage"])
    json.dumps(r.to_dict(), allow_nan=False)


def test_steady_fills_a_constant_link_without_interruption() -> None:
    r = simulate(constant_trace(1000), "steady", duration_s=60, outages=[])
    _sane(r)
    assert r.utilization > 0.85
    assert r.interruption_s == 0.0
    assert r.outages == [] and r.unavoidable_interruption_s == 0.0


@pytest.mark.parametrize("abr", CONTROLLERS)
def test_no_controller_beats_the_oracle_through_an_outage(abr: str) -> None:
    r = simulate(constant_trace(1000), abr, duration_s=80, buffer_ms=5000,
                 outages=[Outage(30.0, 10.0)])
    _sane(r)
    assert len(r.outages) == 1 and r.outages[0][1] == pytest.approx(10.0, abs=0.05)
    assert r.unavoidable_interruption_s == pytest.approx(5.0, abs=0.05)
    assert r.interruption_s >= r.unavoidable_interruption_s
    assert r.series["outage"][30:40] == [1.0] * 10 and sum(r.series["outage"]) == 10


def test_outage_interruption_stays_within_three_seconds_of_the_oracle() -> None:
    r = simulate(constant_trace(1000), "steady", duration_s=80, buffer_ms=5000,
                 outages=[Outage(30.0, 10.0)])
    assert r.unavoidable_interruption_s <= r.interruption_s <= r.unavoidable_interruption_s + 3


def test_fixed_bitrate_at_twice_the_capacity_interrupts_most_of_the_time() -> None:
    r = simulate(constant_trace(1000), "fixed", duration_s=60, outages=[], start_kbps=2000)
    _sane(r)
    assert r.unavoidable_interruption_s == 0.0
    assert r.interruption_s > 0.3 * r.duration_s
    # the link is full from the sender's start on
    assert r.sent_kbps_mean > 0.95 * r.capacity_kbps_mean * (60 - SENDER_START_S) / 60


def test_same_seed_same_result_and_another_seed_another() -> None:
    trace = constant_trace(750)
    outages = parse_outages("default", duration_s=60, seed=2)
    a = simulate(trace, "gcc", duration_s=60, outages=outages, seed=7)
    b = simulate(trace, "gcc", duration_s=60, outages=outages, seed=7)
    c = simulate(trace, "gcc", duration_s=60, outages=outages, seed=8)
    assert a == b
    assert a.series["delivered_kbps"] != c.series["delivered_kbps"]


def test_a_sender_far_above_the_link_never_makes_the_relay_close_the_connection() -> None:
    # far above the link for long, backfill never gets a turn and every live-edge jump leaves
    # one more gap at the relay; the policy stops jumping at JUMP_MAX_GAPS gaps, so the
    # relay's limit of MAX_SACK_RANGES is never reached (it used to close the connection)
    r = simulate(constant_trace(1000), "fixed", duration_s=90, outages=[], start_kbps=2000)
    _sane(r)
    reconnects = int(r.notes.split("protocol_error_reconnects=")[1].split()[0])
    assert reconnects == 0, r.notes


def test_a_start_inside_the_traces_first_gap_adds_the_gap_to_the_delay() -> None:
    # the relay anchors its output at the first unit's arrival: a sender that starts inside
    # a gap at the trace's start gets the gap as extra delay for the whole run; the default
    # start, where the real pipeline's encoder starts, is past a short first gap
    gap = [Outage(0.0, 0.9)]
    inside = simulate(constant_trace(1000), "steady", duration_s=30, outages=gap, start_s=0)
    default = simulate(constant_trace(1000), "steady", duration_s=30, outages=gap)
    assert inside.latency_ms_p50 is not None and default.latency_ms_p50 is not None
    assert inside.latency_ms_p50 > 5000 + 900
    assert 5000 <= default.latency_ms_p50 < 5000 + 500
    assert default.frames_captured == inside.frames_captured == 30 * FPS
    assert default.interruption_s == inside.interruption_s == 0.0


def test_bad_arguments_name_what_was_wrong() -> None:
    with pytest.raises(SimError, match="duration_s=0"):
        simulate(constant_trace(1000), "steady", duration_s=0)
    with pytest.raises(SimError, match="start_s=-1"):
        simulate(constant_trace(1000), "steady", duration_s=10, start_s=-1)
    with pytest.raises(SimError, match="unknown ABR controller 'nope'"):
        simulate(constant_trace(1000), "nope", duration_s=10)
    with pytest.raises(SimError, match="no delivery opportunity"):
        simulate(Trace("empty", np.zeros(0, dtype=np.int64), 1000), "steady", duration_s=10)


def test_five_minutes_on_a_shared_hsdpa_trace_with_the_default_overlay() -> None:
    path = SHARED_TRACES / "hsdpa" / "norway_bus_1"
    if not path.exists():
        pytest.skip(f"{path} is not there (the shared traces)")
    trace = load_trace(path, scale=0.5)
    outages = parse_outages("default", duration_s=300, seed=1)
    r = simulate(trace, "steady", duration_s=300, outages=outages)
    _sane(r)
    assert r.trace == "norway_bus_1 x0.5" and r.abr == "steady" and r.duration_s == 300
    assert r.utilization > 0.7
    assert r.interruption_s < 0.1 * r.duration_s
    for o in outages:  # every overlay outage of 0.5 s or more is in the record
        if o.length_s >= 0.5:
            assert any(start <= o.start_s + 0.05 and start + length >= o.end_s - 0.05
                       for start, length in r.outages)
    assert r.latency_ms_p50 is not None and r.latency_ms_p50 < 6000


def test_a_full_spool_drops_new_frames_and_the_stream_goes_on_as_the_client_does() -> None:
    """The simulated client drives the production OverflowGate: a spool too small for a 20 s
    outage drops new frames during it (not the held ones) and streams on afterwards, where
    it used to end the run with a SimError."""
    outage = Outage(20.0, 20.0)
    full = simulate(constant_trace(1000), "steady", duration_s=60, buffer_ms=5000,
                    outages=[outage])
    small = simulate(constant_trace(1000), "steady", duration_s=60, buffer_ms=5000,
                     outages=[outage], spool_limit_bytes=300_000)
    _sane(small)
    assert small.frames_captured == full.frames_captured
    assert small.frames_archived < full.frames_archived  # new frames were dropped ...
    assert small.frames_archived > 0.6 * full.frames_archived  # ... only while it was full
    assert min(small.series["delivered_kbps"][-10:]) > 0  # streaming again at the end
    assert small.interruption_s < 0.5 * small.duration_s
