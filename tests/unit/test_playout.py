"""PlayoutBuffer driven with scripted clocks: units in, due units out."""

from __future__ import annotations

import pytest

from relay.output.playout import (
    DISCONTINUITY_S,
    LATE_TOLERANCE_S,
    MAX_BUFFERED_S_DEFAULT,
    MAX_BUFFERED_UNITS,
    AccessUnit,
    PlayoutBuffer,
)

VIDEO = 1
AUDIO = 2
FRAME_S = 1 / 30
AUDIO_FRAME_S = 1024 / 48000
GOP_FRAMES = 30  # one keyframe a second
TICK_S = 0.005


def video(dts_s: float, keyframe: bool = False, seq: int = 0, size: int = 100) -> AccessUnit:
    return AccessUnit(
        track_id=VIDEO,
        is_video=True,
        pts_s=dts_s,
        dts_s=dts_s,
        keyframe=keyframe,
        payload=bytes(size),
        seq=seq,
    )


def audio(dts_s: float, seq: int = 0) -> AccessUnit:
    return AccessUnit(
        track_id=AUDIO,
        is_video=False,
        pts_s=dts_s,
        dts_s=dts_s,
        keyframe=True,
        payload=b"a",
        seq=seq,
    )


def video_stream(
    start_s: float, end_s: float, latency_s: float, outage: tuple[float, float] | None = None
) -> list[tuple[float, AccessUnit]]:
    """(arrival time, unit) for 30 fps video whose capture clock equals the relay clock.

    Units captured during the outage (start, end) arrive in a burst when it ends.
    """
    arrivals = []
    n = 0
    while start_s + n * FRAME_S < end_s:
        dts = start_s + n * FRAME_S
        arrival = dts + latency_s
        if outage is not None and outage[0] <= arrival < outage[1]:
            arrival = outage[1]
        arrivals.append((arrival, video(dts, keyframe=n % GOP_FRAMES == 0, seq=n)))
        n += 1
    return arrivals


def simulate(
    buffer: PlayoutBuffer, arrivals: list[tuple[float, AccessUnit]], until_s: float
) -> list[tuple[float, AccessUnit]]:
    """Push arrivals and pop every TICK_S; return (release time, unit) in release order."""
    released: list[tuple[float, AccessUnit]] = []
    pending = sorted(arrivals, key=lambda item: item[0])
    i = 0
    now = min(t for t, _ in pending)
    while now <= until_s:
        while i < len(pending) and pending[i][0] <= now:
            buffer.push(pending[i][1], now)
            i += 1
        released.extend((now, unit) for unit in buffer.pop_due(now))
        now = round(now + TICK_S, 9)
    return released


def test_units_are_released_exactly_at_anchor_plus_delay_plus_offset() -> None:
    buf = PlayoutBuffer(delay_s=5.0)
    buf.push(video(10.0, keyframe=True), now=100.0)
    buf.push(video(10.5), now=100.2)
    assert buf.anchored
    assert buf.pop_due(104.999) == []
    assert [u.dts_s for u in buf.pop_due(105.0)] == [10.0]
    assert buf.pop_due(105.499) == []
    assert [u.dts_s for u in buf.pop_due(105.5)] == [10.5]
    assert buf.units_buffered == 0


def test_steady_flow_keeps_level_near_delay() -> None:
    delay_s = 2.0
    buf = PlayoutBuffer(delay_s=delay_s)
    levels = []
    for i in range(300):
        dts = i * FRAME_S
        now = dts + 0.1 + (0.03 if i % 3 == 0 else 0.0)  # jittery arrival
        buf.push(video(dts, keyframe=i % GOP_FRAMES == 0), now)
        buf.pop_due(now)
        levels.append(buf.level_s(now))
    assert all(abs(level - delay_s) <= 0.03 + 1e-9 for level in levels[1:])
    assert buf.skipped_late_units == 0


