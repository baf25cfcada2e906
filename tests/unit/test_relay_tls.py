"""relay.tls: the self-signed certificate carries the names encoders connect with (the
configured ``tls_names``, or localhost, the loopback addresses, a non-wildcard listen host and
the machine's name), and is made again, with the same key, when those names change.

Each handshake below runs in memory (``ssl.MemoryBIO``): the client side is what
``steadycast encode --ca-file`` does (``ssl.create_default_context(cafile=...)``, the name
checked)."""

from __future__ import annotations

import ipaddress
import logging
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.settings import TlsSettings
from relay.tls import (
    certificate_names,
    default_tls_names,
    ensure_self_signed,
    server_ssl_context,
    valid_tls_name,
)

SELF_SIGNED = TlsSettings(mode="self-signed")


def san_of(cert: Path) -> set[str]:
    """The certificate's subjectAltName entries as strings, parsed with cryptography."""
    loaded = x509.load_pem_x509_certificate(cert.read_bytes())
    alt = loaded.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {*alt.get_values_for_type(x509.DNSName),
            *(str(a) for a in alt.get_values_for_type(x509.IPAddress))}


def handshake(server: ssl.SSLContext, cafile: Path, server_hostname: str) -> None:
    """A TLS handshake in memory, the client trusting only ``cafile`` and checking the name;
    raises ssl.SSLCertVerificationError when the certificate does not name it."""
    client = ssl.create_default_context(cafile=str(cafile))
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_hostname=server_hostname)
    s = server.wrap_bio(s_in, s_out, server_side=True)
    c_done = s_done = False
    for _ in range(20):
        for side, done in ((c, c_done), (s, s_done)):
            if done:
                continue
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
            else:
                if side is c:
                    c_done = True
                else:
                    s_done = True
            s_in.write(c_out.read())
            c_in.write(s_out.read())
        if c_done and s_done:
            return
    raise AssertionError("handshake did not finish")


def test_wildcard_listen_names_loopback_and_the_machine(tmp_path: Path) -> None:
    ctx = server_ssl_context(SELF_SIGNED, tmp_path, "0.0.0.0", machine_hostname="farm-relay")
    assert ctx is not None
    cert = tmp_path / "tls" / "relay-cert.pem"
    assert san_of(cert) == {"localhost", "127.0.0.1", "::1", "farm-relay"}
    handshake(ctx, cert, "127.0.0.1")  # the failure before: "IP address mismatch"
    handshake(ctx, cert, "::1")
    handshake(ctx, cert, "farm-relay")


def test_a_listen_address_is_named_too(tmp_path: Path) -> None:
    server_ssl_context(SELF_SIGNED, tmp_path, "192.0.2.10", machine_hostname="farm-relay")
    assert san_of(tmp_path / "tls" / "relay-cert.pem") == {
        "localhost", "127.0.0.1", "::1", "192.0.2.10", "farm-relay"}


def test_defaults_skip_a_wildcard_and_an_unusable_hostname() -> None:
    assert default_tls_names("[::]", "") == ("localhost", "127.0.0.1", "::1")
    assert default_tls_names("0.0.0.0", "bad_name") == ("localhost", "127.0.0.1", "::1")
    assert default_tls_names("localhost", "LOCALHOST") == ("localhost", "127.0.0.1", "::1")


def test_configured_names_are_exactly_what_the_certificate_carries(tmp_path: Path) -> None:
    tls = TlsSettings(mode="self-signed", names=("relay.example.org", "203.0.113.7", "::1"))
    ctx = server_ssl_context(tls, tmp_path, "0.0.0.0", machine_hostname="farm-relay")
    assert ctx is not None
    cert = tmp_path / "tls" / "relay-cert.pem"
    assert san_of(cert) == {"relay.example.org", "203.0.113.7", "::1"}
    handshake(ctx, cert, "203.0.113.7")
    handshake(ctx, cert, "relay.example.org")
    with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
        handshake(ctx, cert, "127.0.0.1")  # not among the configured names


def test_a_change_of_names_remakes_the_certificate_with_the_same_key(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cert, key = ensure_self_signed(tmp_path, ["localhost", "127.0.0.1"])
    first_cert, first_key = cert.read_bytes(), key.read_bytes()
    ensure_self_signed(tmp_path, ["127.0.0.1", "LOCALHOST."])  # same names, other spelling
    assert cert.read_bytes() == first_cert
    with caplog.at_level(logging.WARNING, logger="relay.tls"):
        ensure_self_signed(tmp_path, ["localhost", "127.0.0.1", "198.51.100.4"])
    assert san_of(cert) == {"localhost", "127.0.0.1", "198.51.100.4"}
    assert cert.read_bytes() != first_cert and key.read_bytes() == first_key
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    [line] = [r.getMessage() for r in caplog.records if "made again" in r.getMessage()]
    assert "198.51.100.4" in line and "--ca-file" in line, line


def test_an_unreadable_certificate_or_key_is_made_again(tmp_path: Path) -> None:
    cert, key = ensure_self_signed(tmp_path, ["localhost"])
    cert.write_text("not a certificate")
    ensure_self_signed(tmp_path, ["localhost"])
    assert san_of(cert) == {"localhost"}
    key.write_text("not a key")
    ensure_self_signed(tmp_path, ["localhost"])
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)  # a matching pair again


def test_certificate_names_normalize_spellings(tmp_path: Path) -> None:
    cert, _ = ensure_self_signed(tmp_path, ["Relay.Example.org", "0:0::1"])
    assert certificate_names(cert.read_bytes()) == {
        "relay.example.org", ipaddress.ip_address("::1")}


@pytest.mark.parametrize("name, ok", [
    ("relay.example.org", True), ("203.0.113.7", True), ("2001:db8::1", True),
    ("*.example.org", True), ("localhost", True), ("[::1]", False), ("10.0.0.300", False),
    ("relay example", False), ("", False), ("-bad.org", False), ("a" * 64, False),
    ("đồi-chè.vn", False),  # an IDN must be written in its xn-- form
])
def test_valid_tls_name(name: str, ok: bool) -> None:
    assert valid_tls_name(name) is ok


@settings(max_examples=300, deadline=None, derandomize=True)
@given(names=st.lists(st.text(alphabet="ab1.-:*[]é ", max_size=12)
                      | st.sampled_from(["::1", "127.0.0.1", "x.org", "*.x.org"]),
                      min_size=1, max_size=4))
def test_any_valid_names_make_a_certificate_that_carries_them(
        names: list[str], tmp_path_factory: pytest.TempPathFactory) -> None:
    wanted = [n for n in names if valid_tls_name(n)]
    if not wanted:
        return
    directory = tmp_path_factory.mktemp("tls")
    cert, _ = ensure_self_signed(directory, wanted)
    assert len(certificate_names(cert.read_bytes())) >= 1
