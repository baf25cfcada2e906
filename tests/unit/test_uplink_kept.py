"""Kept versus received (docs/uplink-protocol.md 4.5, 7.2): a relay that records acknowledges
cumulatively only what its archive holds; what arrived but is not kept yet is SACKed from
next_seq, so the sender sees it arrive (RTT, live lag, in-flight window) and still holds it.

UplinkSender and UplinkReceiver driven together in memory, as in test_uplink_protocol.py.
"""

from __future__ import annotations

from tests.unit.test_uplink_protocol import (
    AUDIO,
    SESSION,
    VIDEO,
    Link,
    hello_bytes,
    media_bytes,
    push,
)
from uplink import (
    MAX_SACK_RANGES,
    Ack,
    SessionStarted,
    UplinkReceiver,
    UplinkSender,
    Welcome,
    Welcomed,
    decode,
    encode,
)


def kept_link() -> Link:
    sender = UplinkSender(SESSION)
    sender.add_track(VIDEO)
    sender.add_track(AUDIO)
    return Link(sender, UplinkReceiver(buffer_ms=5000, kept_ack=True))


def last_ack(data: list[bytes]) -> Ack:
    acks = [m for m in map(decode, data) if isinstance(m, Ack)]
    assert acks, data
    return acks[-1]


def test_received_but_not_kept_is_sacked_from_next_seq_and_not_acked_cumulatively() -> None:
    receiver = UplinkReceiver(buffer_ms=3000, kept_ack=True)
    receiver.connection_made(0.0)
    receiver.receive(hello_bytes(), 0.0)
    receiver.receive(encode(VIDEO), 0.0)
    receiver.data_to_send(0.0)
    for seq in (0, 1, 2, 3, 7, 8):
        receiver.receive(media_bytes(seq), 0.0)
    ack = last_ack(receiver.data_to_send(0.2))
    assert ack.next_seq == 0 and ack.sack_ranges == ((0, 4), (7, 9))
    receiver.set_kept(2, SESSION)
    receiver.set_kept(1, SESSION)  # never moves back
    receiver.set_kept(4, b"X" * 16)  # another session's watermark is ignored
    ack = last_ack(receiver.data_to_send(0.4))  # no new media: the watermark alone is news
    assert ack.next_seq == 2 and ack.sack_ranges == ((2, 4), (7, 9))
    assert receiver.data_to_send(0.6) == []  # nothing new: no ACK
    receiver.set_kept(4, SESSION)
    ack = last_ack(receiver.data_to_send(0.8))
    assert ack.next_seq == 4 and ack.sack_ranges == ((7, 9),)
    assert receiver.next_seq == 4 and receiver.kept_seq == 4


def test_without_kept_ack_the_receiver_acks_on_receipt() -> None:
    receiver = UplinkReceiver(buffer_ms=3000)
    receiver.connection_made(0.0)
    receiver.receive(hello_bytes(), 0.0)
    receiver.receive(encode(VIDEO), 0.0)
    receiver.data_to_send(0.0)
    for seq in range(3):
        receiver.receive(media_bytes(seq), 0.0)
    assert last_ack(receiver.data_to_send(0.2)) == Ack(3, 3000, 0, ())


def test_ack_with_the_kept_range_stays_within_max_sack_ranges() -> None:
    receiver = UplinkReceiver(buffer_ms=3000, kept_ack=True)
    receiver.connection_made(0.0)
    receiver.receive(hello_bytes(), 0.0)
    receiver.receive(encode(VIDEO), 0.0)
    receiver.data_to_send(0.0)
    receiver.receive(media_bytes(0), 0.0)
    for i in range(MAX_SACK_RANGES):  # a gap before each: 32 received ranges above next_seq
        receiver.receive(media_bytes(2 + 2 * i), 0.0)
    ack = last_ack(receiver.data_to_send(0.2))  # the kept range would be a 33rd
    assert len(ack.sack_ranges) == MAX_SACK_RANGES
    assert ack.sack_ranges[0] == (0, 1) and ack.sack_ranges[-1] == (64, 65)
    assert decode(encode(ack)) == ack