def test_outage_shorter_than_delay_leaves_no_gap_in_output() -> None:
    buf = PlayoutBuffer(delay_s=3.0)
    arrivals = video_stream(0.0, 10.0, latency_s=0.1, outage=(4.0, 6.0))
    released = simulate(buf, arrivals, until_s=15.0)
    assert len(released) == len(arrivals)
    assert buf.skipped_late_units == 0
    times = [t for t, _ in released]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert max(gaps) <= FRAME_S + TICK_S + 1e-9
    # Every unit comes out at capture + delay (+ the anchor unit's latency).
    assert all(abs(t - (u.dts_s + 3.1)) <= TICK_S for t, u in released)


def test_outage_longer_than_delay_resumes_at_configured_delay() -> None:
    delay_s = 2.0
    latency_s = 0.1
    outage = (4.0, 9.0)
    buf = PlayoutBuffer(delay_s=delay_s)
    arrivals = video_stream(0.0, 14.0, latency_s=latency_s, outage=outage)
    released = simulate(buf, arrivals, until_s=20.0)

    # The buffer runs dry: nothing is released between the last pre-outage unit's due time
    # and the first on-time keyframe after the outage.
    times = [t for t, _ in released]
    gaps = [(b - a, a, b) for a, b in zip(times, times[1:], strict=False)]
    big_gap = max(gaps)
    assert big_gap[0] > outage[1] - outage[0] - delay_s - 0.1
    resume_index = times.index(big_gap[2])
    first_after = released[resume_index][1]
    assert first_after.keyframe

    # The late burst was skipped up to that keyframe; it was the first on-time keyframe.
    assert buf.skipped_late_units > 0
    skipped = {u.seq for _, u in arrivals} - {u.seq for _, u in released}
    assert max(skipped) == first_after.seq - 1
    earlier_keyframes = [
        u for t, u in arrivals if u.keyframe and u.seq < first_after.seq and t >= outage[1]
    ]
    assert all(
        u.dts_s + delay_s + latency_s < outage[1] - LATE_TOLERANCE_S for u in earlier_keyframes
    )

    # Output resumes at the configured delay, not later, and stays there.
    for t, u in released[resume_index:]:
        assert abs(t - (u.dts_s + delay_s + latency_s)) <= TICK_S
    assert buf.level_s(times[-1]) == 0.0


def test_audio_late_units_are_dropped_individually() -> None:
    buf = PlayoutBuffer(delay_s=1.0)
    buf.push(audio(0.0), now=0.0)  # anchor: dts 0 due at 1.0
    buf.push(audio(AUDIO_FRAME_S), now=0.02)
    late = audio(0.5)  # due at 1.5
    buf.push(late, now=1.6)
    on_time = audio(0.6)  # due at 1.6, exactly now
    buf.push(on_time, now=1.6)
    after = audio(0.7)
    buf.push(after, now=1.61)
    assert buf.skipped_late_units == 1
    released = buf.pop_due(2.0)
    assert late not in released
    assert released[-2:] == [on_time, after]


def test_unit_within_late_tolerance_is_kept() -> None:
    buf = PlayoutBuffer(delay_s=1.0)
    buf.push(video(0.0, keyframe=True), now=0.0)
    slightly_late = video(FRAME_S)
    buf.push(slightly_late, now=1.0 + FRAME_S + LATE_TOLERANCE_S * 0.9)
    assert buf.skipped_late_units == 0
    assert buf.pop_due(2.0)[-1] == slightly_late


def test_video_waits_for_keyframe_at_start() -> None:
    buf = PlayoutBuffer(delay_s=1.0)
    buf.push(video(0.0), now=0.0)
    buf.push(video(FRAME_S), now=FRAME_S)
    key = video(2 * FRAME_S, keyframe=True)
    buf.push(key, now=2 * FRAME_S)
    nxt = video(3 * FRAME_S)
    buf.push(nxt, now=3 * FRAME_S)
    assert buf.skipped_late_units == 2
    assert buf.pop_due(10.0) == [key, nxt]


def test_audio_does_not_wait_for_a_keyframe() -> None:
    buf = PlayoutBuffer(delay_s=1.0)
    buf.push(video(0.0), now=0.0)
    a = audio(0.0)
    buf.push(a, now=0.0)
    assert buf.pop_due(10.0) == [a]


