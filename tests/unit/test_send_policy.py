"""SendPolicy: the in-flight window, the ABR's Observation, live edge first and dense
keyframes, driven on a real UplinkSender and UplinkReceiver in memory with explicit `now`."""

from __future__ import annotations

import pytest

from encoder.send_policy import (
    DELAY_EXTRA_MAX_MS,
    INFLIGHT_MIN_S,
    LIVE_ALLOWANCE_MS,
    MIN_INFLIGHT_BYTES,
    LiveEdgeJump,
    SendPolicy,
)
from monitor.dropout import DropoutStarted
from uplink import Acked, Codec, TrackConfig, TrackKind, UplinkReceiver, UplinkSender

VIDEO_ID, AUDIO_ID = 0, 1
VIDEO = TrackConfig(VIDEO_ID, TrackKind.VIDEO, Codec.H264, 1, 30, 1280, 720, 0, 0, b"")
AUDIO = TrackConfig(AUDIO_ID, TrackKind.AUDIO, Codec.AAC, 1, 48000, 0, 0, 48000, 1, b"\x11\x88")
FPS = 30


class Pair:
    """A sender with its policy and a relay receiver, messages handed over at once."""

    def __init__(self, buffer_ms: int = 5000) -> None:
        self.sender = UplinkSender(session_id=b"P" * 16)
        self.sender.add_track(VIDEO)
        self.sender.add_track(AUDIO)
        self.policy = SendPolicy(self.sender, VIDEO_ID)
        self.receiver = UplinkReceiver(buffer_ms=buffer_ms)
        self.frame = 0
        self.acked_events: list[Acked] = []

    def connect(self, now: float) -> None:
        self.sender.connection_made()
        self.receiver.connection_made(now)
        self.deliver(now)  # HELLO out, WELCOME back

    def push_frame(self, now: float, size: int = 2000, keyframe: bool = False) -> int:
        n = self.frame
        self.frame += 1
        capture_us = round(n * 1_000_000 / FPS)
        seq = self.sender.push_media(VIDEO_ID, keyframe, n, n, capture_us, bytes(size))
        self.policy.note_unit(seq, VIDEO_ID, keyframe, capture_us)
        return seq

    def send(self, now: float, max_bytes: int | None = None) -> list[bytes]:
        return self.sender.data_to_send(now, max_bytes)

    def deliver(self, now: float, messages: list[bytes] | None = None) -> None:
        """Messages (default: what the sender sends now) reach the relay; its answers come
        straight back."""
        for data in self.send(now) if messages is None else messages:
            self.receiver.receive(data, now)
        for data in self.receiver.data_to_send(now):
            for ev in self.sender.receive(data, now):
                if isinstance(ev, Acked):
                    self.acked_events.append(ev)
                    self.policy.on_ack(ev, now, now)


def test_window_is_the_floor_before_any_rate_is_known() -> None:
    p = Pair()
    p.connect(0.0)
    # no arrival rate from the relay yet: the target rate sizes the window, at least the floor
    assert p.policy.window_room(target_kbps=100) == MIN_INFLIGHT_BYTES
    assert p.policy.window_room(target_kbps=2000) == int(2000 * 1000 / 8 * INFLIGHT_MIN_S)


def test_window_room_shrinks_by_what_is_in_flight() -> None:
    p = Pair()
    p.connect(0.0)
    p.push_frame(0.01, size=5000, keyframe=True)
    p.push_frame(0.02, size=3000)
    before = p.policy.window_room(target_kbps=100)
    assert before == MIN_INFLIGHT_BYTES  # unsent media does not count against the window
    p.send(0.03)
    assert p.policy.window_room(target_kbps=100) == MIN_INFLIGHT_BYTES - 8000


def test_window_uses_the_relay_rate_and_base_rtt() -> None:
    p = Pair()
    p.connect(0.0)
    now = 0.0
    for _ in range(60):  # 2 s of 3000-byte frames acked after 0.4 s: the relay sees ~96 kbit/s
        now += 1 / FPS
        p.push_frame(now, size=3000, keyframe=p.frame == 0)
        sent = p.send(now)
        p.deliver(now + 0.4, sent)
    rate = p.sender.relay_arrival_kbps
    rtt = p.sender.min_rtt_s
    assert rate is not None and rate > 0 and rtt is not None
    in_flight = p.sender.backlog_bytes - p.sender.unsent_bytes
    window = max(MIN_INFLIGHT_BYTES, int(rate * 1000 / 8 * max(INFLIGHT_MIN_S, 2 * rtt)))
    assert p.policy.window_room(target_kbps=5000) == window - in_flight