def test_sender_holds_sacked_media_until_kept_but_sees_it_arrive() -> None:
    link = kept_link()
    link.connect(0.0)
    now = link.run(0.0, 0.2)
    push(link.sender, 20)
    now = link.run(now, now + 0.5)
    s = link.sender
    assert link.delivered() == list(range(20))
    assert s.acked_seq == 0 and not s.all_acked  # nothing kept: the sender holds all
    assert s.backlog_bytes == 0 and s.live_lag_ms == 0  # ... but knows it arrived
    assert s.srtt_s is not None and abs(s.srtt_s - 0.1) < 0.05
    assert len(s.spool) == 20
    link.receiver.set_kept(15, SESSION)
    now = link.run(now, now + 0.5)
    assert s.acked_seq == 15 and len(s.spool) == 5
    link.receiver.set_kept(20, SESSION)
    now = link.run(now, now + 0.5)
    assert s.all_acked and len(s.spool) == 0


def test_forget_unkept_makes_the_sender_resend_and_the_session_continue() -> None:
    link = kept_link()
    link.connect(0.0)
    now = link.run(0.0, 0.2)
    push(link.sender, 20)
    now = link.run(now, now + 0.5)
    link.receiver.set_kept(8, SESSION)
    now = link.run(now, now + 0.5)
    assert link.sender.acked_seq == 8
    link.receiver.forget_unkept()  # the relay dropped its copies of 8..19
    link.drop(now)
    link.relay_events.clear()
    link.sender_events.clear()
    link.connect(now)
    now = link.run(now, now + 0.5)
    assert link.relay_events[0] == SessionStarted(SESSION, resumed=False, next_seq=8,
                                                  continued=True)
    assert Welcomed(resumed=False, next_seq=8, buffer_ms=5000) in link.sender_events
    assert link.delivered() == list(range(8, 20))  # resent, once each
    link.receiver.set_kept(20, SESSION)
    link.run(now, now + 0.5)
    assert link.sender.all_acked


def test_restored_session_continues_from_the_saved_watermark_and_the_larger_acked_seq() -> None:
    link = kept_link()
    link.connect(0.0)
    now = link.run(0.0, 0.2)
    push(link.sender, 30)
    now = link.run(now, now + 0.5)
    link.receiver.set_kept(12, SESSION)
    now = link.run(now, now + 0.5)
    link.drop(now)
    # the relay restarts with the saved watermark 12 (the sender was told 12)
    link.receiver = UplinkReceiver(buffer_ms=5000, kept_ack=True)
    link.receiver.restore(SESSION, 12)
    link.relay_events.clear()
    link.connect(now)
    now = link.run(now, now + 0.5)
    assert link.relay_events[0] == SessionStarted(SESSION, resumed=False, next_seq=12,
                                                  continued=True)
    assert link.delivered() == list(range(12, 30))
    # a HELLO whose acked_seq is above the saved watermark wins (the sender holds no less)
    receiver = UplinkReceiver(buffer_ms=5000, kept_ack=True)
    receiver.restore(SESSION, 5)
    receiver.connection_made(0.0)
    [started] = receiver.receive(hello_bytes(acked_seq=9), 0.0)
    assert started == SessionStarted(SESSION, resumed=False, next_seq=9, continued=True)
    welcome = decode(receiver.data_to_send(0.0)[0])
    assert welcome == Welcome(resumed=False, next_seq=9, buffer_ms=5000)
    # another session id after a restore is a new session, not a continuation
    receiver = UplinkReceiver(buffer_ms=5000, kept_ack=True)
    receiver.restore(SESSION, 5)
    receiver.connection_made(0.0)
    [started] = receiver.receive(hello_bytes(session=b"N" * 16), 0.0)
    assert started == SessionStarted(b"N" * 16, resumed=False, next_seq=0, continued=False)
