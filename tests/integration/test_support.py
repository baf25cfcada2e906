"""End-to-end checks of the test helpers: nginx-rtmp platform, TCP proxy, media checks."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import (
    NginxRtmp,
    TcpProxy,
    assert_platform_contract,
    decode_errors,
    free_port,
    max_timestamp_gap_s,
    probe,
    require_packages,
)

FPS = 30
AAC_FRAME_S = 1024 / 44100


def ffmpeg_push(url: str, seconds: float = 6, realtime: bool = True) -> list[str]:
    """The 320x180@30 test pattern + 440 Hz tone, H.264/AAC in FLV, to ``url``."""
    return [
        "ffmpeg", "-nostdin", "-hide_banner", "-v", "error",
        *(["-re"] if realtime else []),
        "-f", "lavfi", "-i", f"testsrc=size=320x180:rate={FPS}",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
        "-c:v", "libx264", "-preset", "veryfast", "-g", "60", "-c:a", "aac",
        "-t", str(seconds), "-f", "flv", url,
    ]  # fmt: skip


def run_push(url: str, seconds: float = 6, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(ffmpeg_push(url, seconds), capture_output=True, text=True,
                          timeout=timeout)


# -- pure helpers ----------------------------------------------------------------------------


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_max_timestamp_gap() -> None:
    assert max_timestamp_gap_s([]) == 0.0
    assert max_timestamp_gap_s([1.0]) == 0.0
    assert max_timestamp_gap_s([0.0, 0.1, 0.5, 0.6]) == pytest.approx(0.4)
    assert max_timestamp_gap_s([0.2, 0.0, 0.1]) == pytest.approx(0.1)  # sorted first (B-frames)


def test_require_packages_skips_locally_and_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require_packages([])  # nothing missing: no-op
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="libnginx-mod-rtmp"):
        require_packages(["libnginx-mod-rtmp"])
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="libnginx-mod-rtmp"):
        require_packages(["libnginx-mod-rtmp"])


# -- TcpProxy with a plain echo server -------------------------------------------------------


@pytest.fixture
def echo_server() -> Iterator[int]:
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.2)
    port = srv.getsockname()[1]
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                pass

    def accept_loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    t = threading.Thread(target=accept_loop, daemon=True)
    t.start()
    yield port
    stop.set()
    t.join(2)
    srv.close()


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def test_proxy_pause_resume_reset_refuse(echo_server: int) -> None:
    with TcpProxy("127.0.0.1", echo_server) as proxy:
        c = socket.create_connection(("127.0.0.1", proxy.port), timeout=3)
        c.sendall(b"hello")
        assert _recv_exact(c, 5) == b"hello"
        assert proxy.connections_total == 1

        proxy.pause()
        assert proxy.paused
        up_before = proxy.bytes_up
        c.sendall(b"x" * 1000)
        c.settimeout(0.3)
        with pytest.raises(TimeoutError):
            c.recv(10)
        assert proxy.bytes_up == up_before
        # the stalled link takes in its queue, then nothing more is read: the sender's
        # buffers fill up and writes block
        c.setblocking(False)
        pushed = 0
        with pytest.raises(BlockingIOError):  # noqa: PT012
            while pushed < 64 * 1024 * 1024:
                pushed += c.send(b"y" * 65536)
        assert pushed < 8 * 1024 * 1024
        c.settimeout(5)
        proxy.resume()
        echoed = _recv_exact(c, 1000 + pushed)
        assert echoed == b"x" * 1000 + b"y" * pushed
        assert proxy.bytes_up == up_before + 1000 + pushed
        assert proxy.bytes_down == proxy.bytes_up

        proxy.reset_connections()
        with pytest.raises(ConnectionResetError):
            c.recv(10)
        c.close()
        assert proxy.connections_open == 0

        proxy.refuse(True)
        with (  # noqa: PT012 - the RST can already hit connect() on loopback
            pytest.raises(ConnectionResetError),
            socket.create_connection(("127.0.0.1", proxy.port), timeout=3) as r,
        ):
            time.sleep(0.05)
            r.sendall(b"a")
            r.recv(10)
        proxy.refuse(False)
        ok = socket.create_connection(("127.0.0.1", proxy.port), timeout=3)
        ok.sendall(b"back")
        assert _recv_exact(ok, 4) == b"back"
        ok.close()
        assert proxy.connections_total == 3


def test_proxy_rate_limits_client_to_target(echo_server: int) -> None:
    with TcpProxy("127.0.0.1", echo_server) as proxy:
        proxy.set_rate_kbps(800)  # 100 kB/s
        c = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        t0 = time.monotonic()
        c.sendall(b"z" * 150_000)
        assert _recv_exact(c, 150_000) == b"z" * 150_000
        assert 1.3 < time.monotonic() - t0 < 3.0  # 1.5 s at the rate
        c.close()
        with pytest.raises(ValueError, match="must be > 0"):
            proxy.set_rate_kbps(0)


def test_proxy_passes_half_close(echo_server: int) -> None:
    with TcpProxy("127.0.0.1", echo_server) as proxy:
        c = socket.create_connection(("127.0.0.1", proxy.port), timeout=3)
        c.sendall(b"bye")
        c.shutdown(socket.SHUT_WR)
        assert _recv_exact(c, 100) == b"bye"  # echo, then the server's FIN comes through
        c.close()


# -- nginx-rtmp platform with real ffmpeg pushes ----------------------------------------------


@pytest.mark.integration
def test_push_records_one_session_meeting_contract(
    nginx_rtmp: NginxRtmp, ffmpeg_tools: None
) -> None:
    res = run_push(f"{nginx_rtmp.url()}/keyA")
    assert res.returncode == 0, res.stderr
    nginx_rtmp.stop()
    recs = nginx_rtmp.recordings("keyA")
    assert len(recs) == 1, recs
    assert len(nginx_rtmp.publish_sessions("keyA")) == 1
    rep = assert_platform_contract(recs[0], fps=FPS, audio_frame_s=AAC_FRAME_S,
                                   min_duration_s=5.5)
    assert (rep.width, rep.height) == (320, 180)
    assert rep.video is not None and rep.video.codec == "h264"
    assert rep.audio is not None and rep.audio.codec == "aac"


@pytest.mark.integration
def test_pause_through_proxy_keeps_one_session(
    nginx_rtmp: NginxRtmp, ffmpeg_tools: None
) -> None:
    with TcpProxy("127.0.0.1", nginx_rtmp.port) as proxy:
        push = subprocess.Popen(
            ffmpeg_push(f"rtmp://127.0.0.1:{proxy.port}/live/keyA"),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        try:
            proxy.wait_bytes_up(20_000)
            time.sleep(1.0)
            proxy.pause()
            stalled_at = proxy.bytes_up
            time.sleep(3.0)
            assert proxy.bytes_up == stalled_at
            assert push.poll() is None, "ffmpeg should just stall while the link is paused"
            proxy.resume()
            _, err = push.communicate(timeout=15)
        finally:
            if push.poll() is None:
                push.kill()
                push.wait()
        assert push.returncode == 0, err
        assert proxy.connections_total == 1
    nginx_rtmp.stop()
    assert len(nginx_rtmp.recordings("keyA")) == 1
    assert len(nginx_rtmp.publish_sessions("keyA")) == 1


@pytest.mark.integration
def test_reset_connections_makes_ffmpeg_fail(nginx_rtmp: NginxRtmp, ffmpeg_tools: None) -> None:
    with TcpProxy("127.0.0.1", nginx_rtmp.port) as proxy:
        push = subprocess.Popen(
            ffmpeg_push(f"rtmp://127.0.0.1:{proxy.port}/live/keyA"),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        try:
            proxy.wait_bytes_up(20_000)
            time.sleep(0.5)
            proxy.reset_connections()
            _, err = push.communicate(timeout=10)
        finally:
            if push.poll() is None:
                push.kill()
                push.wait()
    assert push.returncode != 0
    assert "reset" in err.lower() or "broken pipe" in err.lower(), err


@pytest.mark.integration
def test_refused_destination_fails_fast(nginx_rtmp: NginxRtmp, ffmpeg_tools: None) -> None:
    with TcpProxy("127.0.0.1", nginx_rtmp.port) as proxy:
        proxy.refuse(True)
        t0 = time.monotonic()
        res = run_push(f"rtmp://127.0.0.1:{proxy.port}/live/keyA", seconds=1, timeout=10)
        assert res.returncode != 0
        assert time.monotonic() - t0 < 5
        assert proxy.connections_total >= 1
    nginx_rtmp.stop()
    assert nginx_rtmp.recordings("keyA") == []


@pytest.mark.integration
def test_rtmps_push_records_one_session(nginx_rtmps: NginxRtmp, ffmpeg_tools: None) -> None:
    # verify the self-signed certificate for real (FFmpeg's default is tls_verify=0)
    cmd = ffmpeg_push(f"{nginx_rtmps.rtmps_url()}/keyA", seconds=3)
    cmd[-3:-3] = ["-tls_verify", "1", "-ca_file", str(nginx_rtmps.cert_path)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    assert res.returncode == 0, res.stderr
    nginx_rtmps.stop()
    recs = nginx_rtmps.recordings("keyA")
    assert len(recs) == 1, recs
    assert_platform_contract(recs[0], fps=FPS, audio_frame_s=AAC_FRAME_S, min_duration_s=2.5)


# -- media checks catch damage ------------------------------------------------------------------


@pytest.mark.integration
def test_broken_file_is_detected(tmp_path: Path, ffmpeg_tools: None) -> None:
    good = tmp_path / "good.flv"
    res = subprocess.run(ffmpeg_push(str(good), seconds=6, realtime=False),
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    rep = assert_platform_contract(good, fps=FPS, audio_frame_s=AAC_FRAME_S, min_duration_s=5.5)
    assert rep.duration_s == pytest.approx(6.0, abs=0.2)

    data = good.read_bytes()
    mid = len(data) // 2
    broken = tmp_path / "broken.flv"
    broken.write_bytes(data[:mid] + data[mid + 30_000:])
    errors = decode_errors(broken)
    try:
        assert_platform_contract(broken, fps=FPS, audio_frame_s=AAC_FRAME_S,
                                 min_duration_s=5.5)
    except AssertionError as exc:
        contract_error = str(exc)
    else:
        contract_error = ""
    assert errors or contract_error
    assert probe(broken).video is not None
