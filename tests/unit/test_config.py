"""steadycast.config: loading, validation, secrets, paths, the shipped configs."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steadycast.config import (
    DESTINATION_FIELDS,
    OUTPUT_FIELDS,
    RELAY_FIELDS,
    STREAM_FIELDS,
    ConfigError,
    load_relay_config,
    parse_relay_config,
    resolve_secret,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "configs" / "relay.toml"
PNG_BYTES = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
TOKEN = "tok-SECRET-farm1-0123456789"
YT_KEY = "yt-SECRET-abcd-efgh-ijkl"
FB_KEY = "FB-SECRET-98765?s_bl=1&s_psm=1"
ENV = {"FARM1_TOKEN": TOKEN, "YT_KEY": YT_KEY, "FB_KEY": FB_KEY}

GOOD = """
[relay]
listen = "127.0.0.1:9000"

[streams.farm1]
token = "env:FARM1_TOKEN"
title = "Nông trại Bắc Hà"

[[streams.farm1.destinations]]
name = "facebook"
url = "rtmps://live-api-s.facebook.com:443/rtmp/"
key = "env:FB_KEY"

[[streams.farm1.destinations]]
name = "youtube"
url = "rtmp://a.rtmp.youtube.com/live2"
key = "env:YT_KEY"
"""


def write(tmp_path: Path, text: str, name: str = "relay.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Any:
    return load_relay_config(write(tmp_path, text), ENV if env is None else env)


def error_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text, env)
    return info.value


def stream(extra: str = "", dest: str = "") -> str:
    """A minimal valid config with one stream; `extra` lands in the stream table, `dest` in
    a destination table."""
    text = f'[streams.farm1]\ntoken = "env:FARM1_TOKEN"\n{extra}\n'
    if dest:
        text += f'[[streams.farm1.destinations]]\nname = "yt"\nurl = "rtmp://h/live2"\n{dest}\n'
    return text


# -- good configs -------------------------------------------------------------------------------


def test_good_config_builds_settings_with_env_secrets(tmp_path: Path) -> None:
    relay = load_text(tmp_path, GOOD)
    assert (relay.host, relay.port) == ("127.0.0.1", 9000)
    farm = relay.stream("farm1")
    assert farm is not None
    assert farm.token == TOKEN
    assert farm.title == "Nông trại Bắc Hà"
    assert [d.name for d in farm.destinations] == ["facebook", "youtube"]
    assert farm.destinations[1].publish_url == "rtmp://a.rtmp.youtube.com/live2/" + YT_KEY
    # a key with a query is registered whole and without its query (what servers log)
    assert set(relay.secrets()) == {TOKEN, YT_KEY, FB_KEY, FB_KEY.partition("?")[0]}


def test_example_config_loads_with_env_set() -> None:
    env = {"FARM1_TOKEN": TOKEN, "FARM1_FACEBOOK_KEY": FB_KEY, "FARM1_YOUTUBE_KEY": YT_KEY}
    relay = load_relay_config(EXAMPLE, env)
    farm = relay.stream("farm1")
    assert farm is not None and farm.token == TOKEN
    urls = {d.name: d.url for d in farm.destinations}
    assert urls == {
        "facebook": "rtmps://live-api-s.facebook.com:443/rtmp/",
        "youtube": "rtmp://a.rtmp.youtube.com/live2",
    }
    assert {d.key for d in farm.destinations} == {FB_KEY, YT_KEY}
    assert relay.state_dir == EXAMPLE.parent / "state"


def test_example_config_without_env_names_every_missing_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_relay_config(EXAMPLE, {})
    text = str(info.value)
    for name in ("FARM1_TOKEN", "FARM1_FACEBOOK_KEY", "FARM1_YOUTUBE_KEY"):
        assert name in text
    assert len(info.value.problems) == 3


def test_embedded_default_loads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    relay = load_relay_config(None, {})
    assert (relay.host, relay.port, relay.tls.mode) == ("127.0.0.1", 8080, "off")
    assert [s.name for s in relay.streams] == ["demo"]
    demo = relay.streams[0]
    assert demo.token == "demo-token-change-me"
    assert demo.title == "steadycast demo"
    assert demo.destinations == ()
    assert demo.record
    out = relay.output
    assert (out.width, out.height, out.fps, out.video_kbps) == (1280, 720, 30, 2500)
    assert relay.state_dir == tmp_path / "state"  # relative to the working directory


def test_embedded_default_takes_demo_token_from_env() -> None:
    relay = load_relay_config(None, {"STEADYCAST_DEMO_TOKEN": "from-the-env-123"})
    assert relay.streams[0].token == "from-the-env-123"


def test_embedded_default_reads_os_environ_when_env_not_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STEADYCAST_DEMO_TOKEN", "os-environ-token")
    assert load_relay_config(None).streams[0].token == "os-environ-token"


def test_empty_config_is_a_relay_with_no_streams(tmp_path: Path) -> None:
    relay = load_text(tmp_path, "")
    assert relay.streams == ()
    assert (relay.host, relay.port) == ("127.0.0.1", 8080)


def test_dropout_thresholds_default_and_set(tmp_path: Path) -> None:
    relay = load_text(tmp_path, "")
    assert (relay.dropout_ms, relay.low_throughput_share, relay.low_throughput_s) == (500, 0.5, 5)
    relay = load_text(
        tmp_path, "[relay]\ndropout_ms = 800\nlow_throughput_share = 0.3\nlow_throughput_s = 10\n"
    )
    assert (relay.dropout_ms, relay.low_throughput_share, relay.low_throughput_s) == (800, 0.3, 10)
    assert isinstance(relay.low_throughput_s, float)


def test_ipv6_listen_address(tmp_path: Path) -> None:
    relay = load_text(tmp_path, '[relay]\nlisten = "[::1]:8443"\n')
    assert (relay.host, relay.port) == ("::1", 8443)


def test_ints_accepted_where_floats_expected(tmp_path: Path) -> None:
    relay = load_text(tmp_path, "[output]\nkeyframe_s = 3\n" + stream("hold_s = 30"))
    assert relay.output.keyframe_s == 3.0 and isinstance(relay.output.keyframe_s, float)
    assert relay.streams[0].hold_s == 30.0


def test_utf8_bom_is_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + b'[relay]\nlisten = "127.0.0.1:9001"\n')
    assert load_relay_config(path, {}).port == 9001


# -- paths --------------------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_directory(tmp_path: Path) -> None:
    sub = tmp_path / "site"
    sub.mkdir()
    (sub / "slate.png").write_bytes(PNG_BYTES)
    (sub / "cert.pem").write_text("cert")
    (sub / "key.pem").write_text("key")
    text = (
        '[relay]\ntls = "files"\ntls_cert = "cert.pem"\ntls_key = "key.pem"\n'
        'state_dir = "st"\nrecord_dir = "/abs/rec"\nevent_log = "logs/ev.jsonl"\n'
        + stream('slate_image = "slate.png"')
    )
    relay = load_relay_config(write(sub, text), ENV)
    assert relay.tls.cert == sub / "cert.pem"
    assert relay.tls.key == sub / "key.pem"
    assert relay.state_dir == sub / "st"
    assert relay.record_dir == Path("/abs/rec")
    assert relay.event_log == sub / "logs" / "ev.jsonl"
    assert relay.streams[0].slate_image == sub / "slate.png"


def test_default_paths_resolve_against_the_config_directory(tmp_path: Path) -> None:
    relay = load_relay_config(write(tmp_path, ""), {})
    assert relay.monitor_db == tmp_path / "monitor.db"
    assert relay.event_log == tmp_path / "events.jsonl"
    assert relay.state_dir == tmp_path / "state"


def test_parse_resolves_paths_against_base_dir(tmp_path: Path) -> None:
    relay = parse_relay_config({"relay": {"state_dir": "s"}}, "x", {}, tmp_path)
    assert relay.state_dir == tmp_path / "s"


def test_tls_files_requires_existing_cert_and_key(tmp_path: Path) -> None:
    err = error_of(tmp_path, '[relay]\ntls = "files"\ntls_cert = "missing.pem"\n')
    text = str(err)
    assert "relay.tls_cert" in text and "missing.pem" in text and "does not exist" in text
    assert 'relay.tls_key: is required when tls = "files"' in text


def test_tls_paths_are_ignored_unless_mode_is_files(tmp_path: Path) -> None:
    relay = load_text(tmp_path, '[relay]\ntls = "off"\ntls_cert = "missing.pem"\n')
    assert relay.tls.mode == "off" and relay.tls.cert is None


def test_tls_names_are_kept_for_a_self_signed_relay(tmp_path: Path) -> None:
    relay = load_text(tmp_path, '[relay]\nlisten = "0.0.0.0:8443"\ntls = "self-signed"\n'
                      'tls_names = ["relay.example.org", "203.0.113.7", "2001:db8::1"]\n')
    assert relay.tls.names == ("relay.example.org", "203.0.113.7", "2001:db8::1")
    assert load_text(tmp_path, '[relay]\ntls = "self-signed"\n').tls.names == ()  # defaults
    ignored = load_text(tmp_path, '[relay]\ntls = "off"\ntls_names = ["localhost"]\n')
    assert ignored.tls.names == ()


@pytest.mark.parametrize("value, why", [
    ('"localhost"', 'expected an array, got string "localhost"'),
    ("[]", "has 0 names"),
    ('["localhost", 5]', "[1]: expected a string, got integer 5"),
    ('["[::1]"]', '[0]: "[::1]" is not a DNS name or an IP address (write IPv6 without'),
    ('["10.0.0.300"]', '[0]: "10.0.0.300" is not a DNS name or an IP address'),
    ('["relay example.org"]', "is not a DNS name or an IP address"),
    ('["::1", "0::1"]', '[1]: "0::1" repeats [0]'),
    ('["Relay.org", "relay.org."]', '[1]: "relay.org." repeats [0]'),
])
def test_bad_tls_names_are_named(tmp_path: Path, value: str, why: str) -> None:
    err = error_of(tmp_path, f'[relay]\ntls = "self-signed"\ntls_names = {value}\n')
    [line] = str(err).splitlines()
    assert "relay.tls_names: " in line and why in line, line
    assert "valid: an array of 1 to 100 DNS names or IP addresses" in line, line


def test_slate_image_must_exist_and_be_an_image(tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_text("not an image")
    err = error_of(tmp_path, stream('slate_image = "nope.png"'))
    assert "streams.farm1.slate_image" in str(err) and "does not exist" in str(err)
    assert "PNG or JPEG" in str(err)
    err = error_of(tmp_path, stream('slate_image = "notes.png"'))
    assert "is not a PNG or JPEG image" in str(err)


# -- errors: file level -------------------------------------------------------------------------


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as info:
        load_relay_config(path, {})
    assert str(path) in str(info.value) and "not found" in str(info.value)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_relay_config(tmp_path, {})


def test_invalid_toml_reports_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, '[relay]\nlisten = "127.0.0.1:8080"\ngrace_s = = 5\n')
    with pytest.raises(ConfigError) as info:
        load_relay_config(path, {})
    text = str(info.value)
    assert text.startswith(str(path) + ": invalid TOML")
    assert "line 3" in text and "column" in text


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('title = "Nông"'.encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_relay_config(path, {})


# -- errors: keys, types, ranges ----------------------------------------------------------------


def test_unknown_key_suggests_the_close_one_and_lists_valid_keys(tmp_path: Path) -> None:
    err = error_of(tmp_path, stream("bufer_ms = 3000"))
    line = str(err)
    assert "streams.farm1.bufer_ms: unknown key; did you mean 'buffer_ms'?" in line
    for key in STREAM_FIELDS:
        assert key in line


@pytest.mark.parametrize(
    ("text", "key_path", "suggestion"),
    [
        ("[relays]\n", "relays", "relay"),
        ("[output]\nframerate = 30\n", "output.framerate", None),
        ("[output]\nvideo_kbp = 30\n", "output.video_kbp", "video_kbps"),
        ('[relay]\nlisten_on = "x"\n', "relay.listen_on", "listen"),
        (stream(dest="keys = 'x'"), "streams.farm1.destinations[0].keys", "key"),
    ],
)
def test_unknown_keys_everywhere(
    tmp_path: Path, text: str, key_path: str, suggestion: str | None
) -> None:
    err = error_of(tmp_path, text)
    line = str(err)
    assert f"{key_path}: unknown key" in line
    assert "valid keys:" in line
    if suggestion:
        assert f"did you mean '{suggestion}'?" in line
    else:
        assert "did you mean" not in line


@pytest.mark.parametrize(
    ("snippet", "key_path", "shown", "valid"),
    [
        ("[output]\nfps = true\n", "output.fps", "boolean true", "an integer from 1 to 60"),
        ("[output]\nfps = 29.97\n", "output.fps", "float 29.97", "an integer from 1 to 60"),
        ('[output]\nwidth = "1280"\n', "output.width", 'string "1280"', "even integer"),
        ("[output]\nkeyframe_s = false\n", "output.keyframe_s", "boolean false", "a number"),
        ("[relay]\ngrace_s = [1]\n", "relay.grace_s", "an array", "a number"),
        ("[relay]\nlisten = 8080\n", "relay.listen", "integer 8080", "host:port"),
        ("relay = 5\n", "relay", "integer 5", "a table with keys listen"),
        ("streams = 5\n", "streams", "integer 5", "[streams.NAME]"),
        (stream("record = 1"), "streams.farm1.record", "integer 1", "true or false"),
        (
            stream() + "[streams.farm1.destinations]\nname='x'\n",
            "streams.farm1.destinations",
            "a table",
            "[[streams.farm1.destinations]]",
        ),
    ],
)
def test_wrong_types(tmp_path: Path, snippet: str, key_path: str, shown: str, valid: str) -> None:
    text = str(error_of(tmp_path, snippet))
    assert f"{key_path}: expected" in text
    assert f"got {shown}" in text
    assert valid in text


@pytest.mark.parametrize(
    ("snippet", "key_path", "value", "valid"),
    [
        ("[output]\nwidth = 1281\n", "output.width", "1281", "even integer from 16 to 3840"),
        ("[output]\nwidth = 3842\n", "output.width", "3842", "even integer from 16 to 3840"),
        ("[output]\nheight = 2162\n", "output.height", "2162", "from 16 to 2160"),
        ("[output]\nheight = 8\n", "output.height", "8", "from 16 to 2160"),
        ("[output]\nfps = 0\n", "output.fps", "0", "from 1 to 60"),
        ("[output]\nfps = 61\n", "output.fps", "61", "from 1 to 60"),
        ("[output]\nvideo_kbps = 99\n", "output.video_kbps", "99", "from 100 to 20000"),
        ("[output]\nvideo_kbps = 20001\n", "output.video_kbps", "20001", "from 100 to 20000"),
        ("[output]\naudio_kbps = 16\n", "output.audio_kbps", "16", "from 32 to 320"),
        ("[output]\naudio_kbps = 321\n", "output.audio_kbps", "321", "from 32 to 320"),
        (
            "[output]\naudio_sample_rate = 22050\n",
            "output.audio_sample_rate",
            "22050",
            "one of 44100, 48000",
        ),
        ("[output]\nkeyframe_s = 0.4\n", "output.keyframe_s", "0.4", "from 0.5 to 10"),
        ("[output]\nkeyframe_s = 11\n", "output.keyframe_s", "11", "from 0.5 to 10"),
        ("[output]\nkeyframe_s = nan\n", "output.keyframe_s", "nan", "from 0.5 to 10"),
        ("[output]\nkeyframe_s = inf\n", "output.keyframe_s", "inf", "from 0.5 to 10"),
        (
            '[output]\nx264_preset = "turbo"\n',
            "output.x264_preset",
            '"turbo"',
            '"ultrafast", "superfast", "veryfast"',
        ),
        ('[relay]\ntls = "on"\n', "relay.tls", '"on"', '"off", "self-signed", "files"'),
        ('[relay]\nlisten = "127.0.0.1:0"\n', "relay.listen", '"127.0.0.1:0"', "1..65535"),
        ('[relay]\nlisten = "127.0.0.1:65536"\n', "relay.listen", "65536", "1..65535"),
        ('[relay]\nlisten = "localhost"\n', "relay.listen", '"localhost"', "host:port"),
        ('[relay]\nlisten = "::1:8080"\n', "relay.listen", "brackets", "[::1]:8080"),
        ('[relay]\nlisten = "[::zz]:8080"\n', "relay.listen", "IPv6", "[::1]:8080"),
        ('[relay]\nlisten = "999.1.1.1:80"\n', "relay.listen", '"999.1.1.1"', "host:port"),
        ('[relay]\nlisten = ":8080"\n', "relay.listen", '":8080"', "host:port"),
        ('[relay]\nstate_dir = ""\n', "relay.state_dir", "must not be empty", "file path"),
        ("[relay]\ngrace_s = -1\n", "relay.grace_s", "-1", "from 0 to 86400"),
        ("[relay]\nmax_message_bytes = 10\n", "relay.max_message_bytes", "10", "from 65536"),
        ("[relay]\ndropout_ms = 50\n", "relay.dropout_ms", "50", "from 100 to 60000"),
        (
            "[relay]\nlow_throughput_share = 0\n",
            "relay.low_throughput_share",
            "0",
            "greater than 0 and at most 1",
        ),
        (
            "[relay]\nlow_throughput_share = 1.5\n",
            "relay.low_throughput_share",
            "1.5",
            "greater than 0 and at most 1",
        ),
        ("[relay]\nlow_throughput_s = 0\n", "relay.low_throughput_s", "0", "greater than 0"),
        (stream("buffer_ms = -1"), "streams.farm1.buffer_ms", "-1", "from 0 to 120000"),
        (stream("buffer_ms = 120001"), "streams.farm1.buffer_ms", "120001", "0 to 120000"),
        (stream("hold_s = 0"), "streams.farm1.hold_s", "0", "greater than 0 and at most 86400"),
        (stream("hold_s = 86401"), "streams.farm1.hold_s", "86401", "at most 86400"),
        (stream("freeze_ms = -5"), "streams.farm1.freeze_ms", "-5", "from 0 to 60000"),
        (
            stream(dest="queue_s = 0"),
            "streams.farm1.destinations[0].queue_s",
            "0",
            "greater than 0",
        ),
        (
            stream(dest="retry_first_s = 3\nretry_max_s = 2"),
            "streams.farm1.destinations[0].retry_max_s",
            "2 is less than retry_first_s (3)",
            ">= retry_first_s",
        ),
    ],
)
def test_out_of_range_values(
    tmp_path: Path, snippet: str, key_path: str, value: str, valid: str
) -> None:
    err = error_of(tmp_path, snippet)
    assert len(err.problems) == 1, str(err)
    text = str(err)
    assert f": {key_path}: " in text
    assert value in text
    assert "valid: " in text and valid in text


def test_stream_and_destination_names(tmp_path: Path) -> None:
    text = (
        '[streams."farm 1"]\ntoken = "env:FARM1_TOKEN"\n'
        '[[streams."farm 1".destinations]]\nname = "you tube"\nurl = "rtmp://h/a"\n'
    )
    err = str(error_of(tmp_path, text))
    assert 'streams."farm 1": "farm 1" is not a valid stream name; valid: 1 to 64' in err
    assert 'streams."farm 1".destinations[0].name: "you tube" is not allowed' in err


def test_duplicate_destination_names(tmp_path: Path) -> None:
    text = (
        stream(dest="# first") + '[[streams.farm1.destinations]]\nname = "yt"\nurl = "rtmp://h/b"\n'
    )
    err = str(error_of(tmp_path, text))
    assert "streams.farm1.destinations[1].name" in err
    assert '"yt" is already used by streams.farm1.destinations[0]' in err
    assert "unique within the stream" in err


def test_required_keys(tmp_path: Path) -> None:
    text = '[streams.farm1]\ntitle = "x"\n[[streams.farm1.destinations]]\nkey = "k"\n'
    err = error_of(tmp_path, text)
    paths = {p.key_path for p in err.problems}
    assert paths == {
        "streams.farm1.token",
        "streams.farm1.destinations[0].name",
        "streams.farm1.destinations[0].url",
    }
    assert all("is required; valid:" in p.message for p in err.problems)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://a.rtmp.youtube.com/live2", 'has scheme "http"'),
        ("a.rtmp.youtube.com/live2", "has no scheme"),
        ("rtmp:///live2", "has no host"),
        ("rtmp://[::1/live2", "is not a valid URL"),
        ("rtmp://host:99999/live2", "is not a valid URL"),
        ("rtmp://host/live 2", "contains spaces"),
        ("rtmp://host/", "has no application"),
    ],
)
def test_bad_destination_urls(tmp_path: Path, url: str, why: str) -> None:
    err = str(error_of(tmp_path, stream() + _dest(url)))
    assert "streams.farm1.destinations[0].url: " in err
    assert why in err
    assert "valid: an rtmp:// or rtmps:// URL" in err


def test_url_with_credentials_is_rejected_and_masked(tmp_path: Path) -> None:
    err = str(error_of(tmp_path, stream() + _dest("rtmp://bob:hunter2pass@host/live2")))
    assert "embeds credentials" in err and "put the stream key in 'key'" in err
    assert "hunter2pass" not in err and "bob" not in err
    assert '"rtmp://****@host/live2"' in err


def test_bad_url_does_not_show_a_key_in_its_path(tmp_path: Path) -> None:
    err = str(error_of(tmp_path, stream() + _dest("http://a.rtmp.youtube.com/live2/" + YT_KEY)))
    assert YT_KEY not in err
    assert "http://a.rtmp.youtube.com/live2/****" in err


def test_key_inside_the_url_is_a_secret_and_never_shown(tmp_path: Path) -> None:
    relay = load_text(tmp_path, stream() + _dest(f"rtmp://h:1935/live2/{YT_KEY}") + 'key = ""\n')
    (d,) = relay.stream("farm1").destinations
    assert d.shown_url == "rtmp://h:1935/live2/****"
    assert YT_KEY in relay.secrets()
    assert YT_KEY not in repr(d)


def _rtmps(extra: str) -> str:
    return stream() + _dest("rtmps://h/app") + extra


def test_destination_tls_keys(tmp_path: Path) -> None:
    from harness.nginx_platform import make_self_signed_cert

    make_self_signed_cert(tmp_path / "ca.pem", tmp_path / "ca.key")
    (d,) = load_text(tmp_path, _rtmps('ca_file = "ca.pem"\n')).stream("farm1").destinations
    assert (d.ca_file, d.tls_verify) == (tmp_path / "ca.pem", True)
    (d,) = load_text(tmp_path, _rtmps("tls_verify = false\n")).stream("farm1").destinations
    assert (d.ca_file, d.tls_verify) == (None, False)
    (tmp_path / "junk.pem").write_text("not a certificate")
    for extra, why in [
        ('ca_file = "missing.pem"\n', 'missing.pem" does not exist'),
        ('ca_file = "junk.pem"\n', "holds no readable PEM certificate"),
        ('ca_file = "ca.pem"\ntls_verify = false\n', "is not used when tls_verify = false"),
        ('tls_verify = "no"\n', "tls_verify"),
    ]:
        err = str(error_of(tmp_path, _rtmps(extra)))
        assert "streams.farm1.destinations[0]." in err and why in err, err
    err = str(error_of(tmp_path, stream() + _dest("rtmp://h/app") + 'ca_file = "ca.pem"\n'))
    assert "destinations[0].ca_file: is only used by rtmps:// URLs" in err


def _dest(url: str) -> str:
    return f'[[streams.farm1.destinations]]\nname = "d"\nurl = "{url}"\n'


def test_all_errors_reported_together_one_per_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[output]\nfps = 0\nwidth = 3\n[relay]\ntls = 'x'\n"
        + stream("buffr_ms = 1", dest='connect_timeout_s = "5"'),
    )
    with pytest.raises(ConfigError) as info:
        load_relay_config(path, {})
    lines = str(info.value).splitlines()
    assert len(lines) == len(info.value.problems) == 6
    assert all(line.startswith(f"{path}: ") for line in lines)
    paths = [p.key_path for p in info.value.problems]
    assert set(paths) == {
        "relay.tls",
        "output.width",
        "output.fps",
        "streams.farm1.token",
        "streams.farm1.buffr_ms",
        "streams.farm1.destinations[0].connect_timeout_s",
    }


# -- secrets ------------------------------------------------------------------------------------


def test_resolve_secret_literal_env_and_fallback() -> None:
    assert resolve_secret("plain-literal", "k", {}) == "plain-literal"
    assert resolve_secret("env:A", "k", {"A": "va"}) == "va"
    assert resolve_secret("env:A:-fb", "k", {}) == "fb"
    assert resolve_secret("env:A:-fb", "k", {"A": ""}) == "fb"
    assert resolve_secret("env:A:-fb", "k", {"A": "va"}) == "va"
    assert resolve_secret("env:A:-", "k", {}) == ""


def test_resolve_secret_unset_or_empty_names_the_variable() -> None:
    for env in ({}, {"YT_KEY": ""}):
        with pytest.raises(ConfigError) as info:
            resolve_secret("env:YT_KEY", "streams.a.destinations[0].key", env)
        text = str(info.value)
        assert text.startswith("streams.a.destinations[0].key: environment variable YT_KEY")
        assert "not set or is empty" in text


def test_resolve_secret_rejects_a_malformed_reference() -> None:
    with pytest.raises(ConfigError, match="not a valid environment reference"):
        resolve_secret("env:1BAD", "k", {})


def test_short_token_is_masked(tmp_path: Path) -> None:
    err = str(error_of(tmp_path, '[streams.a]\ntoken = "s3cr3t"\n'))
    assert "streams.a.token: **** is too short (6 characters)" in err
    assert "s3cr3t" not in err
    assert "at least 8 characters" in err


def test_secret_with_whitespace_is_masked(tmp_path: Path) -> None:
    secret = "has a space in the middle"
    err = str(error_of(tmp_path, "[streams.a]\ntoken = 'env:T'\n", {"T": secret}))
    assert "contains spaces" in err and secret not in err and "****ddle" in err


def test_wrong_type_secret_is_masked(tmp_path: Path) -> None:
    err = str(error_of(tmp_path, "[streams.a]\ntoken = 123456789012345\n"))
    assert "123456789012345" not in err
    assert "expected a string, got integer ****2345" in err


def test_secrets_never_appear_in_messages_of_a_broken_config(tmp_path: Path) -> None:
    text = (
        "[relay]\ngrace_s = 'x'\n"
        f'[streams.farm1]\ntoken = "{TOKEN}"\nbuffer_ms = -1\n'
        f'[[streams.farm1.destinations]]\nname = "d"\nurl = "http://h/app/{YT_KEY}"\n'
        f'key = "{FB_KEY}"\nqueue_s = 0\n'
        f'[streams.farm2]\ntoken = "{TOKEN[:5]}"\n'
    )
    err = str(error_of(tmp_path, text, {}))
    assert len(err.splitlines()) == 5
    for secret in (TOKEN, YT_KEY, FB_KEY, TOKEN[:5]):
        assert secret not in err


SECRET_ALPHABET = string.ascii_letters + string.digits + "-_.~?&="


@settings(max_examples=100, deadline=None)
@given(
    token=st.text(SECRET_ALPHABET, min_size=12, max_size=40).map(lambda s: "Zq" + s),
    key=st.text(SECRET_ALPHABET, min_size=12, max_size=40).map(lambda s: "Xk" + s),
    from_env=st.booleans(),
    bad_output=st.sampled_from([{"fps": 0}, {"fps": "x"}, {"bogus": 1}, {"width": 3}]),
)
def test_secrets_never_in_messages_property(
    token: str, key: str, from_env: bool, bad_output: dict[str, Any]
) -> None:
    env = {"TOK": token, "KEY": key} if from_env else {}
    destination = {"name": "d", "url": f"ftp://h/app/{key}", "key": "env:KEY" if from_env else key}
    data: dict[str, Any] = {
        "output": bad_output,
        "streams": {
            "s": {
                "token": "env:TOK" if from_env else token,
                # a secret pasted under a non-secret key: caught by the scrubbing backstop
                "title": 5,
                "buffer_ms": token,
                "destinations": [destination],
            }
        },
    }
    with pytest.raises(ConfigError) as info:
        parse_relay_config(data, "t.toml", env, Path("/nonexistent"))
    text = str(info.value)
    assert token not in text and key not in text


# -- junk in, ConfigError out -------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["env:X", "env:", "rtmp://h/a", "rtmp://u:p@h", "", "[::1]:80", "\x00"])
    | st.dates()
)
junk = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def table_of(fields: dict[str, Any], extra: st.SearchStrategy[Any] = junk) -> Any:
    keys = st.sampled_from([*fields, "bogus"]) | st.text(max_size=8)
    return st.dictionaries(keys, extra, max_size=len(fields) + 1)


destination_junk = table_of(DESTINATION_FIELDS)
stream_junk = st.one_of(
    table_of(STREAM_FIELDS),
    table_of(STREAM_FIELDS, junk | st.lists(destination_junk, max_size=3)),
    junk,
)
config_junk = st.one_of(
    junk,
    st.fixed_dictionaries(
        {},
        optional={
            "relay": table_of(RELAY_FIELDS) | junk,
            "output": table_of(OUTPUT_FIELDS) | junk,
            "streams": st.dictionaries(st.text(max_size=10), stream_junk, max_size=3) | junk,
            "bogus": junk,
        },
    ),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=config_junk, env=st.dictionaries(st.sampled_from(["X", "TOK"]), st.text(max_size=12)))
def test_junk_raises_only_config_error(data: Any, env: dict[str, str]) -> None:
    try:
        relay = parse_relay_config(data, "junk.toml", env, Path("/nonexistent-base"))
    except ConfigError as e:
        assert e.problems
        assert all(line.startswith("junk.toml: ") for line in str(e).splitlines())
    else:
        assert relay.port >= 1