def test_observe_hands_over_the_acks_once() -> None:
    p = Pair()
    p.connect(0.0)
    p.push_frame(0.0, keyframe=True)
    sent = p.send(0.0)
    p.deliver(0.25, sent)
    obs = p.policy.observe(target_kbps=700)
    assert obs.target_kbps == 700
    assert obs.connected
    assert obs.acked_bytes_total == 2000 == obs.sent_bytes_total
    assert len(obs.acks) == 1
    assert obs.acks[0].acked_bytes == 2000
    assert obs.acks[0].rtt_s == pytest.approx(0.25)
    assert obs.relay_buffer_ms == 5000
    assert p.policy.observe(target_kbps=700).acks == ()  # handed over already


def _stalled_pair(seconds: float, keyframe_every: int) -> tuple[Pair, float]:
    """The relay took the first second, then nothing more is delivered for `seconds`."""
    p = Pair(buffer_ms=5000)
    p.connect(0.0)
    now = 0.0
    while now < 1.0:
        now += 1 / FPS
        p.push_frame(now, keyframe=p.frame % keyframe_every == 0)
        p.deliver(now)
    end = now + seconds
    while now < end:
        now += 1 / FPS
        p.push_frame(now, keyframe=p.frame % keyframe_every == 0)
        p.send(now)  # in flight, never arrives
    return p, now


def test_no_jump_while_the_media_can_still_be_live() -> None:
    p, _ = _stalled_pair(seconds=3.0, keyframe_every=15)
    assert p.sender.live_lag_ms < 5000 - LIVE_ALLOWANCE_MS
    assert p.policy.live_edge_jump() is None
    assert p.sender.live_from_seq == 0


