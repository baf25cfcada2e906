"""The relay's TOML config: read it, check every key, resolve secrets, build RelaySettings.

Every problem in a file is collected and reported together, one per line, each naming the
file, the key path (``streams.farm1.destinations[1].url``), the bad value and what would be
valid. Secrets (publish tokens, stream keys) are never shown: they appear masked
(``****1234``), and URLs are shown with userinfo, path beyond the first segment and query
masked, because platforms put stream keys there.

Secrets are written either literally or as ``env:NAME`` (the environment variable NAME, which
must be set and non-empty) or ``env:NAME:-fallback`` (NAME if set and non-empty, else the
literal fallback, as in the shell).

Relative paths are resolved against the config file's directory; for the embedded default
config, against the current working directory at load time.
"""

from __future__ import annotations

import contextlib
import difflib
import ipaddress
import json
import os
import re
import ssl
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from monitor.dropout import LOW_THROUGHPUT_S_DEFAULT, LOW_THROUGHPUT_SHARE_DEFAULT
from monitor.redact import Redactor, mask_secret, mask_url
from monitor.validate import (
    Invalid,
    check_table,
    is_integer,
    is_number,
    join_path,
    shorten,
    within,
)
from relay.output.platform_link import client_ssl_context
from relay.settings import (
    BUFFER_MS_DEFAULT,
    DROPOUT_MS_DEFAULT,
    FREEZE_MS_DEFAULT,
    GRACE_S_DEFAULT,
    HOLD_S_DEFAULT,
    DestinationSettings,
    OutputProfile,
    RelaySettings,
    StreamSettings,
    TlsSettings,
)
from relay.tls import normalize_name, valid_tls_name
from uplink.media import X264_PRESETS

DEFAULT_CONFIG_RESOURCE = "default_relay.toml"
EMBEDDED_SOURCE = "<embedded default steadycast/default_relay.toml>"

