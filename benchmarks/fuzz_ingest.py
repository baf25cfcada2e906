"""Fuzz the relay's ingest with mutated uplink messages (issue 13, fuzz run).

Mutations of valid HELLO, TRACK, MEDIA, STATS, BYE, ACK and WELCOME encodings (bit flips,
byte changes, truncations, insertions, changed length fields, splices of two messages, random
type bytes, random bytes) go to

(a) ``UplinkReceiver`` directly, in process: anything but ``ProtocolError`` is a crash;
(b) the real ingest path: a real relay process, WebSocket connections in parallel, each worker
    on a stream of its own (on one stream each new HELLO would replace the others, 4410),
    each connection opened with a valid HELLO and TRACKs, then mutated messages until the
    relay closes it; meanwhile a real ``steadycast encode`` publishes on another stream, and every
    frame it captured (all acknowledged at its clean end) must be in that stream's recording
    exactly once.

Bounded by ``--seconds`` per part; prints messages/s, the close codes seen and the relay's
RSS, and one JSON line. Exit status 1 on a crash or a lost frame.

    python -m benchmarks.fuzz_ingest --seconds 120
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.platform_viewer import read_frame_codes
from harness.local_services import (
    free_port,
    rss_bytes,
    start_relay,
    stop_process,
    write_relay_config,
)
from uplink import (
    Ack,
    Bye,
    Codec,
    Hello,
    Media,
    ProtocolError,
    SenderStats,
    TrackConfig,
    TrackKind,
    UplinkReceiver,
    Welcome,
    encode,
)

SESSION = b"Z" * 16
VIDEO = TrackConfig(0, TrackKind.VIDEO, Codec.H264, 1, 90000, 320, 180, 0, 0,
                    b"\x00\x00\x00\x01\x67\x42\xc0\x1e")
AUDIO = TrackConfig(1, TrackKind.AUDIO, Codec.AAC, 1, 48000, 0, 0, 48000, 2, b"\x11\x90")
MUTATIONS = ("flip", "byte", "cut", "insert", "length", "splice", "type", "random")
# offsets of length fields a mutation may rewrite: (type byte, offset, size)
LENGTH_FIELDS = ((3, 21, 2), (5, 17, 1), (7, 1, 1))
BATCH_MESSAGES = 20  # mutated messages a hostile connection sends after its HELLO and TRACKs
TOKEN_REAL = "fuzz-real-token-4411"
TOKEN_FUZZ = "fuzz-hostile-token-7722"


def valid_message(rng: random.Random) -> bytes:
    """One valid encoding of a random message of any type."""
    kind = rng.randrange(7)
    if kind == 0:
        return encode(Hello(rng.randbytes(16), rng.choice([0, rng.getrandbits(64)])))
    if kind == 1:
        return encode(rng.choice([VIDEO, AUDIO]))
    if kind == 2:
        seq = rng.choice([rng.randrange(64), rng.getrandbits(20), rng.getrandbits(64) - 1])
        seq = max(0, min(seq, 2**64 - 2))
        return encode(Media(seq, rng.randrange(2), rng.random() < 0.5, rng.getrandbits(32),
                            rng.getrandbits(32), rng.getrandbits(63),
                            rng.randbytes(rng.randint(1, 64)), rng.random() < 0.2))
    if kind == 3:
        return encode(SenderStats(rng.getrandbits(64), rng.getrandbits(32), rng.getrandbits(32)))
    if kind == 4:
        return encode(Bye("".join(rng.choice("abcé ") for _ in range(rng.randrange(20)))))
    if kind == 5:
        nxt = rng.getrandbits(32)
        return encode(Ack(nxt, rng.getrandbits(32), rng.getrandbits(32),
                          ((nxt + 2, nxt + 5),) if rng.random() < 0.5 else ()))
    return encode(Welcome(rng.random() < 0.5, rng.getrandbits(64), rng.getrandbits(32)))


def mutate(rng: random.Random, data: bytes, other: bytes) -> bytes:
    """`data` changed by one to three mutations; `other` is spliced in by "splice"."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        action = rng.choice(MUTATIONS)
        if action == "flip" and out:
            i = rng.randrange(len(out))
            out[i] ^= 1 << rng.randrange(8)
        elif action == "byte" and out:
            out[rng.randrange(len(out))] = rng.randrange(256)
        elif action == "cut" and out:
            del out[rng.randrange(len(out)):]
        elif action == "insert":
            i = rng.randrange(len(out) + 1)
            out[i:i] = rng.randbytes(rng.randint(1, 8))
        elif action == "length" and out:
            for type_byte, offset, size in LENGTH_FIELDS:
                if out[0] == type_byte and len(out) >= offset + size:
                    value = rng.choice([0, 1, 2**(8 * size) - 1, rng.getrandbits(8 * size)])
                    out[offset:offset + size] = value.to_bytes(size, "big")
        elif action == "splice":
            i = rng.randrange(len(out) + 1)
            out = out[:i] + other[rng.randrange(len(other) + 1):]
        elif action == "type" and out:
            out[0] = rng.choice([0, rng.randint(1, 7), rng.randint(8, 255)])
        elif action == "random":
            out = bytearray(rng.randbytes(rng.randint(0, 80)))
    return bytes(out)