def test_late_video_unit_makes_track_wait_for_an_on_time_keyframe() -> None:
    buf = PlayoutBuffer(delay_s=1.0)
    buf.push(video(0.0, keyframe=True), now=0.0)
    assert buf.pop_due(1.0) == [video(0.0, keyframe=True)]
    buf.push(video(1.0), now=2.5)  # due 2.0: late
    buf.push(video(1.1, keyframe=True), now=2.5)  # due 2.1: late keyframe, still skipped
    buf.push(video(1.6), now=2.5)  # due 2.6: on time, but no keyframe yet
    key = video(1.7, keyframe=True)  # due 2.7: on-time keyframe
    buf.push(key, now=2.5)
    nxt = video(1.8)
    buf.push(nxt, now=2.5)
    assert buf.skipped_late_units == 3
    assert buf.pop_due(5.0) == [key, nxt]


def test_out_of_order_push_is_released_in_due_order_ties_by_push_order() -> None:
    buf = PlayoutBuffer(delay_s=2.0)
    buf.push(video(0.0, keyframe=True, seq=0), now=0.0)
    buf.push(video(0.2, seq=3), now=0.1)
    buf.push(audio(0.1, seq=4), now=0.1)
    buf.push(video(0.1, seq=2), now=0.15)  # retransmission, arrives after later units
    buf.push(video(0.05, seq=1), now=0.2)
    buf.push(audio(0.2, seq=5), now=0.2)  # same due time as video seq 3, pushed later
    out = buf.pop_due(3.0)
    assert [(u.track_id, u.seq) for u in out] == [
        (VIDEO, 0),
        (VIDEO, 1),
        (AUDIO, 4),
        (VIDEO, 2),
        (VIDEO, 3),
        (AUDIO, 5),
    ]
    assert buf.skipped_late_units == 0


def test_late_retransmission_is_dropped_without_stalling_live_video() -> None:
    buf = PlayoutBuffer(delay_s=1.0)
    units = [video(i * FRAME_S, keyframe=i == 0, seq=i) for i in range(10)]
    for u in units:
        buf.push(u, now=u.dts_s)
    assert buf.pop_due(1.2) == units[:7]
    # Archive backfill or a resend of an old unit, far too late for the live edge.
    buf.push(video(2 * FRAME_S, seq=2), now=1.2)
    assert buf.skipped_late_units == 1
    live = video(10 * FRAME_S, seq=10)
    buf.push(live, now=1.2)
    assert buf.pop_due(3.0) == [*units[7:], live]


def test_units_ahead_are_accepted_up_to_max_buffered_s_after_the_live_point() -> None:
    buf = PlayoutBuffer(delay_s=1.0, max_buffered_s=10.0)
    assert buf.level_s(0.0) == 0.0
    buf.push(audio(0.0), now=0.0)
    for i in range(1, 200):
        buf.push(audio(i * 0.1), now=0.0)  # 20 s of media at once: 10 s beyond the bound
    assert buf.units_buffered == 101  # dts 0 .. 10 s: due by now + delay_s + max_buffered_s
    assert buf.dropped_overflow_units == 99
    assert buf.discontinuities == 0
    assert buf.level_s(0.0) == pytest.approx(1.0 + 10.0)
    assert buf.level_s(50.0) == 0.0
    buf.push(audio(12.0), now=2.0)  # later, in time again: accepted
    assert buf.units_buffered == 102


def test_video_too_far_ahead_is_dropped_and_the_track_waits_for_a_keyframe() -> None:
    buf = PlayoutBuffer(delay_s=1.0, max_buffered_s=10.0)
    buf.push(video(0.0, keyframe=True), now=0.0)
    buf.push(video(5.0, seq=1), now=0.0)  # due 6 s
    buf.push(video(9.0, seq=2), now=0.0)  # due 10 s: within now + 1 + 10
    buf.push(video(12.0, seq=3), now=0.0)  # due 13 s: too far ahead
    buf.push(video(12.5, seq=4), now=3.0)  # in the bound now, but not a keyframe
    buf.push(video(13.0, keyframe=True, seq=5), now=3.0)
    assert buf.dropped_overflow_units == 1 and buf.skipped_late_units == 1
    assert buf.discontinuities == 0
    assert [u.seq for u in buf.pop_due(100.0)] == [0, 1, 2, 5]