def test_jump_goes_to_the_oldest_keyframe_still_in_time() -> None:
    p, now = _stalled_pair(seconds=6.0, keyframe_every=15)
    lag = p.sender.live_lag_ms
    assert lag > 5000 - LIVE_ALLOWANCE_MS
    jump = p.policy.live_edge_jump()
    assert isinstance(jump, LiveEdgeJump)
    # the relay's level (5000, as WELCOME said) plus the age of its newest media
    assert jump.lag_ms == lag and 5000 <= jump.buffer_ms <= 5000 + 1000 / FPS
    assert p.sender.live_from_seq == jump.seq
    newest_us = round((p.frame - 1) * 1_000_000 / FPS)
    jump_us = round(jump.seq * 1_000_000 / FPS)  # one video unit per seq here
    in_time_us = (jump.buffer_ms - LIVE_ALLOWANCE_MS) * 1000
    assert jump.seq % 15 == 0  # a keyframe
    assert newest_us - jump_us <= in_time_us  # still in time...
    assert newest_us - (jump_us - 15 * 1_000_000 // FPS) > in_time_us  # ...the one before not
    assert p.policy.live_edge_jump() is None  # nothing newer to jump to yet


def test_no_jump_without_a_newer_keyframe() -> None:
    # only the first frame is a keyframe: nothing in time to jump to
    p, _ = _stalled_pair(seconds=6.0, keyframe_every=10**9)
    assert p.policy.live_edge_jump() is None


def test_dense_keyframes_while_acks_stop_and_not_after() -> None:
    p = Pair()
    p.connect(0.0)
    p.push_frame(0.0, keyframe=True)
    p.deliver(0.1)  # acked: the detector is armed
    assert p.policy.poll(0.2) == []
    assert not p.policy.dense_keyframes
    p.push_frame(0.3)
    p.send(0.3)  # in flight, no ACK comes
    events = p.policy.poll(0.8)
    assert [type(e) for e in events] == [DropoutStarted]
    assert p.policy.dense_keyframes
    p.push_frame(0.9)
    p.deliver(1.0)
    assert not p.policy.dense_keyframes  # the ACK ended the outage
    assert p.policy.poll(1.1) == []


def test_nothing_outstanding_is_not_an_outage() -> None:
    p = Pair()
    p.connect(0.0)
    p.push_frame(0.0, keyframe=True)
    p.deliver(0.1)
    # the encoder paused: no media, no ACK, but nothing is late either
    for k in range(2, 30):
        assert p.policy.poll(k * 0.1) == []
    assert not p.policy.dense_keyframes


def test_connection_loss_is_an_outage_until_media_is_acked() -> None:
    p = Pair()
    p.connect(0.0)
    p.push_frame(0.0, keyframe=True)
    p.deliver(0.1)
    assert [type(e) for e in p.policy.on_connection_lost(0.2)] == [DropoutStarted]
    assert p.policy.dense_keyframes
    p.connect(0.5)
    p.push_frame(0.6)
    p.deliver(0.7)
    assert not p.policy.dense_keyframes


def test_ack_without_new_bytes_is_no_sample() -> None:
    p = Pair()
    p.connect(0.0)
    assert p.policy.on_ack(Acked(next_seq=0, newly_acked_bytes=0, rtt_s=None), 0.1, 0.1) == []
    assert p.policy.observe(500).acks == ()
    ended = p.policy.on_ack(Acked(next_seq=1, newly_acked_bytes=10, rtt_s=0.05), 0.2, 0.2)
    assert ended == []  # the first media arms the detector; no dropout was open
    assert p.policy.observe(500).acks[0].sent_at == pytest.approx(0.15)


# --- the relay's delay as the media sees it ----------------------------------------------------
def _relay_with_startup(extra_ms: int, seconds: float = 2.0, ack_delay_s: float = 0.0
                        ) -> tuple[Pair, float]:
    """A relay that schedules media 5000 + ``extra_ms`` after capture (its first unit arrived
    ``extra_ms`` late), taking every frame at once; its ACKs reach the sender ``ack_delay_s``
    later (held up on the way down). Returns the pair and the time of the last frame."""
    p = Pair(buffer_ms=5000)
    p.connect(0.0)
    now = 0.0
    while now < seconds:
        p.push_frame(now, keyframe=p.frame % 15 == 0)
        newest_capture_s = (p.frame - 1) / FPS
        for data in p.send(now):
            p.receiver.receive(data, now)
        level_ms = round((newest_capture_s + (5000 + extra_ms) / 1000 - now) * 1000)
        p.receiver.set_buffer_ms(level_ms)
        for data in p.receiver.data_to_send(now):
            for ev in p.sender.receive(data, now + ack_delay_s):
                if isinstance(ev, Acked):
                    p.policy.on_ack(ev, now + ack_delay_s, now + ack_delay_s)
        now += 1 / FPS
    return p, now


def test_the_configured_delay_until_acks_say_more() -> None:
    p = Pair(buffer_ms=5000)
    assert p.policy.effective_delay_ms is None  # before WELCOME
    p.connect(0.0)
    assert p.policy.effective_delay_ms == 5000


def test_start_up_latency_adds_to_the_delay_the_sender_judges_by() -> None:
    p, _ = _relay_with_startup(extra_ms=1200)
    assert 5000 + 1200 - 1000 / FPS <= p.policy.effective_delay_ms <= 5000 + 1200


def test_acks_held_up_on_the_way_down_do_not_inflate_the_delay() -> None:
    p, _ = _relay_with_startup(extra_ms=300, ack_delay_s=2.0)
    assert p.policy.effective_delay_ms <= 5000 + 300


def test_the_measured_delay_is_bounded() -> None:
    low, _ = _relay_with_startup(extra_ms=-800)  # never below the configured delay
    assert low.policy.effective_delay_ms == 5000
    high, _ = _relay_with_startup(extra_ms=60_000)  # a bogus level: capped
    assert high.policy.effective_delay_ms == 5000 + DELAY_EXTRA_MAX_MS


def test_an_outage_shorter_than_the_real_delay_keeps_its_media() -> None:
    """Judged against the configured 5 s, 5.2 s of stall would throw media away that a
    relay running 1.2 s later still shows; against the measured delay it is kept, and a
    longer stall still jumps."""
    p, now = _relay_with_startup(extra_ms=1200)
    end = now + 5.2
    while now < end:
        p.push_frame(now, keyframe=p.frame % 15 == 0)
        p.send(now)  # in flight, never arrives
        now += 1 / FPS
    assert 5000 - LIVE_ALLOWANCE_MS < p.sender.live_lag_ms < 6200 - LIVE_ALLOWANCE_MS
    assert p.policy.live_edge_jump() is None
    end = now + 1.0
    while now < end:
        p.push_frame(now, keyframe=p.frame % 15 == 0)
        now += 1 / FPS
    jump = p.policy.live_edge_jump()
    assert jump is not None and jump.buffer_ms > 6000
