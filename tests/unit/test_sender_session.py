"""SenderSession: the uplink client's decisions, driven with explicit clocks against a real
UplinkReceiver in memory (the relay's side of the wire), no sockets, no asyncio."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from encoder.abr import UPDATE_INTERVAL_S, AbrController, AbrLimits, Observation, create
from encoder.send_policy import LIVE_ALLOWANCE_MS, SEND_BATCH_BYTES, STATS_INTERVAL_S, LiveEdgeJump
from encoder.sender_session import BitrateChanged, DenseKeyframes, SenderEvent, SenderSession
from encoder.settings import (
    ACK_TIMEOUT_S,
    FINAL_ACK_WAIT_S,
    RECONNECT_FIRST_S,
    RECONNECT_MAX_S,
)
from encoder.spool_overflow import OverflowEnded, OverflowStarted
from monitor.dropout import DropoutCause, DropoutEnded, DropoutStarted
from uplink import (
    Codec,
    MediaReceived,
    RemoteBye,
    Spool,
    TrackConfig,
    TrackKind,
    UplinkReceiver,
    UplinkSender,
    Welcomed,
)
from uplink.wire import Bye, Media, SenderStats, decode

VIDEO_ID, AUDIO_ID = 0, 1
VIDEO = TrackConfig(VIDEO_ID, TrackKind.VIDEO, Codec.H264, 1, 30, 1280, 720, 0, 0, b"")
AUDIO = TrackConfig(AUDIO_ID, TrackKind.AUDIO, Codec.AAC, 1, 48000, 0, 0, 48000, 1, b"\x11\x88")
FPS = 30
LIMITS = AbrLimits(min_kbps=100, max_kbps=2500, start_kbps=800, audio_kbps=64)


@dataclass(frozen=True)
class Unit:
    track_id: int
    keyframe: bool
    pts: int
    dts: int
    capture_time_us: int
    payload: bytes


class ScriptedAbr(AbrController):
    """Returns the bitrates of `script` in turn (the last one from then on); records every
    call."""

    name = "scripted"

    def __init__(self, limits: AbrLimits, script: list[int]) -> None:
        super().__init__(limits)
        self.script = list(script)
        self.calls: list[tuple[float, Observation]] = []

    def update(self, obs: Observation, *, now: float) -> int:
        self.calls.append((now, obs))
        return self.script[min(len(self.calls), len(self.script)) - 1]


ACK_AT_ONCE_S = 1e-6  # the rig's relay ACKs what arrived at every new instant


class Rig:
    """A SenderSession and a relay receiver. Messages written reach the relay at once and its
    answers come straight back, except while `up` is False (an outage: writes wait, no ACK
    comes back)."""

    def __init__(self, buffer_ms: int = 5000, abr: AbrController | None = None,
                 spool: Spool | None = None) -> None:
        self.sender = UplinkSender(session_id=b"S" * 16, spool=spool)
        self.sender.add_track(VIDEO)
        self.sender.add_track(AUDIO)
        self.session = SenderSession(self.sender, abr or create("fixed", LIMITS), VIDEO_ID)
        self.receiver = UplinkReceiver(buffer_ms=buffer_ms, ack_interval_s=ACK_AT_ONCE_S)
        self.up = True
        self.held: list[bytes] = []
        self.events: list[SenderEvent] = []
        self.received: list[tuple[int, bool]] = []  # (seq, backfill) of media at the relay
        self.stats_sent: list[SenderStats] = []
        self.frame = 0

    def connect(self, now: float) -> None:
        self.session.connection_made(now)
        self.receiver.connection_made(now)
        self.pump(now)

    def unit(self, size: int = 500, keyframe: bool | None = None) -> Unit:
        n = self.frame
        self.frame += 1
        key = n % (2 * FPS) == 0 if keyframe is None else keyframe
        return Unit(VIDEO_ID, key, n, n, round(n * 1_000_000 / FPS), bytes(size))

    def push(self, now: float, *units: Unit) -> list[SenderEvent]:
        events = self.session.push(units or [self.unit()], now, now)
        self.events += events
        return events

    def write(self, now: float) -> list[bytes]:
        """The client's writer until it would wait; the caller delivers what it wrote (or
        not: lost in flight)."""
        out: list[bytes] = []
        while True:
            messages = self.session.transmit(now)
            out += messages
            stats = self.session.stats(now)
            if stats is not None:
                out.append(stats)
                msg = decode(stats)
                assert isinstance(msg, SenderStats)
                self.stats_sent.append(msg)
            if not messages or self.session.writer_idle:
                return out

    def pump(self, now: float) -> None:
        """Write, deliver, hand the answers back, until nothing more moves."""
        for _ in range(100):
            messages = self.write(now)
            answers = self.deliver(messages, now)
            if not messages and not answers:
                return
        raise AssertionError("the rig did not settle")

    def deliver(self, messages: list[bytes], now: float) -> list[bytes]:
        if not self.up:
            self.held += messages
            return []
        for data in messages:
            for ev in self.receiver.receive(data, now):
                if isinstance(ev, MediaReceived):
                    self.received.append((ev.media.seq, ev.media.backfill))
        answers = self.receiver.data_to_send(now)
        for data in answers:
            self.events += self.session.receive(data, now, now)
        return answers

    def restore(self, now: float) -> None:
        """The outage ends: what waited reaches the relay."""
        self.up = True
        held, self.held = self.held, []
        self.deliver(held, now)
        self.pump(now)

    def control(self, now: float) -> list[SenderEvent]:
        events = self.session.control(now, now)
        self.events += events
        return events

    def in_flight_bytes(self) -> int:
        return self.sender.backlog_bytes - self.sender.unsent_bytes


def media_bytes(messages: list[bytes]) -> int:
    """Payload bytes of the MEDIA among `messages`."""
    return sum(len(msg.payload) for msg in map(decode, messages) if isinstance(msg, Media))


def test_units_pushed_are_sent_within_the_in_flight_window() -> None:
    rig = Rig()
    rig.connect(0.0)
    assert rig.sender.connected
    rig.up = False  # nothing comes back: what is written stays in flight
    window = rig.session.policy.window_room(rig.session.target_kbps)
    rig.push(0.1, *[rig.unit(size=5000, keyframe=i == 0) for i in range(40)])
    written = rig.write(0.1)
    assert 0 < media_bytes(written) <= window + 5000  # one message may overrun the cap
    assert rig.in_flight_bytes() == media_bytes(written)
    assert rig.sender.unsent_bytes > 0  # the rest waits at the sender, still reorderable
    assert rig.session.writer_idle
    assert rig.session.transmit(0.1) == []


def test_one_write_is_at_most_one_batch() -> None:
    rig = Rig(abr=create("fixed", AbrLimits(100, 50_000, 50_000, 64)))  # a very wide window
    rig.connect(0.0)
    rig.up = False
    rig.push(0.1, *[rig.unit(size=20_000, keyframe=i == 0) for i in range(40)])
    assert media_bytes(rig.session.transmit(0.1)) <= SEND_BATCH_BYTES


def test_an_ack_frees_the_window_and_the_rest_is_sent() -> None:
    rig = Rig()
    rig.connect(0.0)
    rig.up = False
    rig.push(0.1, *[rig.unit(size=5000, keyframe=i == 0) for i in range(40)])
    first = rig.write(0.1)
    assert rig.session.writer_idle and rig.sender.unsent_bytes > 0
    rig.up = True
    rig.deliver(first, 0.2)  # the relay ACKs what arrived
    assert rig.sender.acked_bytes_total == media_bytes(first)
    assert not rig.session.writer_idle
    second = rig.write(0.2)
    assert media_bytes(second) > 0
    rig.deliver(second, 0.2)
    for k in range(3, 20):
        rig.pump(k / 10)
    assert rig.sender.all_acked
    assert [seq for seq, _ in rig.received] == list(range(40))


def test_an_outage_moves_the_live_edge_to_the_newest_keyframe_and_asks_for_dense_keyframes(
) -> None:
    buffer_ms = 2000
    rig = Rig(buffer_ms=buffer_ms)
    rig.connect(0.0)
    keyframes: dict[int, float] = {}  # seq -> capture time (s)

    def tick(n: int) -> float:
        """Frame n at n/FPS (a keyframe every 2 s), the control tick every 0.1 s."""
        now = n / FPS
        unit = rig.unit()
        seq = rig.sender.next_seq_to_assign
        if unit.keyframe:
            keyframes[seq] = now
        rig.push(now, unit)
        rig.pump(now)
        if n % 3 == 0:
            rig.control(now)
        return now

    for n in range(int(2.2 * FPS)):
        tick(n)
    assert rig.sender.all_acked and not rig.session.policy.dense_keyframes
    rig.up = False  # from 2.2 s the link is out
    outage_start = len(rig.events)
    for n in range(int(2.2 * FPS), int(6.0 * FPS)):
        tick(n)
    during = rig.events[outage_start:]
    started = [ev for ev in during if isinstance(ev, DropoutStarted)]
    assert len(started) == 1 and started[0].cause == DropoutCause.NO_DATA
    assert DenseKeyframes(True) in during
    jumps = [ev for ev in during if isinstance(ev, LiveEdgeJump)]
    assert jumps, "an outage longer than the relay's delay moves the live edge"
    jump = jumps[0]
    # the newest keyframe when it jumped: the one of 4 s (the one of 2 s is too old to be live)
    assert jump.seq in keyframes and keyframes[jump.seq] == pytest.approx(4.0)
    assert jump.lag_ms > buffer_ms - LIVE_ALLOWANCE_MS and jump.buffer_ms >= buffer_ms
    assert rig.session.live_jumps == len(jumps)
    assert rig.sender.live_from_seq == jumps[-1].seq

    after = len(rig.events)
    rig.restore(6.0)
    tick(int(6.0 * FPS))
    back = rig.events[after:]
    assert any(isinstance(ev, DropoutEnded) for ev in back)
    assert DenseKeyframes(False) in back
    # the live edge goes first, what it skipped follows as backfill: the archive is complete
    first_backfill = next(i for i, (_, backfill) in enumerate(rig.received) if backfill)
    assert (jumps[-1].seq, False) in rig.received[:first_backfill]
    rig.pump(6.1)
    assert sorted(seq for seq, _ in rig.received) == list(range(rig.frame))


def test_the_abr_is_asked_every_control_tick_and_its_bitrate_is_the_encoders_request() -> None:
    abr = ScriptedAbr(LIMITS, [800, 800, 800, 500, 500, 500, 1200])
    rig = Rig(abr=abr)
    rig.connect(0.0)
    changes: list[tuple[float, BitrateChanged]] = []
    for k in range(1, 11):
        now = k * UPDATE_INTERVAL_S
        rig.push(now)
        changes += [(now, ev) for ev in rig.control(now) if isinstance(ev, BitrateChanged)]
        rig.pump(now)
    assert [now for now, _ in abr.calls] == [k * UPDATE_INTERVAL_S for k in range(1, 11)]
    # each call sees the bitrate in force: the start, then what the ABR chose before
    assert [obs.target_kbps for _, obs in abr.calls] == [800] * 4 + [500] * 3 + [1200] * 3
    assert changes == [(4 * UPDATE_INTERVAL_S, BitrateChanged(800, 500)),
                       (7 * UPDATE_INTERVAL_S, BitrateChanged(500, 1200))]
    assert rig.session.target_kbps == 1200
    # the relay is told too (STATS at WELCOME, then a second later)
    assert [m.target_kbps for m in rig.stats_sent] == [800, 1200]


def test_every_control_tick_says_whether_keyframes_are_dense() -> None:
    rig = Rig()
    rig.connect(0.0)
    events = rig.control(0.1)
    assert [ev for ev in events if isinstance(ev, DenseKeyframes)] == [DenseKeyframes(False)]


def test_stats_every_stats_interval_on_a_welcomed_connection() -> None:
    rig = Rig()
    assert rig.session.stats(0.0) is None  # no connection
    rig.session.connection_made(0.0)
    rig.receiver.connection_made(0.0)
    assert rig.session.stats(0.0) is None  # not yet welcomed
    for data in rig.session.transmit(0.0):  # HELLO
        rig.receiver.receive(data, 0.0)
    step = 1 / 16  # exact in binary: the times compare exactly
    for data in rig.receiver.data_to_send(step):  # WELCOME
        rig.session.receive(data, step, step)
    times = [k * step for k in range(1, 61) if rig.session.stats(k * step) is not None]
    every = round(STATS_INTERVAL_S / step)
    assert times == [k * step for k in range(1, 61, every)]  # at once, then every interval
    # a new connection sends STATS right after its WELCOME
    rig.session.connection_lost(3.01, 3.01)
    rig.receiver.connection_lost(3.01)
    rig.connect(3.02)
    assert rig.session.stats(3.03) is None  # the pump sent it at 3.02
    assert rig.session.stats(4.03) is not None


def test_a_full_spool_drops_new_units_asks_for_keyframes_and_the_session_goes_on() -> None:
    rig = Rig(spool=Spool(memory_limit_bytes=20_000, disk_limit_bytes=0))
    rig.connect(0.0)
    rig.up = False  # an outage: nothing is acknowledged, the spool fills
    events = rig.push(0.1, *[rig.unit(size=3000, keyframe=i == 0) for i in range(6)])
    assert events == []  # 18 000 bytes held
    events = rig.push(0.2, rig.unit(size=3000, keyframe=False))
    assert events[:2] == [OverflowStarted(0.2, 18_000, 6), DenseKeyframes(True)]
    assert rig.push(0.3, *[rig.unit(size=3000, keyframe=False) for _ in range(5)]) == []
    assert rig.push(0.4, rig.unit(size=3000, keyframe=True)) == []  # still full: one episode
    assert DenseKeyframes(True) in rig.control(0.5)
    assert rig.sender.next_seq_to_assign == 6  # dropped units got no seq
    rig.restore(1.0)  # the held units reach the relay, its ACK frees the spool
    assert rig.sender.all_acked and rig.received == [(seq, False) for seq in range(6)]
    assert rig.push(1.1, rig.unit(size=3000, keyframe=False)) == []  # no keyframe: dropped
    events = rig.push(1.2, rig.unit(size=3000, keyframe=True))
    assert events == [OverflowEnded(0.2, 1.2, dropped_units=8, dropped_video_frames=8)]
    assert DenseKeyframes(False) in rig.control(1.3)
    rig.push(1.4, rig.unit(size=3000, keyframe=False))
    rig.pump(1.4)
    assert rig.sender.all_acked and [seq for seq, _ in rig.received] == list(range(8))
    assert rig.session.overflow.dropped_video_frames_total == 8


def test_no_ack_progress_for_the_ack_timeout_declares_the_connection_dead() -> None:
    rig = Rig()
    rig.connect(0.0)
    assert rig.session.ack_stalled(ACK_TIMEOUT_S + 5) is None  # nothing outstanding
    assert rig.session.ack_stalled(20.0) is None
    rig.up = False
    rig.push(20.0)
    rig.write(20.0)
    assert rig.session.ack_stalled(20.05) is None
    assert rig.session.ack_stalled(20.0 + ACK_TIMEOUT_S) is None
    reason = rig.session.ack_stalled(20.0 + ACK_TIMEOUT_S + 0.1)
    assert reason == f"no acknowledgement from the relay for {ACK_TIMEOUT_S:g} s"
    # a new connection restarts the clock
    rig.session.connection_lost(31.0, 31.0)
    rig.receiver.connection_lost(31.0)
    rig.up = True
    rig.held.clear()
    rig.connect(31.0)
    assert rig.session.ack_stalled(31.5) is None


def test_bye_only_once_everything_is_acknowledged_and_a_clean_end_is_no_outage() -> None:
    rig = Rig()
    rig.connect(0.0)
    rig.push(0.1)
    rig.pump(0.1)
    rig.control(0.1)
    rig.up = False
    rig.push(0.2)
    rig.pump(0.2)  # held up in the outage
    assert rig.session.bye() is None  # media unacknowledged
    rig.restore(0.3)
    bye = rig.session.bye()
    assert bye is not None and decode(bye) == Bye("encoder finished")
    assert rig.session.clean_end(0.4) == []
    assert not rig.sender.connected
    assert rig.session.connection_lost(0.5, 0.5) == []  # disarmed: no connection_lost dropout
    assert rig.session.control(5.0, 5.0)[-1] == DenseKeyframes(False)


def test_a_lost_connection_is_a_dropout_and_in_flight_media_is_resent() -> None:
    rig = Rig()
    rig.connect(0.0)
    rig.push(0.1)
    rig.pump(0.1)
    rig.control(0.1)
    rig.up = False
    rig.push(0.2)
    rig.write(0.2)
    events = rig.session.connection_lost(0.3, 0.3)
    assert events == [DropoutStarted(0.3, DropoutCause.CONNECTION_LOST)]
    rig.receiver.connection_lost(0.3)
    rig.up, rig.held = True, []  # what was in flight is lost with the connection
    rig.connect(1.0)
    rig.pump(1.1)
    assert any(isinstance(ev, Welcomed) and ev.resumed for ev in rig.events)
    assert any(isinstance(ev, DropoutEnded) for ev in rig.events)
    assert rig.sender.all_acked and [seq for seq, _ in rig.received] == [0, 1]


def test_the_relays_bye_ends_the_connection() -> None:
    rig = Rig()
    rig.connect(0.0)
    events = rig.session.receive(rig.receiver.bye("stream removed"), 0.1, 0.1)
    assert events == [RemoteBye("stream removed")]
    assert not rig.sender.connected and rig.session.writer_idle


def test_reconnect_waits_double_up_to_the_cap_and_honour_the_relays_ask() -> None:
    session = Rig().session
    waits = [session.reconnect_wait_s() for _ in range(6)]
    assert waits[0] == RECONNECT_FIRST_S and waits[-1] == RECONNECT_MAX_S
    assert all(b == min(2 * a, RECONNECT_MAX_S) for a, b in zip(waits, waits[1:], strict=False))
    assert session.reconnect_wait_s(retry_after_s=30.0) == 30.0
    session.reset_backoff()
    assert session.reconnect_wait_s() == RECONNECT_FIRST_S


def test_finished_once_everything_is_acked_or_the_final_wait_is_over() -> None:
    rig = Rig()
    rig.connect(0.0)
    assert rig.session.finished(1.0)  # nothing outstanding
    rig.up = False
    rig.push(2.0)
    rig.write(2.0)
    assert not rig.session.finished(2.0)
    assert not rig.session.finished(1.0 + FINAL_ACK_WAIT_S)  # the deadline: first ask + wait
    assert rig.session.finished(1.0 + FINAL_ACK_WAIT_S + 0.1)


def test_stop_closes_a_dropout_still_open() -> None:
    rig = Rig()
    rig.connect(0.0)
    rig.push(0.1)
    rig.pump(0.1)
    rig.control(0.1)
    rig.up = False
    rig.push(0.2)
    rig.write(0.2)
    rig.control(1.0)  # no ACK progress for 0.5 s
    assert rig.session.policy.dense_keyframes
    (ended,) = rig.session.stop(2.0)
    assert isinstance(ended, DropoutEnded) and ended.end == 2.0
