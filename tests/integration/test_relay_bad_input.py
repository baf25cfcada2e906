"""Bad input never crashes the relay and never disturbs a stream that is running.

A real relay process carries a real encoder's stream while other clients send it a wrong
token, an unknown stream, no token, malformed, unknown, oversized and text messages. Each
gets its clear error; the running stream's recording stays complete.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from monitor.events import read_events
from tests.relay_harness import (
    frame_numbers,
    frames_captured,
    get_json,
    start_encoder,
    start_relay,
    steadycast_cmd,
    stop_process,
    write_relay_config,
    ws_handshake,
)
from tests.support import free_port
from uplink import CloseCode, Hello, encode

pytestmark = pytest.mark.integration

GOOD_TOKEN = "good-token-for-farm1-7781"
OTHER_TOKEN = "other-token-for-farm2-4432"
DEST_KEY = "platform-stream-key-5555"


async def _send_and_get_close(url: str, token: str, payloads: list[bytes | str]) -> int | None:
    async with aiohttp.ClientSession() as http, http.ws_connect(
            url, headers={"Authorization": f"Bearer {token}"}, max_msg_size=0) as ws:
        async def drain() -> None:
            async for _ in ws:
                pass

        reader = asyncio.create_task(drain())
        try:
            for p in payloads:
                if isinstance(p, str):
                    await ws.send_str(p)
                else:
                    await ws.send_bytes(p)
        except ConnectionError:
            pass  # the relay hung up mid-send; its close frame says why
        await asyncio.wait_for(reader, 10)
        return ws.close_code


async def _http_body(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        return r.status, await r.text()


def test_bad_clients_get_clear_errors_and_the_running_stream_carries_on(tmp_path: Path) -> None:
    port = free_port()
    record_dir = tmp_path / "rec"
    config = tmp_path / "relay.toml"
    write_relay_config(config, port, record_dir, tmp_path / "events.jsonl", f"""
[streams.farm1]
token = "{GOOD_TOKEN}"
buffer_ms = 1000

[[streams.farm1.destinations]]
name = "nowhere"
url = "rtmp://127.0.0.1:{free_port()}/live"
key = "{DEST_KEY}"
connect_timeout_s = 1

