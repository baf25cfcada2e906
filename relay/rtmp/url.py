"""What an ``rtmp://`` or ``rtmps://`` publish URL names: host, port, application, stream.

The rule FFmpeg, OBS and the platforms' instructions share: the first path segment is the
application (``connect``'s ``app``, ``live2`` in ``rtmp://a.rtmp.youtube.com/live2/KEY``),
everything after it, query included, is the stream name given to ``publish`` (the stream
key: a secret). ``tcUrl`` is the URL up to and including the application.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_PORTS = {"rtmp": 1935, "rtmps": 443}


@dataclass(frozen=True)
class RtmpTarget:
    scheme: str
    host: str
    port: int
    app: str
    stream_name: str = ""  # secret: the stream key

    @property
    def tls(self) -> bool:
        return self.scheme == "rtmps"

    @property
    def tc_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}/{self.app}"


def split_rtmp_url(url: str) -> RtmpTarget:
    """The parts of a publish URL; ValueError (without the URL: it may hold a key) if it is
    not an rtmp:// or rtmps:// URL with a host and an application."""
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS:
        raise ValueError("not an rtmp:// or rtmps:// URL")
    if not parts.hostname:
        raise ValueError("the URL has no host")
    port = parts.port or DEFAULT_PORTS[parts.scheme]
    path = parts.path.lstrip("/")
    app, _, rest = path.partition("/")
    if not app:
        raise ValueError("the URL has no application (the path segment after the host)")
    name = rest.strip("/")
    if parts.query:
        name += "?" + parts.query
    return RtmpTarget(parts.scheme, parts.hostname, port, app, name)