def mutated_message(rng: random.Random) -> bytes:
    return mutate(rng, valid_message(rng), valid_message(rng))


def fuzz_receiver(messages: int, seed: int, seconds: float | None = None) -> dict[str, Any]:
    """Part (a): `messages` mutated messages (or until `seconds` pass) into one receiver that
    is reconnected (HELLO, both TRACKs) after every refusal, as the relay does. Raises
    AssertionError on anything but ProtocolError."""
    rng = random.Random(seed)
    receiver = UplinkReceiver(buffer_ms=1000)
    codes: Counter[str] = Counter()
    now = 0.0
    hello = [encode(Hello(SESSION)), encode(VIDEO), encode(AUDIO)]

    def connect() -> None:
        receiver.connection_made(now)
        for data in hello:
            receiver.receive(data, now)

    connect()
    t0 = time.monotonic()
    sent = 0
    while sent < messages and (seconds is None or time.monotonic() - t0 < seconds):
        data = mutated_message(rng)
        now += 0.001
        sent += 1
        try:
            receiver.receive(data, now)
            receiver.data_to_send(now)
            codes["accepted"] += 1
        except ProtocolError as err:
            codes[str(int(err.code))] += 1
            connect()
        except Exception as exc:  # a crash: the finding this fuzz looks for
            raise AssertionError(f"receiver raised {type(exc).__name__}: {exc} on "
                                 f"{data[:64].hex()}") from exc
        if receiver.session_id is None or receiver.next_seq > 2**63 or sent % 5000 == 0:
            connect()
    took = time.monotonic() - t0
    return {"messages": sent, "seconds": round(took, 1),
            "messages_per_s": round(sent / took) if took > 0 else 0, "codes": dict(codes)}


async def _hostile(base_url: str, seconds: float, parallel: int, seed: int) -> dict[str, Any]:
    codes: Counter[str] = Counter()
    totals = {"connections": 0, "messages": 0}
    deadline = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {TOKEN_FUZZ}"}

    async def worker(k: int, http: aiohttp.ClientSession) -> None:
        rng = random.Random(seed * 1000 + k)
        url = f"{base_url}/fuzz{k}"
        while time.monotonic() < deadline:
            try:
                async with http.ws_connect(url, headers=headers, max_msg_size=0) as ws:
                    totals["connections"] += 1
                    await ws.send_bytes(encode(Hello(rng.randbytes(16))))
                    await ws.send_bytes(encode(VIDEO))
                    await ws.send_bytes(encode(AUDIO))
                    for _ in range(BATCH_MESSAGES):
                        if ws.closed:
                            break
                        await ws.send_bytes(mutated_message(rng))
                        totals["messages"] += 1
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(2):
                            async for _ in ws:
                                pass
                    if not ws.closed:
                        await ws.close()
                    codes[str(ws.close_code)] += 1
            except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
                codes[type(exc).__name__] += 1

    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(worker(k, http) for k in range(parallel)))
    return {**totals, "close_codes": dict(codes)}


