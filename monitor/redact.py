"""Masking of secrets (publish tokens, stream keys) in anything a person or a program reads.

`mask_secret` gives the display form (``****1234``); `Redactor` scrubs known secrets out of
arbitrary text (log lines, exception messages from FFmpeg that quote a URL with its key).
"""

from __future__ import annotations

import logging
import threading
from urllib.parse import urlsplit

SHOWN_SUFFIX_CHARS = 4
MIN_SECRET_CHARS_TO_SHOW_SUFFIX = 12


def mask_secret(secret: str) -> str:
    """``****1234`` for a long secret, ``****`` for a short one (a suffix would reveal too much)."""
    if len(secret) >= MIN_SECRET_CHARS_TO_SHOW_SUFFIX:
        return "****" + secret[-SHOWN_SUFFIX_CHARS:]
    return "****"


def mask_url(url: str) -> str:
    """A URL with everything that may hold a secret masked: userinfo, every path segment
    after the first (``rtmp://a.rtmp.youtube.com/live2/****``: RTMP puts the stream key
    there), query and fragment. A URL that cannot be split is masked whole."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return mask_secret(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "****@" + netloc.rpartition("@")[2]
    segments = parts.path.split("/")
    kept_first = False
    for i, segment in enumerate(segments):
        if not segment:
            continue
        if kept_first:
            segments[i] = "****"
        kept_first = True
    path = "/".join(segments)
    text = f"{parts.scheme}://{netloc}{path}" if parts.scheme or netloc else path
    if parts.query:
        text += "?****"
    if parts.fragment:
        text += "#****"
    return text


class Redactor:
    """Replaces every registered secret in a text with its masked form. Thread-safe."""

    def __init__(self, secrets: list[str] | None = None) -> None:
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()
        for s in secrets or []:
            self.add(s)

    def add(self, secret: str) -> None:
        if not secret:
            return
        with self._lock:
            if secret not in self._secrets:
                # longest first, so a secret containing another is replaced whole
                self._secrets = tuple(sorted({*self._secrets, secret}, key=len, reverse=True))

    def scrub(self, text: str) -> str:
        for s in self._secrets:
            if s in text:
                text = text.replace(s, mask_secret(s))
        return text


class RedactingFilter(logging.Filter):
    """A logging filter that scrubs secrets from the formatted message and exception text."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = self.redactor.scrub(message)
        if record.exc_info:
            formatted = logging.Formatter().formatException(record.exc_info)
            scrubbed += "\n" + self.redactor.scrub(formatted)
            record.exc_info = None
            record.exc_text = None
        record.msg = scrubbed
        record.args = None
        return True


REDACTOR = Redactor()
"""The process-wide redactor: the CLI registers every secret it loads here."""


def install_log_redaction(redactor: Redactor = REDACTOR) -> None:
    """Attach the redacting filter to every handler of the root logger."""
    root = logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter(redactor))