[streams.farm2]
token = "{OTHER_TOKEN}"
""")
    relay = start_relay(config, port, tmp_path / "relay.log")
    base = f"ws://127.0.0.1:{port}/ingest"
    encoder = start_encoder(f"http://127.0.0.1:{port}", "farm1", GOOD_TOKEN,
                            tmp_path / "encoder.log", resolution="160x90", fps=15, kbps=100,
                            duration_s=10)
    try:
        time.sleep(2)

        async def attacks() -> dict[str, object]:
            r: dict[str, object] = {}
            r["wrong_token"] = await ws_handshake(f"{base}/farm1",
                                                {"Authorization": "Bearer nope-nope-nope"})
            r["wrong_token_query"] = await ws_handshake(f"{base}/farm1?token=nope")
            r["other_streams_token"] = await ws_handshake(
                f"{base}/farm1", {"Authorization": f"Bearer {OTHER_TOKEN}"})
            r["no_token"] = await ws_handshake(f"{base}/farm1")
            r["unknown_stream"] = await ws_handshake(f"{base}/nosuch",
                                                   {"Authorization": f"Bearer {GOOD_TOKEN}"})
            r["plain_get"] = await _http_body(f"http://127.0.0.1:{port}/ingest/farm2")
            # authenticated on farm2, then protocol garbage: each closes that connection only
            r["garbage"] = await _send_and_get_close(f"{base}/farm2", OTHER_TOKEN,
                                                     [b"\xff\x00\x01"])
            r["truncated_hello"] = await _send_and_get_close(f"{base}/farm2", OTHER_TOKEN,
                                                             [b"\x01\x01"])
            r["media_before_hello"] = await _send_and_get_close(
                f"{base}/farm2", OTHER_TOKEN, [b"\x04" + b"\x00" * 40])
            r["text_frame"] = await _send_and_get_close(f"{base}/farm2", OTHER_TOKEN,
                                                        ["hello?"])
            hello = encode(Hello(session_id=b"\x01" * 16, acked_seq=0))
            r["oversized"] = await _send_and_get_close(
                f"{base}/farm2", OTHER_TOKEN, [hello, b"\x04" + b"\x00" * (5 * 1024 * 1024)])
            return r

        results = asyncio.run(attacks())
        out, _ = encoder.communicate(timeout=60)
        summary = out.decode()
        status = get_json(f"http://127.0.0.1:{port}/api/streams")
        _, metrics = asyncio.run(_http_body(f"http://127.0.0.1:{port}/metrics"))
    finally:
        if encoder.poll() is None:
            encoder.kill()
        stop_process(relay)
    assert results["wrong_token"][0] == 403  # type: ignore[index]
    assert "wrong publish token for stream 'farm1'" in results["wrong_token"][1]  # type: ignore[index]
    assert results["wrong_token_query"][0] == 403  # type: ignore[index]
    assert results["other_streams_token"][0] == 403  # type: ignore[index]
    assert results["no_token"][0] == 401  # type: ignore[index]
    assert results["unknown_stream"][0] == 404  # type: ignore[index]
    assert "unknown stream 'nosuch'" in results["unknown_stream"][1]  # type: ignore[index]
    assert results["plain_get"][0] in (401, 426)  # type: ignore[index]
    assert results["garbage"] in (CloseCode.UNKNOWN_TYPE, CloseCode.MALFORMED)
    assert results["truncated_hello"] == CloseCode.MALFORMED
    assert results["media_before_hello"] in (CloseCode.PROTOCOL_ORDER, CloseCode.MALFORMED)
    assert results["text_frame"] == CloseCode.MALFORMED
    # an oversized frame is refused before it is read whole; the sender, still writing, sees
    # the connection cut (1006) or the close (1009); the relay logs why
    assert results["oversized"] in (1006, 1009, CloseCode.TOO_LARGE)
    refusals = [e for e in read_events(tmp_path / "events.jsonl")
                if e["event"] == "protocol_error"]
    assert all(e["stream"] == "farm2" for e in refusals), refusals
    assert any(e["code"] == 1009 and "max_message_bytes" in e["detail"] for e in refusals)
    assert len(refusals) == 5, refusals

    # the running stream never noticed
    assert encoder.returncode == 0, summary
    assert "all_acked=True" in summary and "reconnects=0" in summary, summary
    captured = frames_captured(summary)
    files = sorted((record_dir / "farm1").glob("*.ts"))
    assert len(files) == 1
    assert frame_numbers(files[0]) == list(range(captured))

    # secrets appear nowhere a person or a program reads
    log_text = (tmp_path / "relay.log").read_text()
    events_text = (tmp_path / "events.jsonl").read_text()
    for secret in (GOOD_TOKEN, OTHER_TOKEN, DEST_KEY):
        assert secret not in log_text
        assert secret not in events_text
        assert secret not in metrics
        assert secret not in str(status)
    assert 'steadycast_protocol_errors_total{code="4400",stream="farm2"}' in metrics or \
        "steadycast_protocol_errors_total" in metrics


def test_config_typo_names_the_key_and_the_relay_does_not_start(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text('[relay]\nlisten = "127.0.0.1:1"\n[streams.farm1]\ntoken = "abcdefgh12"\n'
                      'bufer_ms = 3000\n', encoding="utf-8")
    proc = subprocess.run(steadycast_cmd("relay", "--config", str(config)), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "bufer_ms" in proc.stderr and "buffer_ms" in proc.stderr, proc.stderr
    assert "not starting" in proc.stderr


def test_encoder_with_wrong_token_exits_with_a_clear_message(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "relay.toml"
    write_relay_config(config, port, tmp_path / "rec", tmp_path / "ev.jsonl",
                       f'[streams.farm1]\ntoken = "{GOOD_TOKEN}"\n')
    relay = start_relay(config, port, tmp_path / "relay.log")
    try:
        proc = subprocess.run(
            steadycast_cmd("encode", "--relay", f"http://127.0.0.1:{port}", "--stream", "farm1",
                           "--token", "wrong-token-99", "--resolution", "160x90", "--duration",
                           "2"), capture_output=True, text=True, timeout=60)
    finally:
        stop_process(relay)
    assert proc.returncode == 3, proc.stderr
    assert "refused stream 'farm1' (HTTP 403): wrong publish token" in proc.stderr
    assert "wrong-token-99" not in proc.stderr


def test_cli_help_explains_every_subcommand() -> None:
    for args in ([], ["relay"], ["encode"]):
        out = subprocess.run([sys.executable, "-m", "steadycast.cli", *args, "--help"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0
        assert "usage: steadycast" in out.stdout