def fuzz_relay(seconds: float, parallel: int, seed: int) -> dict[str, Any]:
    """Part (b): the real relay under `parallel` hostile connections beside a real stream."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        cfg = d / "relay.toml"
        write_relay_config(
            cfg, port, d / "rec", d / "events.jsonl",
            f'[streams.real]\ntoken = "{TOKEN_REAL}"\nbuffer_ms = 1000\n'
            + "".join(f'[streams.fuzz{k}]\ntoken = "{TOKEN_FUZZ}"\nbuffer_ms = 1000\n'
                      for k in range(parallel)),
            relay_toml=f'monitor_db = "{d / "monitor.db"}"',
            output={"fps": 15, "video_kbps": 200, "audio_kbps": 128})
        relay = start_relay(cfg, port, d / "relay.log", log_level="error")
        rss_start = rss_bytes(relay.pid)
        encoder = subprocess.Popen(
            [sys.executable, "-m", "steadycast.cli", "encode", "--relay",
             f"http://127.0.0.1:{port}", "--stream", "real", "--token", TOKEN_REAL,
             "--resolution", "160x90", "--fps", "15", "--kbps", "150", "--duration",
             str(seconds + 2), "--preset", "ultrafast"],
            stdout=subprocess.PIPE, stderr=(d / "encoder.log").open("wb"))
        try:
            t0 = time.monotonic()
            hostile = asyncio.run(_hostile(f"ws://127.0.0.1:{port}/ingest", seconds,
                                           parallel, seed))
            took = time.monotonic() - t0
            rss_peak_after = rss_bytes(relay.pid)
            out, _ = encoder.communicate(timeout=seconds + 60)
            alive = relay.poll() is None
        finally:
            if encoder.poll() is None:
                encoder.kill()
            stop_process(relay)
        summary = out.decode()
        captured = int(summary.split("frames_captured=")[1].split()[0]) \
            if "frames_captured=" in summary else -1
        files = sorted((d / "rec" / "real").glob("*.ts"))
        got = [c.frame_number if c else None for f in files for c in read_frame_codes(f)]
        lost = sorted(set(range(captured)) - set(n for n in got if n is not None))
        return {**hostile, "seconds": round(took, 1),
                "messages_per_s": round(hostile["messages"] / took) if took > 0 else 0,
                "relay_alive": alive, "relay_exit": relay.returncode,
                "rss_start_mb": round(rss_start / 2**20, 1),
                "rss_end_mb": round(rss_peak_after / 2**20, 1),
                "real_stream": {"encoder_exit": encoder.returncode,
                                "all_acked": "all_acked=True" in summary,
                                "frames_captured": captured, "frames_recorded": len(got),
                                "duplicates": len(got) - len(set(got)), "lost": len(lost)}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="time for each part")
    ap.add_argument("--messages", type=int, default=1_000_000,
                    help="most mutated messages for the in-process part")
    ap.add_argument("--parallel", type=int, default=8,
                    help="hostile connections at once, each on a stream of its own")
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args(argv)
    receiver = fuzz_receiver(args.messages, args.seed, args.seconds)
    print(f"(a) receiver: {receiver['messages']} messages in {receiver['seconds']} s "
          f"({receiver['messages_per_s']}/s), codes {receiver['codes']}")
    relay = fuzz_relay(args.seconds, args.parallel, args.seed)
    real = relay["real_stream"]
    print(f"(b) relay: {relay['messages']} mutated messages on {relay['connections']} "
          f"connections in {relay['seconds']} s ({relay['messages_per_s']}/s), close codes "
          f"{relay['close_codes']}; relay alive {relay['relay_alive']}, RSS "
          f"{relay['rss_start_mb']} -> {relay['rss_end_mb']} MB")
    print(f"    real stream: encoder exit {real['encoder_exit']}, all acked "
          f"{real['all_acked']}, {real['frames_captured']} frames captured, "
          f"{real['frames_recorded']} recorded, {real['lost']} lost, "
          f"{real['duplicates']} duplicated")
    print(json.dumps({"receiver": receiver, "relay": relay}))
    ok = (relay["relay_alive"] and real["encoder_exit"] == 0 and real["all_acked"]
          and real["lost"] == 0 and real["duplicates"] == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
