"""The file source loops a real media file; the relay's self-signed TLS is made once and kept."""

from __future__ import annotations

import ssl
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from encoder.framecode import read_frame_code
from encoder.sources import FileSource, SourceError, open_source
from relay.settings import TlsSettings
from relay.tls import server_ssl_context


def _make_clip(path: Path, seconds: float = 1.0, fps: int = 10) -> None:
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = 160, 90, "yuv420p"
        a = out.add_stream("aac", rate=48000)
        a.layout = "mono"
        for i in range(round(seconds * fps)):
            img = np.full((90, 160, 3), (i * 20) % 255, np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="bgr24")
            frame.pts = i
            out.mux(v.encode(frame))
        for i in range(round(seconds * 48000 / 1024)):
            af = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                            layout="mono")
            af.sample_rate, af.pts, af.time_base = 48000, i * 1024, Fraction(1, 48000)
            out.mux(a.encode(af))
        out.mux(v.encode(None))
        out.mux(a.encode(None))


def test_file_source_loops_and_carries_the_frame_code_when_asked(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    _make_clip(clip)
    src = FileSource(clip, 320, 180, 30, 48000, framecode=True)
    try:
        for n in range(75):  # 2.5 s at 30 fps from a 1 s clip: it loops twice
            img = src.video(n, 1_700_000_000_000 + n)
            assert img.shape == (180, 320, 3)
            code = read_frame_code(img)
            assert code is not None and code.frame_number == n
            assert src.audio(1600).shape == (1, 1600)
    finally:
        src.close()


def test_file_source_leaves_the_users_picture_alone_by_default(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    _make_clip(clip)
    src = open_source(f"file:{clip}", 320, 180, 30, 48000)
    try:
        for n in range(15):
            img = src.video(n, 1_700_000_000_000 + n)
            assert read_frame_code(img) is None
            # the band's rows carry the clip's flat gray, not the code's black and white
            assert int(img[:8].max()) - int(img[:8].min()) <= 16, n
    finally:
        src.close()


def test_unreadable_sources_are_reported_in_plain_words(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        open_source(f"file:{tmp_path / 'missing.mp4'}", 320, 180, 30, 48000)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 10)
    with pytest.raises(SourceError, match="cannot read source file"):
        open_source(f"file:{junk}", 320, 180, 30, 48000)
    with pytest.raises(SourceError, match="unknown source 'camera0'"):
        open_source("camera0", 320, 180, 30, 48000)


def test_self_signed_certificate_is_made_once_and_kept(tmp_path: Path) -> None:
    ctx = server_ssl_context(TlsSettings(mode="self-signed"), tmp_path, "127.0.0.1")
    assert isinstance(ctx, ssl.SSLContext)
    cert = tmp_path / "tls" / "relay-cert.pem"
    first = cert.read_bytes()
    server_ssl_context(TlsSettings(mode="self-signed"), tmp_path, "127.0.0.1")
    assert cert.read_bytes() == first
    assert oct((tmp_path / "tls" / "relay-key.pem").stat().st_mode & 0o777) == "0o600"
    assert server_ssl_context(TlsSettings(mode="off"), tmp_path, "x") is None
