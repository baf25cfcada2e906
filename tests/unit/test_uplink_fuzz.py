"""Hypothesis: the parser and the receiver only ever raise ProtocolError, whatever arrives, and
sender + receiver deliver every seq at most once (and in the end all of them) across random
disconnects, byte caps, live-edge jumps, config changes and relay restarts."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uplink import (
    MAX_BYE_REASON_BYTES,
    MAX_SEQ,
    Ack,
    Bye,
    Codec,
    Hello,
    Media,
    MediaReceived,
    Message,
    ProtocolError,
    SenderStats,
    SessionStarted,
    TrackConfig,
    TrackKind,
    UplinkReceiver,
    UplinkSender,
    Welcome,
    decode,
    encode,
)
from uplink.wire import (
    MAX_CHANNELS,
    MAX_DIMENSION_PX,
    MAX_SACK_RANGES,
    MAX_SAMPLE_RATE_HZ,
    MAX_TIME_BASE_TERM,
    MIN_SAMPLE_RATE_HZ,
)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SESSION = b"F" * 16


def uint(bits: int) -> st.SearchStrategy[int]:
    return st.integers(0, 2**bits - 1)


int64 = st.integers(-(2**63), 2**63 - 1)

videos = st.builds(
    TrackConfig,
    track_id=st.integers(0, 7),
    kind=st.just(TrackKind.VIDEO),
    codec=st.just(Codec.H264),
    time_base_num=st.integers(1, MAX_TIME_BASE_TERM),
    time_base_den=st.integers(1, MAX_TIME_BASE_TERM),
    width=st.integers(1, MAX_DIMENSION_PX),
    height=st.integers(1, MAX_DIMENSION_PX),
    sample_rate=st.just(0),
    channels=st.just(0),
    extradata=st.binary(max_size=40),
)
audios = st.builds(
    TrackConfig,
    track_id=st.integers(0, 7),
    kind=st.just(TrackKind.AUDIO),
    codec=st.sampled_from([Codec.AAC, Codec.OPUS]),
    time_base_num=st.integers(1, MAX_TIME_BASE_TERM),
    time_base_den=st.integers(1, MAX_TIME_BASE_TERM),
    width=st.just(0),
    height=st.just(0),
    sample_rate=st.integers(MIN_SAMPLE_RATE_HZ, MAX_SAMPLE_RATE_HZ),
    channels=st.integers(1, MAX_CHANNELS),
    extradata=st.binary(max_size=40),
)
medias = st.builds(
    Media,
    seq=st.integers(0, MAX_SEQ),
    track_id=st.integers(0, 7),
    keyframe=st.booleans(),
    pts=int64,
    dts=int64,
    capture_time_us=uint(64),
    payload=st.binary(min_size=1, max_size=64),
    backfill=st.booleans(),
)


@st.composite
def acks(draw: st.DrawFn) -> Ack:
    next_seq = draw(st.integers(0, 2**40))
    ranges = []
    cursor = next_seq
    for gap, length in draw(
        st.lists(st.tuples(st.integers(1, 1000), st.integers(1, 1000)), max_size=MAX_SACK_RANGES)
    ):
        start = cursor + gap
        ranges.append((start, start + length))
        cursor = start + length
    return Ack(next_seq, draw(uint(32)), draw(uint(32)), tuple(ranges))


reasons = st.text(max_size=40).filter(lambda s: len(s.encode()) <= MAX_BYE_REASON_BYTES)
messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Hello, session_id=st.binary(min_size=16, max_size=16), acked_seq=uint(64)),
    st.builds(Welcome, resumed=st.booleans(), next_seq=uint(64), buffer_ms=uint(32)),
    videos,
    audios,
    medias,
    acks(),
    st.builds(SenderStats, backlog_bytes=uint(64), backlog_ms=uint(32), target_kbps=uint(32)),
    st.builds(Bye, reason=reasons),
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid message with a few bytes flipped, cut, inserted or appended."""
    data = bytearray(encode(draw(messages)))
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["flip", "cut", "insert", "append"]))
        if action == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[draw(st.integers(0, len(data))) :]
        elif action == "insert":
            data.insert(draw(st.integers(0, len(data))), draw(st.integers(0, 255)))
        else:
            data += draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


typed_noise = st.tuples(st.integers(0, 9), st.binary(max_size=80)).map(
    lambda t: bytes([t[0]]) + t[1]
)
garbage = st.one_of(st.binary(max_size=80), typed_noise, mutated())


@FAST
@given(messages)
def test_every_valid_message_round_trips(msg: Message) -> None:
    assert decode(encode(msg)) == msg


@FAST
@given(garbage)
def test_decode_of_any_bytes_raises_only_protocol_error_and_accepts_only_canonical(
    data: bytes,
) -> None:
    try:
        msg = decode(data)
    except ProtocolError as err:
        assert err.detail and int(err.code) >= 4400
        return
    assert encode(msg) == data  # strict: exactly one encoding is accepted per message


VIDEO = TrackConfig(0, TrackKind.VIDEO, Codec.H264, 1, 90000, 640, 360, 0, 0, b"\x01")


