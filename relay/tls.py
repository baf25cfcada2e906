"""TLS for the relay's HTTP port: given cert/key files, or a self-signed pair kept in
``state_dir/tls``.

Rules of the self-signed certificate:

- it names (subjectAltName, RFC 5280 §4.2.1.6) exactly the wanted names: ``[relay]
  tls_names`` when set, else ``default_tls_names`` (localhost, 127.0.0.1, ::1, the listen
  host unless it is a wildcard, and the machine's host name). A client checks the name it
  connected with against these (RFC 6125; Python's ``ssl`` matches IP addresses only against
  IP address entries, never against DNS names), so a relay listening on ``0.0.0.0`` must
  carry the addresses encoders use;
- it is made on first start and kept; it is made again (with the same key when the key
  file loads) when its names differ from the wanted ones or the file cannot be read, and
  that is logged, since encoders that trust the old copy (``--ca-file``) need the new one.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import re
import socket
import ssl
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from relay.settings import TlsSettings

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

log = logging.getLogger(__name__)

SELF_SIGNED_DAYS = 3650
CERT_FILE = "relay-cert.pem"
KEY_FILE = "relay-key.pem"
WILDCARD_HOSTS = ("", "0.0.0.0", "::")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
NUMERIC_RE = re.compile(r"[0-9.]+")
DNS_NAME_RE = re.compile(
    r"(?=.{1,253}\.?$)(?:\*\.)?[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)

Name = ipaddress.IPv4Address | ipaddress.IPv6Address | str  # an address, or a DNS name


def normalize_name(name: str) -> Name:
    """An IP address as an address object; a DNS name lower-cased without a final dot.
    Two spellings of one name (``::1`` and ``0::1``, ``Relay.Example.`` and
    ``relay.example``) normalize to the same value."""
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return name.lower().rstrip(".")


def default_tls_names(listen_host: str, machine_hostname: str) -> tuple[str, ...]:
    """localhost, 127.0.0.1, ::1, the listen host unless it is a wildcard, and the machine's
    host name (when it is a valid DNS name), without repeats, in that order."""
    wanted = [*LOOPBACK_NAMES]
    host = listen_host.strip("[]")
    if host not in WILDCARD_HOSTS:
        wanted.append(host)
    if valid_tls_name(machine_hostname):
        wanted.append(machine_hostname)
    return _unique(wanted)


def valid_tls_name(name: str) -> bool:
    """An IP address (v4 or v6, no brackets) or a DNS name (RFC 1123 labels of letters,
    digits and inner hyphens, 253 characters at most; a leftmost ``*`` label is a
    wildcard, RFC 6125 §6.4.3)."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        # "10.0.0.300" is a mistyped address, not a name
        return not NUMERIC_RE.fullmatch(name) and bool(DNS_NAME_RE.fullmatch(name))
    return True


def _unique(names: Iterable[str]) -> tuple[str, ...]:
    seen: set[Name] = set()
    out: list[str] = []
    for name in names:
        key = normalize_name(name)
        if key not in seen:
            seen.add(key)
            out.append(name)
    return tuple(out)


def certificate_names(cert_pem: bytes) -> frozenset[Name]:
    """The subjectAltName entries (DNS names and IP addresses) of a PEM certificate,
    normalized. Raises ValueError for a file that is no readable certificate."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset()
    names: set[Name] = {normalize_name(n) for n in alt.get_values_for_type(x509.DNSName)}
    names.update(a for a in alt.get_values_for_type(x509.IPAddress)
                 if isinstance(a, ipaddress.IPv4Address | ipaddress.IPv6Address))
    return frozenset(names)


def ensure_self_signed(directory: Path, names: Iterable[str]) -> tuple[Path, Path]:
    """Return (cert, key) under directory, naming exactly ``names``: made on first use, kept
    while its names stay the same, made again (same key if it loads) when they change."""
    cert_path, key_path = directory / CERT_FILE, directory / KEY_FILE
    wanted = _unique(names)
    if not wanted:
        raise ValueError("a self-signed certificate needs at least one name")
    want = frozenset(normalize_name(n) for n in wanted)
    key = _load_key(key_path)
    if key is not None and cert_path.exists():
        try:
            have = certificate_names(cert_path.read_bytes())
        except (OSError, ValueError) as exc:
            log.warning("the self-signed TLS certificate %s cannot be read (%s); making it "
                        "again", cert_path, exc)
        else:
            if have == want:
                return cert_path, key_path
            log.warning("the self-signed TLS certificate %s names %s, wanted %s: made again "
                        "with the same key; give encoders that use --ca-file the new copy",
                        cert_path, _show_names(have), ", ".join(wanted))
    elif key_path.exists():
        log.warning("the TLS key %s cannot be read; making a new key and certificate", key_path)
    _write_pair(cert_path, key_path, key, wanted)
    return cert_path, key_path


def _show_names(names: Iterable[Name]) -> str:
    return ", ".join(sorted(str(n) for n in names)) or "no names"


def _load_key(key_path: Path) -> EllipticCurvePrivateKey | None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    return key if isinstance(key, ec.EllipticCurvePrivateKey) else None


def _write_pair(cert_path: Path, key_path: Path, key: EllipticCurvePrivateKey | None,
                names: tuple[str, ...]) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    cert_path.parent.mkdir(parents=True, exist_ok=True)
    if key is None:
        key = ec.generate_private_key(ec.SECP256R1())
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    key_path.chmod(0o600)
    alt: list[x509.GeneralName] = []
    for name in names:
        value = normalize_name(name)
        alt.append(x509.DNSName(value) if isinstance(value, str) else x509.IPAddress(value))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "steadycast-relay")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=SELF_SIGNED_DAYS))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    log.info("made a self-signed TLS certificate at %s for %s", cert_path, ", ".join(names))


def server_ssl_context(tls: TlsSettings, state_dir: Path, listen_host: str,
                       machine_hostname: str | None = None) -> ssl.SSLContext | None:
    """The relay's server context, or None for ``tls = "off"``. ``machine_hostname``:
    the name for the default ``tls_names`` (default: ``socket.gethostname()``)."""
    if tls.mode == "off":
        return None
    if tls.mode == "self-signed":
        if tls.names:
            names = tls.names
        else:
            hostname = socket.gethostname() if machine_hostname is None else machine_hostname
            names = default_tls_names(listen_host, hostname)
        cert, key = ensure_self_signed(state_dir / "tls", names)
        if listen_host.strip("[]") in WILDCARD_HOSTS:
            log.info("listening on every address: the self-signed certificate %s names only "
                     "%s; encoders (--ca-file) must connect with one of these; to add the "
                     "address or name they use, list it in [relay] tls_names", cert,
                     ", ".join(names))
    else:
        assert tls.cert is not None and tls.key is not None
        cert, key = tls.cert, tls.key
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx
