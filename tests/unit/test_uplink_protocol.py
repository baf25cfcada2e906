"""UplinkSender and UplinkReceiver driven together in memory: no sockets, explicit `now`."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from uplink import (
    ACK_EVERY_MEDIA,
    MAX_SACK_RANGES,
    MAX_SEQ_AHEAD,
    Ack,
    Acked,
    Bye,
    CloseCode,
    Codec,
    Hello,
    Media,
    MediaReceived,
    ProtocolError,
    RemoteBye,
    SenderStats,
    SessionEnded,
    SessionStarted,
    Spool,
    SpoolFull,
    StatsReceived,
    TrackConfig,
    TrackConfigured,
    TrackKind,
    UplinkReceiver,
    UplinkSender,
    Welcome,
    Welcomed,
    decode,
    encode,
)
from uplink.receiver import MAX_UNITS_ABOVE_GAP

SESSION = b"S" * 16
VIDEO = TrackConfig(0, TrackKind.VIDEO, Codec.H264, 1, 90000, 1280, 720, 0, 0, b"\x01avcC")
AUDIO = TrackConfig(1, TrackKind.AUDIO, Codec.AAC, 1, 48000, 0, 0, 48000, 2, b"\x11\x90")
EPOCH_US = 1_700_000_000_000_000


@dataclass
class Link:
    """Both ends plus the messages in flight each way, with a fixed one-way delay."""

    sender: UplinkSender
    receiver: UplinkReceiver
    delay_s: float = 0.05
    up: list[tuple[float, bytes]] = field(default_factory=list)
    down: list[tuple[float, bytes]] = field(default_factory=list)
    relay_events: list[object] = field(default_factory=list)
    sender_events: list[object] = field(default_factory=list)
    up_is_open: bool = True
    down_is_open: bool = True

    def connect(self, now: float) -> None:
        self.sender.connection_made()
        self.receiver.connection_made(now)

    def drop(self, now: float) -> None:
        """The connection dies: whatever is in flight is lost."""
        self.up.clear()
        self.down.clear()
        self.sender.connection_lost()
        self.receiver.connection_lost(now)

    def step(self, now: float, max_bytes: int | None = None) -> None:
        for data in self.sender.data_to_send(now, max_bytes):
            if self.up_is_open:
                self.up.append((now + self.delay_s, data))
        while self.up and self.up[0][0] <= now:
            self.relay_events += self.receiver.receive(self.up.pop(0)[1], now)
        for data in self.receiver.data_to_send(now):
            if self.down_is_open:
                self.down.append((now + self.delay_s, data))
        while self.down and self.down[0][0] <= now:
            self.sender_events += self.sender.receive(self.down.pop(0)[1], now)

    def run(self, start: float, end: float, dt: float = 0.01) -> float:
        now = start
        while now < end - 1e-9:
            self.step(now)
            now = round(now + dt, 6)
        self.step(now)
        return now

    def delivered(self) -> list[int]:
        return [e.media.seq for e in self.relay_events if isinstance(e, MediaReceived)]


def new_link(delay_s: float = 0.05, buffer_ms: int = 5000) -> Link:
    sender = UplinkSender(SESSION)
    sender.add_track(VIDEO)
    sender.add_track(AUDIO)
    return Link(sender, UplinkReceiver(buffer_ms=buffer_ms), delay_s=delay_s)


def push(sender: UplinkSender, n: int, size: int = 1000) -> list[int]:
    """n video frames at 30 fps of capture time, keyframe every 30."""
    seqs = []
    for _ in range(n):
        i = sender.next_seq_to_assign
        seqs.append(
            sender.push_media(
                track_id=0,
                keyframe=i % 30 == 0,
                pts=i * 3000,
                dts=i * 3000,
                capture_time_us=EPOCH_US + i * 33_333,
                payload=bytes([i % 256]) * size,
            )
        )
    return seqs


def hello_bytes(session: bytes = SESSION, acked_seq: int = 0) -> bytes:
    return encode(Hello(session, acked_seq))


def media_bytes(seq: int, track_id: int = 0, size: int = 10, backfill: bool = False) -> bytes:
    return encode(Media(seq, track_id, seq == 0, seq, seq, EPOCH_US + seq, b"m" * size, backfill))


def connected_receiver(now: float = 0.0, **kwargs: object) -> UplinkReceiver:
    receiver = UplinkReceiver(buffer_ms=3000, **kwargs)  # type: ignore[arg-type]
    receiver.connection_made(now)
    receiver.receive(hello_bytes(), now)
    receiver.receive(encode(VIDEO), now)
    receiver.data_to_send(now)  # the WELCOME
    return receiver


# ---------------------------------------------------------------------------------------------
# end to end


def test_normal_flow_delivers_every_seq_in_order_and_acks_release_memory() -> None:
    link = new_link()
    link.connect(0.0)
    now = 0.0
    for _ in range(90):  # 3 s of 30 fps video
        push(link.sender, 1)
        now = link.run(now, now + 1 / 30)
    now = link.run(now, now + 1.0)

    assert link.delivered() == list(range(90))
    assert link.receiver.duplicates == 0
    assert link.sender.all_acked
    assert link.sender.backlog_bytes == 0 and link.sender.backlog_ms == 0
    assert link.sender.acked_seq == 90
    assert link.sender.acked_bytes_total == link.sender.sent_bytes_total == 90 * 1000
    assert link.sender.retransmitted_bytes_total == 0
    assert not link.sender._entries  # memory released
    configured = [e for e in link.relay_events if isinstance(e, TrackConfigured)]
    assert [e.track for e in configured] == [VIDEO, AUDIO]
    assert link.relay_events[0] == SessionStarted(SESSION, resumed=False, next_seq=0)
    assert link.sender_events[0] == Welcomed(resumed=False, next_seq=0, buffer_ms=5000)
    assert link.sender.relay_buffer_ms == 5000
    assert link.sender.relay_arrival_kbps is not None and link.sender.relay_arrival_kbps > 0


def test_sender_queues_only_hello_until_welcome() -> None:
    sender = UplinkSender(SESSION)
    sender.add_track(VIDEO)
    push(sender, 3)
    sender.connection_made()
    out = sender.data_to_send(0.0)
    assert [type(decode(m)) for m in out] == [Hello]
    assert decode(out[0]) == Hello(SESSION, acked_seq=0)
    assert sender.data_to_send(0.1) == []
    assert not sender.connected
    sender.receive(encode(Welcome(False, 0, 2000)), 0.2)
    assert sender.connected
    kinds = [type(decode(m)).__name__ for m in sender.data_to_send(0.2)]
    assert kinds == ["TrackConfig", "Media", "Media", "Media"]


def test_rtt_sample_is_send_to_ack_time_and_srtt_smooths() -> None:
    sender = UplinkSender(SESSION)
    sender.add_track(VIDEO)
    sender.connection_made()
    sender.data_to_send(0.0)
    sender.receive(encode(Welcome(False, 0, 1000)), 0.1)
    assert sender.srtt_s is None
    push(sender, 2)
    sender.data_to_send(1.0)
    [event] = sender.receive(encode(Ack(2, 1000, 300)), 1.25)
    assert isinstance(event, Acked) and (event.next_seq, event.newly_acked_bytes) == (2, 2000)
    assert event.rtt_s == pytest.approx(0.25)
    assert sender.srtt_s == pytest.approx(0.25)
    assert sender.last_ack_time == 1.25
    push(sender, 1)
    sender.data_to_send(2.0)
    sender.receive(encode(Ack(3, 1000, 300)), 2.65)
    assert sender.srtt_s == pytest.approx(0.25 + 0.125 * (0.65 - 0.25))


def test_min_rtt_is_the_lowest_sample_of_the_last_minute() -> None:
    sender = UplinkSender(SESSION)
    sender.add_track(VIDEO)
    sender.connection_made()
    sender.data_to_send(0.0)
    sender.receive(encode(Welcome(False, 0, 1000)), 0.0)
    assert sender.min_rtt_s is None
    samples = ((1.0, 0.2), (2.0, 0.5), (30.0, 0.4), (70.0, 0.6))
    for seq, (at, rtt) in enumerate(samples, start=1):
        push(sender, 1)
        sender.data_to_send(at)
        sender.receive(encode(Ack(seq, 1000, 300)), at + rtt)
        if at == 30.0:
            assert sender.min_rtt_s == pytest.approx(0.2)  # 0.2 s is still in the window
    # at 70.6 s the 0.2 s sample (taken at 1.2 s) is older than MIN_RTT_WINDOW_S: 0.4 s leads
    assert sender.min_rtt_s == pytest.approx(0.4)


def test_karn_rule_retransmitted_media_gives_no_rtt_sample() -> None:
    sender = UplinkSender(SESSION)
    sender.add_track(VIDEO)
    sender.connection_made()
    sender.data_to_send(0.0)
    sender.receive(encode(Welcome(False, 0, 1000)), 0.0)
    push(sender, 3)
    sender.data_to_send(0.0)
    sender.connection_lost()
    assert sender.unsent_bytes == 3000
    sender.connection_made()
    sender.data_to_send(2.0)
    sender.receive(encode(Welcome(True, 0, 1000)), 2.1)
    assert len(sender.data_to_send(2.1)) == 1 + 3  # TRACK + the 3 frames again
    assert sender.retransmitted_bytes_total == 3000
    [event] = sender.receive(encode(Ack(3, 1000, 10)), 2.3)
    assert isinstance(event, Acked) and event.rtt_s is None
    assert sender.srtt_s is None


def test_reconnect_resends_unacked_and_receiver_gets_every_seq_once_in_order() -> None:
    link = new_link()
    link.connect(0.0)
    now = link.run(0.0, 0.2)
    push(link.sender, 40)
    now = link.run(now, now + 0.03)  # part delivered, part in flight, acks in flight
    assert 0 < len(link.delivered()) < 40 or link.up
    link.drop(now)
    push(link.sender, 20)  # the encoder keeps going during the outage
    assert link.sender.unsent_bytes == link.sender.backlog_bytes
    link.connect(now + 2.0)
    now = link.run(now + 2.0, now + 3.0)

    assert link.delivered() == list(range(60))
    assert link.receiver.duplicates == 0
    assert link.sender.all_acked
    started = [e for e in link.relay_events if isinstance(e, SessionStarted)]
    assert [s.resumed for s in started] == [False, True]
    configured = [e for e in link.relay_events if isinstance(e, TrackConfigured)]
    assert [c.changed for c in configured] == [True, True, False, False]


def test_reconnect_after_lost_acks_skips_what_welcome_reports() -> None:
    link = new_link()
    link.connect(0.0)
    now = link.run(0.0, 0.2)
    link.down_is_open = False  # every ACK is lost from here on
    push(link.sender, 10)
    now = link.run(now, now + 0.5)
    assert link.delivered() == list(range(10))
    assert link.sender.acked_seq == 0 and link.sender.backlog_bytes == 10_000
    link.drop(now)
    link.down_is_open = True
    link.connect(now)
    now = link.run(now, now + 0.5)
    assert link.sender_events[-1] == Welcomed(resumed=True, next_seq=10, buffer_ms=5000)
    assert link.sender.all_acked and link.sender.retransmitted_bytes_total == 0
    assert link.receiver.duplicates == 0


def test_resent_media_the_relay_already_has_is_dropped_as_duplicate_and_counted() -> None:
    receiver = connected_receiver()
    for seq in range(5):
        assert [type(e) for e in receiver.receive(media_bytes(seq), 0.0)] == [MediaReceived]
    receiver.connection_lost(1.0)
    receiver.connection_made(2.0)
    assert receiver.receive(hello_bytes(), 2.0) == [SessionStarted(SESSION, True, 5)]
    # a sender that resends from its last ack (2) rather than from WELCOME's next_seq
    events = [e for seq in range(2, 7) for e in receiver.receive(media_bytes(seq), 2.0)]
    assert [e.media.seq for e in events if isinstance(e, MediaReceived)] == [5, 6]
    assert receiver.duplicates == 3
    assert receiver.media_received == 7
    assert receiver.next_seq == 7


def test_relay_restart_fresh_receiver_is_not_resumed_and_sender_resends_what_it_holds() -> None:
    link = new_link()
    link.connect(0.0)
    now = link.run(0.0, 0.2)
    push(link.sender, 10)
    now = link.run(now, now + 0.5)
    assert link.sender.acked_seq == 10
    link.down_is_open = False
    push(link.sender, 10)
    now = link.run(now, now + 0.5)  # delivered to the old relay, acks lost
    link.drop(now)
    link.down_is_open = True

    link.receiver = UplinkReceiver(buffer_ms=5000)  # relay restarted: no memory of the session
    link.relay_events.clear()
    link.connect(now)
    now = link.run(now, now + 0.5)
    assert link.relay_events[0] == SessionStarted(SESSION, resumed=False, next_seq=10)
    assert Welcomed(resumed=False, next_seq=10, buffer_ms=5000) in link.sender_events
    assert link.delivered() == list(range(10, 20))
    assert link.sender.all_acked
    assert link.sender.retransmitted_bytes_total == 10_000


def test_welcome_lower_than_acked_is_trusted_and_sender_resends_everything_it_holds() -> None:
    sender = UplinkSender(SESSION)
    sender.add_track(VIDEO)
    push(sender, 6)
    sender.connection_made()
    sender.data_to_send(0.0)
    sender.receive(encode(Welcome(False, 0, 1000)), 0.0)
    sender.data_to_send(0.0)
    sender.receive(encode(Ack(2, 1000, 10, ((4, 6),))), 0.1)
    assert sender.acked_seq == 2 and sender.backlog_bytes == 2000
    sender.connection_lost()
    sender.connection_made()
    assert decode(sender.data_to_send(0.3)[0]) == Hello(SESSION, acked_seq=2)
    sender.receive(encode(Welcome(True, 0, 1000)), 0.4)  # lower than what we know was acked
    seqs = [m.seq for m in map(decode, sender.data_to_send(0.4)) if isinstance(m, Media)]
    assert seqs == [2, 3, 4, 5]  # SACKed 4, 5 are resent: the relay lost them
    assert sender.backlog_bytes == 4000


def handshake(link: Link, now: float) -> None:
    """Connect and exchange HELLO/WELCOME by hand, so the test acts between WELCOME and media."""
    link.connect(now)
    for data in link.sender.data_to_send(now):
        link.relay_events += link.receiver.receive(data, now)
    for data in link.receiver.data_to_send(now):
        link.sender_events += link.sender.receive(data, now)


def test_welcome_tells_the_configured_delay_and_acks_the_level_an_outage_drew_down() -> None:
    # the sender judges what can still be live by the relay's delay, not by its level now
    link = new_link(buffer_ms=5000)
    handshake(link, 0.0)
    assert link.sender.relay_delay_ms == 5000
    push(link.sender, 3)
    link.receiver.set_buffer_ms(1800)  # an outage drained the playout buffer
    link.run(0.1, 1.0)
    assert link.sender.relay_buffer_ms == 1800
    assert link.sender.relay_delay_ms == 5000
    link.drop(1.0)
    handshake(link, 1.5)  # a reconnect: WELCOME still tells the delay
    assert link.sender.relay_delay_ms == 5000


def test_backfill_jump_sends_live_edge_first_then_older_media_flagged_backfill() -> None:
    link = new_link()
    link.connect(0.0)
    now = link.run(0.0, 0.2)
    link.drop(now)
    push(link.sender, 60)  # a 2 s outage, longer than the relay wants to wait
    handshake(link, now + 2.0)
    link.sender.jump_to_live(30)  # the newest keyframe
    out = [decode(m) for m in link.sender.data_to_send(now + 2.0)]
    media = [m for m in out if isinstance(m, Media)]
    assert [m.seq for m in media] == list(range(30, 60)) + list(range(30))
    assert not any(m.backfill for m in media[:30])
    assert all(m.backfill for m in media[30:])
    for m in out:
        link.relay_events += link.receiver.receive(encode(m), now + 2.1)
    assert link.delivered() == list(range(30, 60)) + list(range(30))
    assert link.receiver.next_seq == 60 and link.receiver.duplicates == 0


def test_sack_ranges_in_ack_and_sender_skips_them_on_resend() -> None:
    link = new_link()
    link.connect(0.0)
    now = link.run(0.0, 0.2)
    link.drop(now)
    push(link.sender, 40)
    handshake(link, now)
    link.sender.jump_to_live(30)
    # only the live edge (TRACKs + 30..39) fits before the link dies
    sent = link.sender.data_to_send(now, max_bytes=2 * 100 + 10 * 1035)
    seqs = [m.seq for m in map(decode, sent) if isinstance(m, Media)]
    assert seqs == list(range(30, 40))
    for data in sent:
        link.receiver.receive(data, now + 0.05)
    [ack_bytes] = link.receiver.data_to_send(now + 0.1)
    ack = decode(ack_bytes)
    assert isinstance(ack, Ack) and ack.next_seq == 0 and ack.sack_ranges == ((30, 40),)
    [acked] = link.sender.receive(ack_bytes, now + 0.15)
    assert isinstance(acked, Acked) and acked.newly_acked_bytes == 10_000
    assert link.sender.backlog_bytes == 30_000
    assert not link.sender.all_acked and link.sender.acked_seq == 0

    link.drop(now + 0.2)
    link.relay_events.clear()
    link.connect(now + 1.0)
    now = link.run(now + 1.0, now + 2.0)
    assert link.relay_events[0] == SessionStarted(SESSION, resumed=True, next_seq=0)
    assert link.delivered() == list(range(30))
    assert link.receiver.duplicates == 0
    assert link.sender.all_acked
    assert link.sender.retransmitted_bytes_total == 0


def test_reconnect_after_lost_sack_acks_resends_and_receiver_drops_duplicates() -> None:
    link = new_link()
    link.connect(0.0)
    now = link.run(0.0, 0.2)
    link.drop(now)
    push(link.sender, 20)
    handshake(link, now)
    link.sender.jump_to_live(10)
    sent = link.sender.data_to_send(now, max_bytes=2 * 100 + 10 * 1035)  # TRACKs + 10..19
    for data in sent:
        link.receiver.receive(data, now)
    assert link.receiver.sack_ranges == ((10, 20),)
    link.drop(now + 0.5)  # the ACK carrying (10, 20) never reached the sender

    link.connect(now + 1.0)
    [hello] = link.sender.data_to_send(now + 1.0)
    link.receiver.receive(hello, now + 1.0)
    welcome, ack = link.receiver.data_to_send(now + 1.0)
    link.sender.receive(welcome, now + 1.0)
    # the sender writes before the ACK after WELCOME is read: it resends 10..19 too
    resent = link.sender.data_to_send(now + 1.0)
    link.sender.receive(ack, now + 1.0)
    events = [e for data in resent for e in link.receiver.receive(data, now + 1.1)]
    delivered = [e.media.seq for e in events if isinstance(e, MediaReceived)]
    assert delivered == list(range(10))
    assert link.receiver.duplicates == 10
    assert link.receiver.next_seq == 20


def test_receiver_acks_sack_ranges_right_after_welcome_on_resume() -> None:
    receiver = connected_receiver()
    receiver.receive(media_bytes(0), 0.0)
    receiver.receive(media_bytes(5), 0.0)
    receiver.connection_lost(0.1)
    receiver.connection_made(0.2)
    receiver.receive(hello_bytes(), 0.2)
    welcome, ack = map(decode, receiver.data_to_send(0.2))
    assert welcome == Welcome(resumed=True, next_seq=1, buffer_ms=3000)
    assert isinstance(ack, Ack) and ack.sack_ranges == ((5, 6),)


def test_track_config_change_mid_stream_reaches_relay_before_the_media_it_applies_to() -> None:
    link = new_link()
    link.connect(0.0)
    now = link.run(0.0, 0.2)
    push(link.sender, 5)
    link.sender.add_track(replace(VIDEO, width=640, height=360, extradata=b"\x01small"))
    push(link.sender, 5)
    now = link.run(now, now + 0.5)
    order = [
        ("track", e.track.width, e.changed) if isinstance(e, TrackConfigured) else e.media.seq
        for e in link.relay_events
        if isinstance(e, TrackConfigured | MediaReceived)
    ]
    assert order == [
        ("track", 1280, True),
        ("track", 0, True),
        0, 1, 2, 3, 4,
        ("track", 640, True),
        5, 6, 7, 8, 9,
    ]  # fmt: skip


def test_resend_after_reconnect_uses_the_config_that_applied_to_old_media() -> None:
    sender = UplinkSender(SESSION)
    sender.add_track(VIDEO)
    push(sender, 2)
    small = replace(VIDEO, width=640, height=360)
    sender.add_track(small)
    push(sender, 2)
    sender.connection_made()
    sender.data_to_send(0.0)
    sender.receive(encode(Welcome(False, 0, 1000)), 0.0)
    out = [decode(m) for m in sender.data_to_send(0.0)]
    labels = [m.seq if isinstance(m, Media) else getattr(m, "width", None) for m in out]
    assert labels == [1280, 0, 1, 640, 2, 3]


# ---------------------------------------------------------------------------------------------
# sender details


def test_sender_data_to_send_respects_max_bytes_but_always_allows_one_message() -> None:
    sender = UplinkSender(SESSION)
    sender.add_track(VIDEO)
    sender.connection_made()
    assert len(sender.data_to_send(0.0, max_bytes=1)) == 1  # HELLO alone
    sender.receive(encode(Welcome(False, 0, 1000)), 0.0)
    push(sender, 3, size=5000)
    out = sender.data_to_send(0.0, max_bytes=10)
    assert [type(decode(m)) for m in out] == [TrackConfig]
    out = sender.data_to_send(0.0, max_bytes=10)
    assert len(out) == 1 and len(out[0]) == 5035  # one frame bigger than the cap
    out = sender.data_to_send(0.0, max_bytes=10_100)
    assert len(out) == 2
    assert sender.data_to_send(0.0) == []
    assert sender.unsent_bytes == 0 and sender.backlog_bytes == 15_000


def test_sender_backlog_ms_spans_oldest_unacked_to_newest_pushed() -> None:
    sender = UplinkSender(SESSION)
    sender.add_track(VIDEO)
    assert sender.backlog_ms == 0
    push(sender, 31)  # 30 frame intervals of 33.333 ms
    assert sender.backlog_ms == 999
    assert sender.backlog_bytes == 31_000 and sender.unsent_bytes == 31_000
    stats = decode(sender.stats_message(target_kbps=750))
    assert stats == SenderStats(backlog_bytes=31_000, backlog_ms=999, target_kbps=750)


def test_sender_validates_its_inputs() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        UplinkSender(b"short")
    assert len(UplinkSender().session_id) == 16
    assert UplinkSender().session_id != UplinkSender().session_id
    sender = UplinkSender(SESSION)
    with pytest.raises(ValueError, match="track 0 was never added"):
        push(sender, 1)
    with pytest.raises(ValueError, match="time_base_den"):
        sender.add_track(replace(VIDEO, time_base_den=0))
    sender.add_track(VIDEO)
    with pytest.raises(ValueError, match="payload is empty"):
        sender.push_media(0, True, 0, 0, 0, b"")
    with pytest.raises(ValueError, match="MEDIA pts"):
        sender.push_media(0, True, 2**63, 0, 0, b"x")
    assert sender.next_seq_to_assign == 0
    with pytest.raises(ValueError, match="jump_to_live"):
        sender.jump_to_live(5)
    with pytest.raises(RuntimeError, match="no connection"):
        sender.receive(encode(Welcome(False, 0, 0)), 0.0)


@pytest.mark.parametrize(
    ("message", "code", "words"),
    [
        (encode(Ack(0, 0, 0)), CloseCode.PROTOCOL_ORDER, "ACK before WELCOME"),
        (encode(Hello(SESSION)), CloseCode.PROTOCOL_ORDER, "HELLO is never sent by a relay"),
        (b"\x63", CloseCode.UNKNOWN_TYPE, "type 99"),
    ],
)
def test_sender_refuses_bad_messages_before_welcome(
    message: bytes, code: CloseCode, words: str
) -> None:
    sender = UplinkSender(SESSION)
    sender.connection_made()
    with pytest.raises(ProtocolError) as info:
        sender.receive(message, 0.0)
    assert info.value.code == code and words in info.value.detail


def test_sender_refuses_acks_for_seqs_it_never_assigned_and_a_second_welcome() -> None:
    sender = UplinkSender(SESSION)
    sender.add_track(VIDEO)
    push(sender, 3)
    sender.connection_made()
    with pytest.raises(ProtocolError, match="WELCOME next_seq 4 is beyond"):
        sender.receive(encode(Welcome(True, 4, 0)), 0.0)
    sender.receive(encode(Welcome(False, 0, 0)), 0.0)
    with pytest.raises(ProtocolError) as info:
        sender.receive(encode(Ack(5, 0, 0)), 0.0)
    assert info.value.code == CloseCode.BAD_VALUE and "ACK next_seq 5" in info.value.detail
    with pytest.raises(ProtocolError, match="range 0 end 9"):
        sender.receive(encode(Ack(0, 0, 0, ((2, 9),))), 0.0)
    with pytest.raises(ProtocolError) as info:
        sender.receive(encode(Welcome(False, 0, 0)), 0.0)
    assert info.value.code == CloseCode.PROTOCOL_ORDER


def test_remote_bye_stops_sending_and_nothing_may_follow_it() -> None:
    sender = UplinkSender(SESSION)
    sender.add_track(VIDEO)
    sender.connection_made()
    sender.receive(encode(Welcome(False, 0, 0)), 0.0)
    push(sender, 2)
    assert sender.receive(encode(Bye("relay shutting down")), 0.1) == [
        RemoteBye("relay shutting down")
    ]
    assert sender.data_to_send(0.1) == [] and not sender.connected
    with pytest.raises(ProtocolError, match="ACK after BYE"):
        sender.receive(encode(Ack(0, 0, 0)), 0.2)


# ---------------------------------------------------------------------------------------------
# receiver rules


def _refused(receiver: UplinkReceiver, data: bytes, code: CloseCode, words: str) -> None:
    with pytest.raises(ProtocolError) as info:
        receiver.receive(data, 0.0)
    assert info.value.code == code, info.value.detail
    assert words in info.value.detail, info.value.detail


def test_first_message_on_a_connection_must_be_hello() -> None:
    receiver = UplinkReceiver(buffer_ms=1000)
    receiver.connection_made(0.0)
    _refused(receiver, encode(VIDEO), CloseCode.PROTOCOL_ORDER, "must be HELLO, got TRACK")
    _refused(receiver, media_bytes(0), CloseCode.PROTOCOL_ORDER, "must be HELLO, got MEDIA")
    assert receiver.data_to_send(0.0) == []


def test_second_hello_on_the_same_connection_is_out_of_order() -> None:
    receiver = connected_receiver()
    _refused(receiver, hello_bytes(), CloseCode.PROTOCOL_ORDER, "second HELLO")


def test_hello_with_unsupported_version_is_refused() -> None:
    receiver = UplinkReceiver(buffer_ms=1000)
    receiver.connection_made(0.0)
    data = bytearray(hello_bytes())
    data[1] = 2
    _refused(receiver, bytes(data), CloseCode.UNSUPPORTED_VERSION, "HELLO version 2")


def test_media_before_its_track_config_is_out_of_order() -> None:
    receiver = connected_receiver()
    _refused(
        receiver, media_bytes(0, track_id=1), CloseCode.PROTOCOL_ORDER, "track 1 before its TRACK"
    )


@pytest.mark.parametrize("msg", [Welcome(True, 0, 0), Ack(0, 0, 0)], ids=lambda m: type(m).__name__)
def test_relay_only_messages_from_a_sender_are_out_of_order(msg: Welcome | Ack) -> None:
    receiver = connected_receiver()
    _refused(receiver, encode(msg), CloseCode.PROTOCOL_ORDER, "never sent by a sender")


def test_oversized_message_is_refused_with_too_large() -> None:
    receiver = connected_receiver(max_message_bytes=1000)
    _refused(receiver, media_bytes(0, size=1000), CloseCode.TOO_LARGE, "1035 exceeds 1000")
    assert receiver.bytes_received > 1035


def test_seq_too_far_ahead_is_a_bad_value() -> None:
    receiver = connected_receiver()
    receiver.receive(media_bytes(MAX_SEQ_AHEAD), 0.0)
    _refused(receiver, media_bytes(MAX_SEQ_AHEAD + 1), CloseCode.BAD_VALUE, "more than 1048576")


def test_more_sack_ranges_than_an_ack_can_carry_is_a_bad_value() -> None:
    receiver = connected_receiver()
    for i in range(MAX_SACK_RANGES):
        receiver.receive(media_bytes(2 + 2 * i), 0.0)
    assert len(receiver.sack_ranges) == MAX_SACK_RANGES
    receiver.receive(media_bytes(3), 0.0)  # merges two ranges: fine
    receiver.receive(media_bytes(100), 0.0)  # back to 32 ranges
    _refused(receiver, media_bytes(200), CloseCode.BAD_VALUE, "SACK range 33")
    receiver.receive(media_bytes(0), 0.0)
    assert receiver.next_seq == 1


def test_out_of_order_seqs_fill_gaps_and_advance_next_seq() -> None:
    receiver = connected_receiver()
    for seq in (3, 1, 5, 4, 2):
        receiver.receive(media_bytes(seq), 0.0)
    assert receiver.next_seq == 0 and receiver.sack_ranges == ((1, 6),)
    receiver.receive(media_bytes(0), 0.0)
    assert receiver.next_seq == 6 and receiver.sack_ranges == ()
    receiver.receive(media_bytes(4, backfill=True), 0.0)
    assert receiver.duplicates == 1 and receiver.media_received == 6


def test_hello_with_another_session_id_starts_a_new_session() -> None:
    receiver = connected_receiver()
    receiver.receive(media_bytes(0), 0.0)
    receiver.receive(media_bytes(2), 0.0)
    receiver.connection_made(1.0)  # replaces the connection
    events = receiver.receive(hello_bytes(b"N" * 16, acked_seq=0), 1.0)
    assert events == [SessionStarted(b"N" * 16, resumed=False, next_seq=0)]
    assert receiver.tracks == {} and receiver.sack_ranges == () and receiver.next_seq == 0
    _refused(receiver, media_bytes(0), CloseCode.PROTOCOL_ORDER, "before its TRACK")


def test_same_session_resumes_with_tracks_and_ranges_kept() -> None:
    receiver = connected_receiver()
    receiver.receive(media_bytes(0), 0.0)
    receiver.connection_lost(1.0)
    receiver.connection_made(2.0)
    assert receiver.data_to_send(2.0) == []  # nothing before HELLO
    assert receiver.receive(hello_bytes(), 2.0) == [SessionStarted(SESSION, True, 1)]
    assert receiver.tracks == {0: VIDEO}
    assert receiver.receive(encode(VIDEO), 2.0) == [TrackConfigured(VIDEO, changed=False)]
    assert [type(e) for e in receiver.receive(media_bytes(1), 2.0)] == [MediaReceived]


def test_hello_acked_seq_above_next_seq_skips_ahead() -> None:
    receiver = connected_receiver()
    receiver.receive(media_bytes(7), 0.0)
    receiver.connection_made(1.0)
    assert receiver.receive(hello_bytes(acked_seq=7), 1.0) == [SessionStarted(SESSION, True, 8)]
    assert receiver.sack_ranges == ()


def test_bye_ends_the_session_and_nothing_may_follow_it() -> None:
    receiver = connected_receiver()
    assert receiver.receive(encode(Bye("stream over")), 0.0) == [SessionEnded("stream over")]
    _refused(receiver, media_bytes(0), CloseCode.PROTOCOL_ORDER, "MEDIA after BYE")
    assert receiver.data_to_send(1.0) == []
    receiver.connection_made(2.0)
    [started] = receiver.receive(hello_bytes(), 2.0)
    assert isinstance(started, SessionStarted) and not started.resumed


def test_stats_are_passed_up() -> None:
    receiver = connected_receiver()
    stats = SenderStats(12_000, 800, 1500)
    assert receiver.receive(encode(stats), 0.0) == [StatsReceived(stats)]


def test_ack_is_sent_every_interval_while_media_arrives_and_at_once_after_32() -> None:
    receiver = connected_receiver(now=0.0, ack_interval_s=0.1)
    assert receiver.get_timer() is None
    assert receiver.data_to_send(0.05) == []  # no media, no ack
    receiver.receive(media_bytes(0), 0.06)
    assert receiver.get_timer() == pytest.approx(0.1)
    assert receiver.data_to_send(0.09) == []
    [ack] = receiver.data_to_send(0.1)
    assert decode(ack) == Ack(1, 3000, 0, ())
    assert receiver.data_to_send(0.5) == []  # nothing arrived since
    receiver.receive(media_bytes(1), 0.51)
    assert len(receiver.data_to_send(0.51)) == 1  # first media after a quiet spell: at once
    for seq in range(2, 2 + ACK_EVERY_MEDIA - 1):
        receiver.receive(media_bytes(seq), 0.52)
    assert receiver.data_to_send(0.52) == []
    receiver.receive(media_bytes(ACK_EVERY_MEDIA + 1), 0.52)
    assert receiver.get_timer() == 0.52
    [ack] = receiver.data_to_send(0.52)
    decoded = decode(ack)
    assert isinstance(decoded, Ack) and decoded.next_seq == ACK_EVERY_MEDIA + 2


def test_set_buffer_ms_and_arrival_rate_are_reported_in_acks() -> None:
    receiver = connected_receiver(now=0.0)
    receiver.set_buffer_ms(4200)
    for i in range(10):  # 10 x 25 kB over 1 s = 2 Mbit over the 2 s window
        receiver.receive(media_bytes(i, size=25_000), 0.1 * i)
    [ack] = receiver.data_to_send(1.0)
    assert decode(ack) == Ack(10, 4200, 1000, ())
    assert receiver.arrival_kbps == 1000
    receiver.data_to_send(2.55)
    assert receiver.arrival_kbps == 400  # only the arrivals after t=0.55 remain
    with pytest.raises(ValueError):
        receiver.set_buffer_ms(-1)


def test_receiver_counters() -> None:
    receiver = connected_receiver()
    receiver.receive(media_bytes(0), 0.0)
    receiver.receive(media_bytes(0), 0.0)
    assert receiver.messages_received == 4
    assert receiver.bytes_received == 26 + (23 + 5) + 2 * 45
    assert receiver.media_received == 1 and receiver.duplicates == 1
    assert receiver.session_id == SESSION


def test_relay_bye_ends_the_connection_from_the_relay_side() -> None:
    receiver = connected_receiver()
    receiver.receive(media_bytes(0), 0.0)
    assert decode(receiver.bye("shutting down")) == Bye("shutting down")
    assert receiver.data_to_send(1.0) == []  # no ACK after our BYE
    # media the sender had in flight is still taken (for the archive)
    assert [type(e) for e in receiver.receive(media_bytes(1), 1.0)] == [MediaReceived]


def test_sender_bye_stops_sending_but_accepts_acks_in_flight() -> None:
    sender = UplinkSender(SESSION)
    sender.add_track(VIDEO)
    sender.connection_made()
    sender.receive(encode(Welcome(False, 0, 0)), 0.0)
    push(sender, 2)
    sender.data_to_send(0.0)
    assert decode(sender.bye("done " + "x" * 200)) == Bye("done " + "x" * 118)
    push(sender, 1)
    assert sender.data_to_send(0.1) == []
    sender.receive(encode(Ack(2, 0, 0)), 0.2)
    assert sender.acked_seq == 2


# ---------------------------------------------------------------------------------------------
# the sender's spool: payloads in memory, then on disk


def push_random(sender: UplinkSender, n: int, rng: random.Random,
                size: int = 1000) -> dict[int, bytes]:
    """n video frames with random payloads (keyframe every 30); returns seq -> payload."""
    out = {}
    for _ in range(n):
        i = sender.next_seq_to_assign
        payload = rng.randbytes(size)
        seq = sender.push_media(0, i % 30 == 0, i * 3000, i * 3000, EPOCH_US + i * 33_333,
                                payload)
        out[seq] = payload
    return out


def spooled_link(tmp_path: Path, memory_limit_bytes: int) -> Link:
    sender = UplinkSender(SESSION, spool=Spool(memory_limit_bytes, directory=tmp_path))
    sender.add_track(VIDEO)
    sender.add_track(AUDIO)
    return Link(sender, UplinkReceiver(buffer_ms=5000))


def delivered_payloads(link: Link) -> dict[int, bytes]:
    return {e.media.seq: e.media.payload for e in link.relay_events if isinstance(e, MediaReceived)}


def test_outage_spills_payloads_to_disk_and_reconnect_resends_them_byte_exact(
    tmp_path: Path,
) -> None:
    rng = random.Random(1)
    link = spooled_link(tmp_path, memory_limit_bytes=10_000)
    link.connect(0.0)
    sent = push_random(link.sender, 30, rng)
    now = link.run(0.0, 0.5)
    link.drop(now)
    sent |= push_random(link.sender, 300, rng)  # a 10 s outage
    spool = link.sender.spool
    assert spool.memory_bytes <= 10_000 and spool.disk_bytes == 290_000
    assert spool.memory_bytes + spool.disk_bytes == link.sender.backlog_bytes == 300_000

    link.connect(now + 10.0)
    now = link.run(now + 10.0, now + 12.0)
    assert link.delivered() == list(range(330))
    assert delivered_payloads(link) == sent
    assert link.sender.all_acked
    assert spool.memory_bytes == 0 and spool.disk_bytes == 0 and spool.disk_file_bytes == 0
    assert spool.spilled_total == 20_000 + 290_000 and len(spool) == 0  # 20 before the outage
    link.sender.close()
    assert spool.closed


def test_live_jump_after_outage_sends_spilled_backfill_byte_exact(tmp_path: Path) -> None:
    rng = random.Random(2)
    link = spooled_link(tmp_path, memory_limit_bytes=40_000)
    link.connect(0.0)
    now = link.run(0.0, 0.2)
    link.drop(now)
    sent = push_random(link.sender, 100, rng)
    keyframe = link.sender.newest_keyframe_seq(0)
    assert keyframe == 90
    handshake(link, now + 5.0)
    link.sender.jump_to_live(keyframe)
    now = link.run(now + 5.0, now + 7.0)
    assert link.delivered() == list(range(90, 100)) + list(range(90))
    assert delivered_payloads(link) == sent
    assert [e.media.backfill for e in link.relay_events if isinstance(e, MediaReceived)] == (
        [False] * 10 + [True] * 90
    )
    assert link.sender.all_acked and len(link.sender.spool) == 0
    assert link.sender.spool.disk_file_bytes == 0
    link.sender.close()


def test_sacked_payloads_stay_spooled_until_cumulative_ack_for_a_relay_that_restarts(
    tmp_path: Path,
) -> None:
    rng = random.Random(3)
    link = spooled_link(tmp_path, memory_limit_bytes=5_000)
    link.connect(0.0)
    now = link.run(0.0, 0.2)
    link.drop(now)
    sent = push_random(link.sender, 40, rng)
    handshake(link, now)
    link.sender.jump_to_live(30)
    for data in link.sender.data_to_send(now, max_bytes=2 * 100 + 10 * 1035):  # 30..39 only
        link.receiver.receive(data, now)
    [ack] = link.receiver.data_to_send(now + 0.1)
    link.sender.receive(ack, now + 0.1)
    assert link.sender.backlog_bytes == 30_000
    assert len(link.sender.spool) == 40  # SACKed payloads are kept (a relay may lose state)

    link.drop(now + 0.2)
    link.receiver = UplinkReceiver(buffer_ms=5000)  # the relay restarted: it has nothing
    link.relay_events.clear()
    link.connect(now + 1.0)
    now = link.run(now + 1.0, now + 2.0)
    assert sorted(link.delivered()) == list(range(40))
    assert delivered_payloads(link) == sent
    assert link.sender.all_acked and len(link.sender.spool) == 0


def test_unsent_ms_spans_oldest_unsent_to_newest_pushed() -> None:
    sender = UplinkSender(SESSION)
    sender.add_track(VIDEO)
    assert sender.unsent_ms == 0
    push(sender, 31)  # 30 frame intervals of 33.333 ms
    assert sender.unsent_ms == 999
    sender.connection_made()
    sender.data_to_send(0.0)
    sender.receive(encode(Welcome(False, 0, 1000)), 0.0)
    sender.data_to_send(0.0, max_bytes=100 + 10 * 1035)  # TRACK + 0..9
    assert sender.unsent_ms == (30 - 10) * 33_333 // 1000  # 10..30 wait
    sender.data_to_send(0.0)
    assert sender.unsent_ms == 0 and sender.backlog_ms == 999  # all in flight, none acked
    push(sender, 30)  # 31..60
    assert sender.unsent_ms == (60 - 31) * 33_333 // 1000
    sender.connection_lost()  # in flight is unsent again
    assert sender.unsent_ms == sender.backlog_ms == 60 * 33_333 // 1000
    sender.connection_made()
    sender.data_to_send(1.0)
    sender.receive(encode(Welcome(True, 20, 1000)), 1.0)
    assert sender.unsent_ms == 40 * 33_333 // 1000
    sender.jump_to_live(60)  # backfill 20..59 is still unsent: it counts
    sender.data_to_send(1.0, max_bytes=100 + 1035)  # TRACK + 60
    assert sender.unsent_ms == 40 * 33_333 // 1000
    sender.data_to_send(1.0)
    assert sender.unsent_ms == 0


def test_push_media_propagates_spool_full_and_queues_nothing(tmp_path: Path) -> None:
    sender = UplinkSender(SESSION, spool=Spool(2_500, disk_limit_bytes=1_000, directory=tmp_path))
    sender.add_track(VIDEO)
    push(sender, 3)  # 2 in memory, 1 on disk
    with pytest.raises(SpoolFull, match="disk limit"):
        push(sender, 1)
    assert sender.next_seq_to_assign == 3 and sender.backlog_bytes == 3_000
    assert sender.unsent_bytes == 3_000 and len(sender.spool) == 3
    sender.connection_made()
    sender.data_to_send(0.0)
    sender.receive(encode(Welcome(False, 0, 1000)), 0.0)
    assert [m.seq for m in map(decode, sender.data_to_send(0.0)) if isinstance(m, Media)] == [
        0, 1, 2,
    ]  # fmt: skip
    sender.receive(encode(Ack(3, 1000, 0)), 0.1)
    assert push(sender, 1) == [3]  # room again
    sender.close()


def test_newest_keyframe_seq_per_track() -> None:
    sender = UplinkSender(SESSION)
    sender.add_track(VIDEO)
    sender.add_track(AUDIO)
    assert sender.newest_keyframe_seq(0) is None
    push(sender, 61)  # keyframes at 0, 30, 60
    assert sender.newest_keyframe_seq(0) == 60
    assert sender.newest_keyframe_seq(1) is None
    sender.push_media(1, True, 0, 0, EPOCH_US, b"aac")
    assert sender.newest_keyframe_seq(1) == 61
    push(sender, 5)
    assert sender.newest_keyframe_seq(0) == 60


def test_live_lag_and_backfill_bytes_after_a_live_jump() -> None:
    link = new_link()
    link.connect(0.0)
    now = link.run(0.0, 0.2)
    assert link.sender.live_from_seq == 0 and link.sender.live_lag_ms == 0
    link.drop(now)
    push(link.sender, 100)  # seqs 0..99: 3.3 s of capture time
    sender = link.sender
    assert sender.live_lag_ms == sender.backlog_ms == 99 * 33_333 // 1000
    assert sender.backfill_bytes == 0
    handshake(link, now + 4.0)
    sender.jump_to_live(90)
    assert sender.live_from_seq == 90
    assert sender.live_lag_ms == 9 * 33_333 // 1000  # 90..99; the older media no longer counts
    assert sender.backfill_bytes == 90_000 and sender.backlog_bytes == 100_000
    # the live edge and the first backfill go out; the relay SACKs 90..99 and acks 0..9
    for data in sender.data_to_send(now + 4.0, max_bytes=2 * 100 + 20 * 1035):
        link.receiver.receive(data, now + 4.0)
    [ack] = link.receiver.data_to_send(now + 4.2)
    decoded = decode(ack)
    assert isinstance(decoded, Ack)
    assert (decoded.next_seq, decoded.sack_ranges) == (10, ((90, 100),))
    sender.receive(ack, now + 4.2)
    assert sender.live_lag_ms == 0  # the relay has the whole live part
    assert sender.backfill_bytes == 80_000 and sender.backlog_bytes == 80_000
    push(sender, 1)  # seq 100 is live
    assert sender.live_lag_ms == 0  # pushed at the newest capture time: no lag yet
    push(sender, 3)
    assert sender.live_lag_ms == 3 * 33_333 // 1000
    # a relay that lost its state voids the SACK: 90..99 count again
    link.drop(now + 5.0)
    link.receiver = UplinkReceiver(buffer_ms=5000)
    handshake(link, now + 6.0)
    assert sender.live_lag_ms == (103 - 90) * 33_333 // 1000
    assert sender.backfill_bytes == 80_000 and sender.backlog_bytes == 94_000
    now = link.run(now + 6.0, now + 8.0)
    assert sender.all_acked and sender.backfill_bytes == 0 and sender.live_lag_ms == 0


def test_units_held_above_a_gap_are_bounded_and_the_lowest_gap_is_given_up() -> None:
    """Issue 13, fault 5: one seq left out and a million tiny units above it made the relay
    hold every one of them (94 -> 384 MB). Past MAX_UNITS_ABOVE_GAP the gap is given up."""
    receiver = connected_receiver()
    for seq in range(2, MAX_UNITS_ABOVE_GAP + 2):  # seqs 0 and 1 left out
        receiver.receive(media_bytes(seq, size=1), 1.0)
    assert receiver.next_seq == 0 and receiver.sack_ranges == ((2, MAX_UNITS_ABOVE_GAP + 2),)
    assert receiver.seqs_given_up == 0
    receiver.receive(media_bytes(MAX_UNITS_ABOVE_GAP + 2, size=1), 1.0)  # one too many
    assert receiver.next_seq == MAX_UNITS_ABOVE_GAP + 3 and receiver.sack_ranges == ()
    assert receiver.seqs_given_up == 2
    assert receiver.receive(media_bytes(1, size=1, backfill=True), 1.0) == []  # a duplicate now
    ack = decode(receiver.data_to_send(2.0)[-1])
    assert isinstance(ack, Ack) and ack.next_seq == MAX_UNITS_ABOVE_GAP + 3


def test_filling_a_gap_frees_its_room_above_gaps() -> None:
    receiver = connected_receiver()
    for seq in range(1, MAX_UNITS_ABOVE_GAP + 1):
        receiver.receive(media_bytes(seq, size=1), 1.0)
    receiver.receive(media_bytes(0, size=1, backfill=True), 1.0)  # the gap is filled
    assert receiver.next_seq == MAX_UNITS_ABOVE_GAP + 1
    gap_at = MAX_UNITS_ABOVE_GAP + 2  # a new gap: the whole room is there again
    for seq in range(gap_at, gap_at + MAX_UNITS_ABOVE_GAP):
        receiver.receive(media_bytes(seq, size=1), 1.0)
    assert receiver.seqs_given_up == 0 and receiver.next_seq == MAX_UNITS_ABOVE_GAP + 1