@FAST
@given(st.lists(st.one_of(garbage, messages.map(encode)), max_size=12))
def test_receiver_fed_anything_raises_only_protocol_error(blobs: list[bytes]) -> None:
    receiver = UplinkReceiver(buffer_ms=1000, max_message_bytes=4096)
    now = 0.0
    delivered: set[int] = set()

    def reconnect() -> None:
        receiver.connection_made(now)
        for event in receiver.receive(encode(Hello(SESSION)), now):
            if isinstance(event, SessionStarted) and not event.resumed:
                delivered.clear()  # after a BYE the same id starts a new session at seq 0
        receiver.receive(encode(VIDEO), now)

    reconnect()
    for blob in blobs:
        now += 0.05
        try:
            events = receiver.receive(blob, now)
        except ProtocolError:
            reconnect()  # the relay closes that connection; the sender comes back
            continue
        for event in events:
            if isinstance(event, SessionStarted) and not event.resumed:
                delivered.clear()
            if isinstance(event, MediaReceived) and receiver.session_id == SESSION:
                assert event.media.seq not in delivered
                delivered.add(event.media.seq)
        for data in receiver.data_to_send(now):
            decode(data)
        if receiver.session_id != SESSION:
            reconnect()
            delivered.clear()


# ---------------------------------------------------------------------------------------------
# sender + receiver under random faults

ops = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(1, 6), st.integers(1, 400)),
        st.tuples(st.just("step"), st.sampled_from([0.01, 0.04, 0.15]), st.sampled_from([0, 600])),
        st.tuples(st.just("drop"), st.just(0), st.just(0)),
        st.tuples(st.just("connect"), st.just(0), st.just(0)),
        st.tuples(st.just("jump"), st.integers(0, 100), st.just(0)),
        st.tuples(st.just("retrack"), st.integers(1, 3), st.just(0)),
        st.tuples(st.just("restart_relay"), st.just(0), st.just(0)),
    ),
    max_size=40,
)


class Sim:
    DELAY_S = 0.03

    def __init__(self) -> None:
        self.now = 0.0
        self.sender = UplinkSender(SESSION)
        self.sender.add_track(VIDEO)
        self.receiver = UplinkReceiver(buffer_ms=2000, ack_interval_s=0.05)
        self.up: list[tuple[float, bytes]] = []
        self.down: list[tuple[float, bytes]] = []
        self.connected = False
        self.delivered_here: set[int] = set()  # by the current receiver
        self.delivered_ever: set[int] = set()
        self.sizes: dict[int, int] = {}

    def push(self, count: int, size: int) -> None:
        for _ in range(count):
            i = self.sender.next_seq_to_assign
            seq = self.sender.push_media(
                0, i % 10 == 0, i, i, 1_700_000_000_000_000 + i * 33_000, b"p" * size
            )
            self.sizes[seq] = size

    def connect(self) -> None:
        if self.connected:
            self.drop()
        self.sender.connection_made()
        self.receiver.connection_made(self.now)
        self.connected = True

    def drop(self) -> None:
        self.up.clear()
        self.down.clear()
        self.sender.connection_lost()
        self.receiver.connection_lost(self.now)
        self.connected = False

    def step(self, dt: float, max_bytes: int | None) -> None:
        self.now = round(self.now + dt, 6)
        if not self.connected:
            return
        for data in self.sender.data_to_send(self.now, max_bytes):
            self.up.append((self.now + self.DELAY_S, data))
        while self.up and self.up[0][0] <= self.now:
            for event in self.receiver.receive(self.up.pop(0)[1], self.now):
                if isinstance(event, MediaReceived):
                    seq = event.media.seq
                    assert seq not in self.delivered_here, f"seq {seq} delivered twice"
                    assert event.media.payload == b"p" * self.sizes[seq]
                    self.delivered_here.add(seq)
                    self.delivered_ever.add(seq)
        for data in self.receiver.data_to_send(self.now):
            self.down.append((self.now + self.DELAY_S, data))
        while self.down and self.down[0][0] <= self.now:
            self.sender.receive(self.down.pop(0)[1], self.now)

    def check(self) -> None:
        sender, receiver = self.sender, self.receiver
        held = sender._entries
        assert set(held) == set(range(sender.acked_seq, sender.next_seq_to_assign))
        unacked = [seq for seq, entry in held.items() if not entry.sacked]
        assert sender.backlog_bytes == sum(self.sizes[seq] for seq in unacked)
        assert 0 <= sender.unsent_bytes <= sender.backlog_bytes
        assert all(seq in self.delivered_ever for seq in range(sender.acked_seq))
        for seq, entry in held.items():
            if entry.sacked:
                assert seq in self.delivered_ever
        ranges = receiver.sack_ranges
        assert len(ranges) <= MAX_SACK_RANGES
        floor = receiver.next_seq
        for start, end in ranges:
            assert floor < start < end
            floor = end


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_random_faults_deliver_every_seq_at_most_once_and_finally_all(
    steps: list[tuple[str, int | float, int]],
) -> None:
    sim = Sim()
    sim.connect()
    for name, a, b in steps:
        if name == "push":
            sim.push(int(a), b)
        elif name == "step":
            sim.step(float(a), b or None)
        elif name == "drop":
            sim.drop()
        elif name == "connect":
            sim.connect()
        elif name == "jump":
            low, high = sim.sender.acked_seq, sim.sender.next_seq_to_assign
            sim.sender.jump_to_live(low + (high - low) * int(a) // 100)
        elif name == "retrack":
            sim.sender.add_track(replace(VIDEO, width=640 * int(a)))
        elif name == "restart_relay":
            sim.drop()
            sim.receiver = UplinkReceiver(buffer_ms=2000, ack_interval_s=0.05)
            sim.delivered_here = set()
        sim.check()

    sim.connect()
    for _ in range(400):
        sim.step(0.02, None)
        if sim.sender.all_acked and not sim.up and not sim.down:
            break
    sim.check()
    assert sim.sender.all_acked
    assert sim.delivered_ever == set(range(sim.sender.next_seq_to_assign))
    assert sim.sender.backlog_bytes == 0 and sim.sender.unsent_bytes == 0