ENV_PREFIX = "env:"
ENV_FALLBACK_SEPARATOR = ":-"
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
NAME_VALID = "1 to 64 characters from A-Z a-z 0-9 _ -"
BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")
HOSTNAME_RE = re.compile(
    r"(?=.{1,253}\.?$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)
PORT_RE = re.compile(r"[0-9]{1,5}")

TOKEN_MIN_CHARS = 8
TLS_MODES = ("off", "self-signed", "files")
TLS_NAMES_MAX = 100
URL_SCHEMES = ("rtmp", "rtmps")
AUDIO_SAMPLE_RATES_HZ = (44100, 48000)
IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")  # PNG, JPEG
SHOWN_VALUE_MAX_CHARS = 80
SCRUB_MIN_SECRET_CHARS = 8  # shorter secrets are only masked where shown, not scrubbed


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong in a config: where (a key path, "" for the file itself) and what."""

    key_path: str
    message: str

    def __str__(self) -> str:
        return f"{self.key_path}: {self.message}" if self.key_path else self.message


class ConfigError(Exception):
    """A config that cannot be used. ``str()`` gives one line per problem, each prefixed with
    the source file when known; ``problems`` holds them as data."""

    def __init__(self, problems: Sequence[ConfigProblem] | str, source: str | None = None):
        if isinstance(problems, str):
            problems = [ConfigProblem("", problems)]
        # one line per problem, whatever characters the file's keys and values hold
        self.problems: tuple[ConfigProblem, ...] = tuple(
            ConfigProblem(_one_line(p.key_path), _one_line(p.message)) for p in problems
        )
        self.source = source
        prefix = f"{source}: " if source else ""
        super().__init__("\n".join(prefix + str(p) for p in self.problems))


# ---------------------------------------------------------------------------------------------
# Public API


def load_relay_config(path: Path | None, env: Mapping[str, str] | None = None) -> RelaySettings:
    """Read and check a relay config file; ``None`` loads the embedded default.

    ``env`` is where ``env:NAME`` secrets are looked up (default: ``os.environ``).
    Raises ConfigError listing every problem found.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    if path is None:
        source = EMBEDDED_SOURCE
        text = resources.files("steadycast").joinpath(DEFAULT_CONFIG_RESOURCE).read_text("utf-8")
        base_dir = Path.cwd()
    else:
        path = Path(path)
        source = str(path)
        text = _read_text(path, source)
        base_dir = path.absolute().parent
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        # tomllib's messages carry "(at line L, column C)" and quote no values
        raise ConfigError(f"invalid TOML: {e}", source) from None
    return parse_relay_config(data, source, environ, base_dir)


def parse_relay_config(
    data: dict[str, Any], source: str, env: Mapping[str, str], base_dir: Path
) -> RelaySettings:
    """Check already-parsed TOML data and build RelaySettings; relative paths resolve against
    ``base_dir``. Raises ConfigError (with ``source`` in every line) listing every problem."""
    parser = _Parser(env, base_dir)
    settings = parser.relay_settings(data)
    if parser.problems:
        redactor = Redactor([s for s in parser.secrets if len(s) >= SCRUB_MIN_SECRET_CHARS])
        problems = [ConfigProblem(p.key_path, redactor.scrub(p.message)) for p in parser.problems]
        raise ConfigError(problems, source)
    return settings


def resolve_secret(value: str, key_path: str, env: Mapping[str, str]) -> str:
    """``env:NAME`` → ``env[NAME]``; ``env:NAME:-fallback`` → ``env[NAME]`` or the fallback when
    NAME is unset or empty; anything else is the secret itself.

    Raises ConfigError (naming ``key_path`` and the variable) when NAME is unset or empty and
    there is no fallback, or when the reference is malformed.
    """
    if not value.startswith(ENV_PREFIX):
        return value
    name, sep, fallback = value[len(ENV_PREFIX) :].partition(ENV_FALLBACK_SEPARATOR)
    if not ENV_NAME_RE.fullmatch(name):
        raise ConfigError(
            [
                ConfigProblem(
                    key_path,
                    f"{mask_secret(value)} is not a valid environment reference; valid: "
                    '"env:NAME" or "env:NAME:-fallback" with NAME matching [A-Za-z_][A-Za-z0-9_]*',
                )
            ]
        )
    found = env.get(name, "")
    if found:
        return found
    if sep:
        return fallback
    raise ConfigError(
        [
            ConfigProblem(
                key_path,
                f"environment variable {name} is not set or is empty; valid: set {name} in the "
                f'relay\'s environment, or write "env:{name}:-fallback"',
            )
        ]
    )


# ---------------------------------------------------------------------------------------------
# Showing values without leaking secrets


def _one_line(text: str) -> str:
    """``text`` with line breaks and other unprintable characters escaped (``\\x85``)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def _show(value: object) -> str:
    """A TOML-like, length-capped rendering of a non-secret value."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = _one_line(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, dict):
        return "a table"
    elif isinstance(value, list):
        return "an array"
    else:
        text = repr(value)
    return shorten(text, SHOWN_VALUE_MAX_CHARS)


def _got(value: object, secret: bool = False) -> str:
    """``string "abc"``, ``integer 5``, ``a table``: what a type error says was found."""
    if isinstance(value, dict | list):
        return _show(value)
    shown = mask_secret(str(value)) if secret else _show(value)
    return f"{_type_name(value)} {shown}"


def _show_url(url: str) -> str:
    """A URL with everything that may hold a secret masked (monitor.redact.mask_url)."""
    return _show(mask_url(url))


def _join(path: str, key: object) -> str:
    key_text = key if isinstance(key, str) and BARE_KEY_RE.fullmatch(key) else None
    if key_text is None:
        key_text = _one_line(json.dumps(str(key), ensure_ascii=False))
    return join_path(path, key_text)


# ---------------------------------------------------------------------------------------------
# Field checkers: each turns a raw TOML value into a typed one, or raises Invalid (the
# message says what was found and what is valid; the table adds the key path).


class _Field:
    default: Any = None
    required: bool = False
    valid: str = ""

    def parse(self, value: object, key_path: str, parser: _Parser) -> Any:
        raise NotImplementedError

    def type_error(self, expected: str, value: object) -> Invalid:
        return Invalid(f"expected {expected}, got {_got(value)}; valid: {self.valid}")


class _Int(_Field):
    def __init__(
        self,
        default: int,
        lo: int,
        hi: int,
        unit: str,
        even: bool = False,
        choices: tuple[int, ...] = (),
    ) -> None:
        self.default, self.lo, self.hi, self.even, self.choices = default, lo, hi, even, choices
        if choices:
            self.valid = f"one of {', '.join(str(c) for c in choices)} ({unit})"
        else:
            kind = "an even integer" if even else "an integer"
            self.valid = f"{kind} from {lo} to {hi} ({unit})"

    def parse(self, value: object, key_path: str, parser: _Parser) -> int:
        if not is_integer(value):
            raise self.type_error("an integer", value)
        ok = value in self.choices if self.choices else within(value, self.lo, self.hi)
        if not ok or (self.even and value % 2):
            raise Invalid(f"{_show(value)} is out of range; valid: {self.valid}")
        return value


class _Float(_Field):
    def __init__(
        self, default: float, lo: float, hi: float, unit: str, lo_exclusive: bool = False
    ) -> None:
        self.default, self.lo, self.hi, self.lo_exclusive = default, lo, hi, lo_exclusive
        low = f"greater than {lo:g} and at most" if lo_exclusive else f"from {lo:g} to"
        self.valid = f"a number {low} {hi:g} ({unit})"

    def parse(self, value: object, key_path: str, parser: _Parser) -> float:
        if not is_number(value):
            raise self.type_error("a number", value)
        if not within(value, self.lo, self.hi, lo_exclusive=self.lo_exclusive):
            raise Invalid(f"{_show(value)} is out of range; valid: {self.valid}")
        return float(value)


class _Bool(_Field):
    valid = "true or false"

    def __init__(self, default: bool) -> None:
        self.default = default

    def parse(self, value: object, key_path: str, parser: _Parser) -> bool:
        if not isinstance(value, bool):
            raise self.type_error("a boolean", value)
        return value


class _Str(_Field):
    def __init__(
        self,
        default: str = "",
        choices: tuple[str, ...] = (),
        pattern: re.Pattern[str] | None = None,
        valid: str = "a string",
        required: bool = False,
    ) -> None:
        self.default, self.required = default, required
        self.choices, self.pattern = choices, pattern
        self.valid = "one of " + ", ".join(json.dumps(c) for c in choices) if choices else valid

    def parse(self, value: object, key_path: str, parser: _Parser) -> str:
        if not isinstance(value, str):
            raise self.type_error("a string", value)
        if (self.choices and value not in self.choices) or (
            self.pattern is not None and not self.pattern.fullmatch(value)
        ):
            raise Invalid(f"{_show(value)} is not allowed; valid: {self.valid}")
        return value


class _Secret(_Field):
    def __init__(self, required: bool, min_chars: int) -> None:
        self.required, self.min_chars, self.default = required, min_chars, ""
        at_least = f"at least {min_chars} characters, " if min_chars else ""
        self.valid = (
            f'a secret string ({at_least}no spaces), or "env:NAME" to read it from the '
            "environment variable NAME"
        )

    def parse(self, value: object, key_path: str, parser: _Parser) -> str:
        if not isinstance(value, str):
            raise Invalid(
                f"expected a string, got {_got(value, secret=True)}; valid: {self.valid}"
            )
        try:
            secret = resolve_secret(value, key_path, parser.env)
        except ConfigError as e:
            raise Invalid("; ".join(p.message for p in e.problems)) from None
        parser.secrets.append(secret)
        if not secret and not self.required:
            return ""  # an optional secret left unset ("env:NAME:-")
        if len(secret) < self.min_chars:
            raise Invalid(
                f"{mask_secret(secret)} is too short ({len(secret)} characters); "
                f"valid: {self.valid}"
            )
        if any(c.isspace() or not c.isprintable() for c in secret):
            raise Invalid(
                f"{mask_secret(secret)} contains spaces or control characters; valid: {self.valid}"
            )
        return secret


class _Path(_Field):
    """A path, resolved against the config's directory. ``image``: must be an existing PNG/JPEG."""

    def __init__(self, default: str | None, image: bool = False) -> None:
        self.default, self.image = default, image
        self.valid = "a file path, absolute or relative to the config file's directory"
        if image:
            self.valid = 'a path to an existing PNG or JPEG file, or "" for none'
        elif default is None:
            self.valid += ', or "" for none'

    def parse(self, value: object, key_path: str, parser: _Parser) -> Path | None:
        if not isinstance(value, str):
            raise self.type_error("a string", value)
        if not value:
            if self.default is None:
                return None
            raise Invalid(f"must not be empty; valid: {self.valid}")
        if "\x00" in value:
            raise Invalid(f"{_show(value)} contains a NUL character; valid: {self.valid}")
        path = parser.resolve_path(value)
        if self.image:
            _check_image(value, path)
        return path


def _check_image(value: str, path: Path) -> None:
    try:
        with path.open("rb") as f:
            head = f.read(8)
    except (OSError, ValueError) as e:
        reason = "does not exist" if isinstance(e, FileNotFoundError) else "cannot be read"
        raise Invalid(
            f"{_show(value)} {reason} (resolved to {_show(str(path))}); "
            'valid: a path to an existing PNG or JPEG file, or "" for none'
        ) from None
    if not head.startswith(IMAGE_MAGIC):
        raise Invalid(
            f"{_show(value)} is not a PNG or JPEG image (resolved to {_show(str(path))}); "
            'valid: a path to an existing PNG or JPEG file, or "" for none'
        )


class _Listen(_Field):
    default = ("127.0.0.1", 8080)
    valid = '"host:port" with port 1..65535, e.g. "127.0.0.1:8080", "0.0.0.0:8443", "[::1]:8080"'

    def parse(self, value: object, key_path: str, parser: _Parser) -> tuple[str, int]:
        if not isinstance(value, str):
            raise self.type_error("a string", value)
        bad = f"{_show(value)} is not a valid listen address"
        if value.startswith("["):
            host, close, rest = value[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else None
            if not close or port_text is None:
                raise Invalid(f"{bad}; valid: {self.valid}")
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise Invalid(
                    f"{bad}: {_show(host)} is not an IPv6 address; valid: {self.valid}"
                ) from None
        else:
            host, colon, port_text = value.rpartition(":")
            if not colon or not host:
                raise Invalid(f"{bad}: it needs a host and a port; valid: {self.valid}")
            if ":" in host:
                raise Invalid(f"{bad}: put an IPv6 address in brackets; valid: {self.valid}")
            if not _valid_host(host):
                raise Invalid(
                    f"{bad}: {_show(host)} is not a host name or IPv4 address; valid: {self.valid}"
                )
        if not PORT_RE.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
            raise Invalid(f"{bad}: port {_show(port_text)} is out of range; valid: {self.valid}")
        return host, int(port_text)


def _valid_host(host: str) -> bool:
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
        return True
    return bool(HOSTNAME_RE.fullmatch(host))


class _Url(_Field):
    required = True
    default = ""
    valid = (
        "an rtmp:// or rtmps:// URL with a host and no user:password@, e.g. "
        '"rtmp://a.rtmp.youtube.com/live2"'
    )

    def parse(self, value: object, key_path: str, parser: _Parser) -> str:
        if not isinstance(value, str):
            raise self.type_error("a string", value)
        shown = _show_url(value)
        if any(c.isspace() or not c.isprintable() for c in value):
            raise Invalid(f"{shown} contains spaces or control characters; valid: {self.valid}")
        try:
            parts = urlsplit(value)
            host = parts.hostname
            _ = parts.port  # raises ValueError on a bad port
        except ValueError:
            raise Invalid(f"{shown} is not a valid URL; valid: {self.valid}") from None
        if parts.scheme not in URL_SCHEMES:
            scheme = f"scheme {_show(parts.scheme)}" if parts.scheme else "no scheme"
            raise Invalid(f"{shown} has {scheme}; valid: {self.valid}")
        if "@" in parts.netloc:
            raise Invalid(
                f"{shown} embeds credentials (user:password@); put the stream key in 'key' "
                f"instead; valid: {self.valid}"
            )
        if not host:
            raise Invalid(f"{shown} has no host; valid: {self.valid}")
        if not parts.path.strip("/"):
            raise Invalid(
                f"{shown} has no application (the path after the host, e.g. /live2); "
                f"valid: {self.valid}"
            )
        return value


class _TlsNames(_Field):
    """``[relay] tls_names``: the self-signed certificate's names, each an IP address or a DNS
    name (``relay.tls.valid_tls_name``), without repeats; None = the defaults."""

    default = None
    valid = (
        f"an array of 1 to {TLS_NAMES_MAX} DNS names or IP addresses, e.g. "
        '["relay.example.org", "203.0.113.7", "localhost", "127.0.0.1"]'
    )

    def parse(self, value: object, key_path: str, parser: _Parser) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.type_error("an array", value)
        if not 1 <= len(value) <= TLS_NAMES_MAX:
            raise Invalid(f"has {len(value)} names; valid: {self.valid}")
        seen: dict[object, int] = {}
        for i, name in enumerate(value):
            if not isinstance(name, str):
                raise Invalid(f"[{i}]: expected a string, got {_got(name)}; valid: {self.valid}")
            if not valid_tls_name(name):
                raise Invalid(
                    f"[{i}]: {_show(name)} is not a DNS name or an IP address (write IPv6 "
                    f"without brackets); valid: {self.valid}"
                )
            key = normalize_name(name)
            if key in seen:
                raise Invalid(
                    f"[{i}]: {_show(name)} repeats [{seen[key]}]; valid: {self.valid}"
                )
            seen[key] = i
        return tuple(value)


class _Raw(_Field):
    """A sub-structure checked by the caller (tables of streams, arrays of destinations)."""

    def __init__(self, default: object) -> None:
        self.default = default

    def parse(self, value: object, key_path: str, parser: _Parser) -> object:
        return value


# ---------------------------------------------------------------------------------------------
# The schema

RELAY_FIELDS: dict[str, _Field] = {
    "listen": _Listen(),
    "tls": _Str("off", choices=TLS_MODES),
    "tls_cert": _Path(None),
    "tls_key": _Path(None),
    "tls_names": _TlsNames(),
    "state_dir": _Path("state"),
    "record_dir": _Path("recordings"),
    "event_log": _Path("events.jsonl"),
    "monitor_db": _Path("monitor.db"),
    "dashboard_password": _Secret(required=False, min_chars=TOKEN_MIN_CHARS),
    "probe_token": _Secret(required=False, min_chars=TOKEN_MIN_CHARS),
    "grace_s": _Float(GRACE_S_DEFAULT, 0, 86400, "seconds"),
    "dropout_ms": _Int(DROPOUT_MS_DEFAULT, 100, 60000, "milliseconds"),
    "low_throughput_share": _Float(
        LOW_THROUGHPUT_SHARE_DEFAULT, 0, 1, "share of the stream's bitrate", lo_exclusive=True
    ),
    "low_throughput_s": _Float(LOW_THROUGHPUT_S_DEFAULT, 0, 3600, "seconds", lo_exclusive=True),
    "max_message_bytes": _Int(4 * 1024 * 1024, 64 * 1024, 64 * 1024 * 1024, "bytes"),
}

OUTPUT_FIELDS: dict[str, _Field] = {
    "width": _Int(1280, 16, 3840, "pixels", even=True),
    "height": _Int(720, 16, 2160, "pixels", even=True),
    "fps": _Int(30, 1, 60, "frames per second"),
    "video_kbps": _Int(2500, 100, 20000, "kbit/s"),
    "audio_kbps": _Int(128, 32, 320, "kbit/s"),
    "audio_sample_rate": _Int(44100, 0, 0, "Hz", choices=AUDIO_SAMPLE_RATES_HZ),
    "keyframe_s": _Float(2.0, 0.5, 10, "seconds"),
    "x264_preset": _Str("veryfast", choices=X264_PRESETS),
}

STREAM_FIELDS: dict[str, _Field] = {
    "token": _Secret(required=True, min_chars=TOKEN_MIN_CHARS),
    "title": _Str(""),
    "buffer_ms": _Int(BUFFER_MS_DEFAULT, 0, 120000, "milliseconds"),
    "hold_s": _Float(HOLD_S_DEFAULT, 0, 86400, "seconds", lo_exclusive=True),
    "freeze_ms": _Int(FREEZE_MS_DEFAULT, 0, 60000, "milliseconds"),
    "slate_image": _Path(None, image=True),
    "record": _Bool(True),
    "destinations": _Raw([]),
}

DESTINATION_FIELDS: dict[str, _Field] = {
    "name": _Str(pattern=NAME_RE, valid=NAME_VALID + ", unique within the stream", required=True),
    "url": _Url(),
    "key": _Secret(required=False, min_chars=0),
    "queue_s": _Float(10.0, 0, 600, "seconds", lo_exclusive=True),
    "connect_timeout_s": _Float(5.0, 0, 120, "seconds", lo_exclusive=True),
    "io_timeout_s": _Float(10.0, 0, 300, "seconds", lo_exclusive=True),
    "retry_first_s": _Float(1.0, 0, 60, "seconds", lo_exclusive=True),
    "retry_max_s": _Float(5.0, 0, 600, "seconds", lo_exclusive=True),
    "ca_file": _Path(None),
    "tls_verify": _Bool(True),
}

TOP_FIELDS: dict[str, _Field] = {
    "relay": _Raw({}),
    "output": _Raw({}),
    "streams": _Raw({}),
}


class _Parser:
    def __init__(self, env: Mapping[str, str], base_dir: Path) -> None:
        self.env = env
        self.base_dir = base_dir
        self.problems: list[ConfigProblem] = []
        self.secrets: list[str] = []
        self.failed: set[str] = set()  # key paths already reported

    def problem(self, key_path: str, message: str) -> None:
        self.failed.add(key_path)
        self.problems.append(ConfigProblem(key_path, message))

    def resolve_path(self, value: str) -> Path:
        path = Path(value)
        with contextlib.suppress(RuntimeError):  # no home directory to expand "~" to
            path = path.expanduser()
        return path if path.is_absolute() else self.base_dir / path

    def table(
        self, value: object, key_path: str, fields: Mapping[str, _Field], what: str
    ) -> dict[str, Any]:
        """Check one TOML table against its fields; always returns a value for every field
        (the default where the value was missing or bad)."""
        # a default path is relative to the config's directory, like a written one
        out = {
            key: self.resolve_path(f.default) if isinstance(f, _Path) and f.default else f.default
            for key, f in fields.items()
        }
        if not isinstance(value, dict):
            self.problem(
                key_path,
                f"expected a table ({what}), got {_got(value)}; valid: a table with keys "
                f"{', '.join(fields)}",
            )
            return out

        def missing(key: str, path: str) -> Invalid | None:
            field = fields[key]
            return Invalid(f"is required; valid: {field.valid}", path) if field.required else None

        out.update(check_table(
            value, fields, key_path,
            check=lambda key, raw, path: fields[key].parse(raw, path, self),
            unknown=lambda key: self.unknown_key(key, key_path, fields),
            missing=missing,
            report=lambda problem: self.problem(problem.path, problem.problem),
        ))
        return out

    def unknown_key(self, key: object, key_path: str, fields: Mapping[str, _Field]) -> Invalid:
        hint = ";"
        if isinstance(key, str):
            close = difflib.get_close_matches(key, list(fields), n=1)
            if close:
                hint = f"; did you mean '{close[0]}'?"
        return Invalid(f"unknown key{hint} valid keys: {', '.join(fields)}", _join(key_path, key))

    # -- sections --------------------------------------------------------------------------

    def relay_settings(self, data: object) -> RelaySettings:
        top = self.table(data, "", TOP_FIELDS, "the whole config")
        relay = self.table(top["relay"], "relay", RELAY_FIELDS, "[relay]")
        tls = self.tls(relay)
        output = self.table(top["output"], "output", OUTPUT_FIELDS, "[output]")
        streams = self.streams(top["streams"])
        host, port = relay["listen"]
        return RelaySettings(
            host=host,
            port=port,
            tls=tls,
            state_dir=relay["state_dir"],
            record_dir=relay["record_dir"],
            event_log=relay["event_log"],
            monitor_db=relay["monitor_db"],
            dashboard_password=relay["dashboard_password"],
            probe_token=relay["probe_token"],
            grace_s=relay["grace_s"],
            dropout_ms=relay["dropout_ms"],
            low_throughput_share=relay["low_throughput_share"],
            low_throughput_s=relay["low_throughput_s"],
            max_message_bytes=relay["max_message_bytes"],
            output=OutputProfile(**output),
            streams=streams,
        )

    def tls(self, relay: dict[str, Any]) -> TlsSettings:
        mode = relay["tls"]
        if mode == "self-signed":
            return TlsSettings(mode=mode, names=relay["tls_names"] or ())
        if mode != "files":
            # cert and key paths are ignored unless tls = "files" (tls_names unless
            # "self-signed"), so that TLS can be switched off without deleting them
            return TlsSettings(mode=mode)
        paths: dict[str, Path | None] = {}
        for key in ("tls_cert", "tls_key"):
            key_path = f"relay.{key}"
            path = relay[key]
            paths[key] = path
            if key_path in self.failed:
                continue
            if path is None:
                self.problem(
                    key_path,
                    'is required when tls = "files"; valid: a path to an existing PEM file, '
                    'or set tls = "self-signed" or "off"',
                )
            elif not _is_file(path):
                self.problem(
                    key_path,
                    f"{_show(str(path))} does not exist or is not a file; valid: a path to an "
                    "existing PEM file, absolute or relative to the config file's directory",
                )
        return TlsSettings(mode=mode, cert=paths["tls_cert"], key=paths["tls_key"])

    def streams(self, value: object) -> tuple[StreamSettings, ...]:
        if not isinstance(value, dict):
            self.problem(
                "streams",
                f"expected a table of streams, got {_got(value)}; valid: one [streams.NAME] "
                "table per stream",
            )
            return ()
        out: list[StreamSettings] = []
        for name, body in value.items():
            key_path = _join("streams", name)
            if not isinstance(name, str) or not NAME_RE.fullmatch(name):
                self.problem(
                    key_path, f"{_show(str(name))} is not a valid stream name; valid: {NAME_VALID}"
                )
            fields = self.table(body, key_path, STREAM_FIELDS, f"[{key_path}]")
            destinations = self.destinations(fields.pop("destinations"), key_path)
            out.append(StreamSettings(name=str(name), destinations=destinations, **fields))
        return tuple(out)

    def destinations(self, value: object, stream_path: str) -> tuple[DestinationSettings, ...]:
        key_path = f"{stream_path}.destinations"
        if not isinstance(value, list):
            self.problem(
                key_path,
                f"expected an array of tables, got {_got(value)}; valid: one "
                f"[[{key_path}]] table per destination",
            )
            return ()
        out: list[DestinationSettings] = []
        first_index: dict[str, int] = {}
        for i, body in enumerate(value):
            item_path = f"{key_path}[{i}]"
            fields = self.table(body, item_path, DESTINATION_FIELDS, f"[[{key_path}]]")
            name = fields["name"]
            name_path = f"{item_path}.name"
            if name and name_path not in self.failed:
                if name in first_index:
                    self.problem(
                        name_path,
                        f"{_show(name)} is already used by {key_path}[{first_index[name]}]; "
                        f"valid: {NAME_VALID}, unique within the stream",
                    )
                else:
                    first_index[name] = i
            if (
                fields["retry_max_s"] < fields["retry_first_s"]
                and f"{item_path}.retry_max_s" not in self.failed
                and f"{item_path}.retry_first_s" not in self.failed
            ):
                self.problem(
                    f"{item_path}.retry_max_s",
                    f"{fields['retry_max_s']:g} is less than retry_first_s "
                    f"({fields['retry_first_s']:g}); valid: a number >= retry_first_s (seconds)",
                )
            self.destination_tls(fields, item_path)
            out.append(DestinationSettings(**fields))
        return tuple(out)

    def destination_tls(self, fields: dict[str, Any], item_path: str) -> None:
        """ca_file must be readable PEM certificates, and only where TLS checks it."""
        ca_path, ca_file = f"{item_path}.ca_file", fields["ca_file"]
        if ca_file is None or ca_path in self.failed:
            return
        url_path = f"{item_path}.url"
        if url_path not in self.failed and not fields["url"].startswith("rtmps://"):
            self.problem(ca_path, "is only used by rtmps:// URLs; valid: remove it, or use "
                         "an rtmps:// url")
        elif not fields["tls_verify"]:
            self.problem(ca_path, "is not used when tls_verify = false; valid: remove one")
        elif not _is_file(ca_file):
            self.problem(
                ca_path,
                f"{_show(str(ca_file))} does not exist or is not a file; valid: a PEM file of "
                "the certificate(s) to trust, absolute or relative to the config's directory",
            )
        else:
            try:
                client_ssl_context(ca_file)
            except (ssl.SSLError, OSError, ValueError) as e:
                self.problem(
                    ca_path,
                    f"{_show(str(ca_file))} holds no readable PEM certificate "
                    f"({_one_line(str(e))}); valid: a PEM file of the certificate(s) to trust",
                )


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _read_text(path: Path, source: str) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"file not found (looked for {path.absolute()})", source) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, not a TOML file", source) from None
    except PermissionError:
        raise ConfigError("cannot be read: permission denied", source) from None
    except OSError as e:
        raise ConfigError(f"cannot be read: {e.strerror or e}", source) from None
    try:
        return raw.decode("utf-8-sig")  # tolerate the BOM some Windows editors write
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"is not UTF-8 text (bad byte at offset {e.start}); save the file as UTF-8", source
        ) from None