def test_a_flood_of_tiny_units_ahead_holds_at_most_max_buffered_s() -> None:
    # issue 13, fault 5: 1/30 s units pushed 20 000 a second; before, 50 000 were held and
    # an ended stream played them out for 28 minutes
    buf = PlayoutBuffer(delay_s=1.0)
    for i in range(60_000):
        buf.push(audio(i / 30), now=i / 20_000)
    assert buf.units_buffered <= (MAX_BUFFERED_S_DEFAULT + 1.0 + 3.0) * 30
    assert buf.level_s(3.0) <= MAX_BUFFERED_S_DEFAULT + 1.0


def test_reset_forgets_anchor_and_contents_and_waits_for_keyframe() -> None:
    buf = PlayoutBuffer(delay_s=1.0)
    buf.push(video(50.0, keyframe=True), now=0.0)
    buf.push(audio(50.0), now=0.0)
    buf.reset()
    assert not buf.anchored
    assert buf.units_buffered == 0
    assert buf.bytes_buffered == 0
    assert buf.level_s(0.0) == 0.0
    buf.push(video(0.0), now=10.0)  # anchors the new session, but is no keyframe
    key = video(FRAME_S, keyframe=True)
    buf.push(key, now=10.0 + FRAME_S)
    assert buf.anchored
    assert buf.skipped_late_units == 1
    assert buf.pop_due(11.0) == []
    assert buf.pop_due(11.0 + FRAME_S) == [key]


def test_backward_jump_reanchors_and_keeps_buffered_units_due_as_before() -> None:
    buf = PlayoutBuffer(delay_s=2.0)
    buf.push(video(100.0, keyframe=True, seq=0), now=0.0)
    old = video(100.5, seq=1)
    buf.push(old, now=0.5)
    new_key = video(0.0, keyframe=True, seq=2)  # encoder restarted its clock
    buf.push(new_key, now=1.0)
    nxt = video(0.1, seq=3)
    buf.push(nxt, now=1.1)
    assert buf.discontinuities == 1
    assert buf.skipped_late_units == 0
    assert [u.seq for u in buf.pop_due(2.0)] == [0]
    assert buf.pop_due(2.5) == [old]
    assert buf.pop_due(2.999) == []
    assert buf.pop_due(3.0) == [new_key]
    assert buf.pop_due(3.1) == [nxt]


def test_small_backward_step_is_not_a_discontinuity() -> None:
    buf = PlayoutBuffer(delay_s=2.0)
    buf.push(audio(10.0), now=0.0)
    buf.push(audio(10.0 - DISCONTINUITY_S + 0.5), now=0.1)
    assert buf.discontinuities == 0


def test_forward_jump_beyond_max_buffered_reanchors_and_video_waits_for_keyframe() -> None:
    buf = PlayoutBuffer(delay_s=2.0, max_buffered_s=30.0)
    buf.push(video(0.0, keyframe=True, seq=0), now=0.0)
    buf.push(audio(0.0, seq=1), now=0.0)
    jumped = audio(1000.0, seq=2)
    buf.push(jumped, now=1.0)
    assert buf.discontinuities == 1
    buf.push(video(1000.0, seq=3), now=1.0)  # video joins the new timeline without a keyframe
    key = video(1000.1, keyframe=True, seq=4)
    buf.push(key, now=1.1)
    assert buf.discontinuities == 1  # the second track joined, it did not re-anchor again
    assert buf.skipped_late_units == 1
    assert [u.seq for u in buf.pop_due(2.0)] == [0, 1]
    assert buf.pop_due(3.0) == [jumped]
    assert buf.pop_due(3.2) == [key]


def test_jump_that_matches_the_running_clock_is_not_a_new_timeline() -> None:
    # A sender whose media clock kept running through an outage longer than max_buffered_s.
    buf = PlayoutBuffer(delay_s=2.0, max_buffered_s=30.0)
    buf.push(video(0.0, keyframe=True, seq=0), now=0.1)
    key = video(200.0, keyframe=True, seq=6000)
    buf.push(key, now=200.1)
    assert buf.discontinuities == 0
    assert buf.pop_due(202.0999) == [video(0.0, keyframe=True, seq=0)]
    assert buf.pop_due(202.1) == [key]


def test_stragglers_from_the_old_timeline_are_skipped_after_reanchor() -> None:
    buf = PlayoutBuffer(delay_s=2.0)
    buf.push(video(100.0, keyframe=True), now=0.0)
    buf.push(audio(100.0), now=0.0)
    buf.push(video(0.0, keyframe=True), now=1.0)  # new timeline (no seq numbers in use)
    buf.push(audio(100.1), now=1.0)  # audio still on the old timeline: would be due in 100 s
    new_audio = audio(0.0)
    buf.push(new_audio, now=1.0)
    assert buf.discontinuities == 1
    assert buf.skipped_late_units == 1
    assert buf.level_s(1.0) == pytest.approx(2.0)


def test_units_sent_before_the_reanchoring_unit_are_skipped() -> None:
    buf = PlayoutBuffer(delay_s=2.0)
    buf.push(video(100.0, keyframe=True, seq=10), now=0.0)
    buf.push(video(0.0, keyframe=True, seq=20), now=1.0)
    assert buf.discontinuities == 1
    buf.push(video(100.2, seq=12), now=1.1)  # resend from the old timeline
    assert buf.skipped_late_units == 1
    assert buf.level_s(1.1) == pytest.approx(1.9)


def test_overflow_drops_the_oldest_units_and_bounds_bytes() -> None:
    buf = PlayoutBuffer(delay_s=5.0, max_buffered_bytes=1000)
    for i in range(15):
        buf.push(AccessUnit(AUDIO, False, i * 0.1, i * 0.1, True, bytes(100), seq=i), now=0.0)
    assert buf.bytes_buffered == 1000
    assert buf.units_buffered == 10
    assert buf.dropped_overflow_units == 5
    assert [u.seq for u in buf.pop_due(100.0)] == list(range(5, 15))


def test_overflow_default_bound_is_64_mib() -> None:
    buf = PlayoutBuffer(delay_s=5.0)
    chunk = bytes(1024 * 1024)
    for i in range(70):
        buf.push(AccessUnit(AUDIO, False, i * 0.1, i * 0.1, True, chunk, seq=i), now=0.0)
    assert buf.bytes_buffered == 64 * 1024 * 1024
    assert buf.dropped_overflow_units == 6


def test_overflow_of_video_skips_output_to_next_keyframe() -> None:
    buf = PlayoutBuffer(delay_s=5.0, max_buffered_bytes=450)
    units = [video(i * FRAME_S, keyframe=i in (0, 3), seq=i) for i in range(6)]
    for u in units:
        buf.push(u, now=0.0)
    # 6 x 100 bytes > 450: the keyframe at 0 and unit 1 are dropped; unit 2 cannot decode.
    assert buf.units_buffered == 4
    out = buf.pop_due(10.0)
    assert out == units[3:]
    assert buf.dropped_overflow_units == 3
    assert buf.bytes_buffered == 0


def test_next_due_s_reports_the_earliest_due_time() -> None:
    buf = PlayoutBuffer(delay_s=1.0)
    assert buf.next_due_s() is None
    buf.push(audio(3.0), now=0.0)
    buf.push(audio(2.9), now=0.0)
    assert buf.next_due_s() == pytest.approx(0.9)


@pytest.mark.parametrize(("delay_s", "max_buffered_s"), [(-1.0, 120.0), (1.0, 0.0)])
def test_invalid_settings_are_refused(delay_s: float, max_buffered_s: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        PlayoutBuffer(delay_s=delay_s, max_buffered_s=max_buffered_s)


def test_overflow_also_bounds_the_number_of_tiny_units() -> None:
    """Issue 13, fault 5: a million one-byte units stayed under the byte bound and held
    hundreds of MB of unit objects."""
    buf = PlayoutBuffer(delay_s=5.0)
    for i in range(MAX_BUFFERED_UNITS + 10):
        buf.push(AccessUnit(AUDIO, False, i * 0.001, i * 0.001, True, b"x", seq=i), now=0.0)
    assert buf.units_buffered == MAX_BUFFERED_UNITS
    assert buf.dropped_overflow_units == 10
