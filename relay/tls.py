"""TLS for the relay's HTTP port: given cert/key files, or a self-signed pair made once and kept."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import ssl
from pathlib import Path

from relay.settings import TlsSettings

log = logging.getLogger(__name__)

SELF_SIGNED_DAYS = 3650


def ensure_self_signed(directory: Path, hostname: str) -> tuple[Path, Path]:
    """Return (cert, key) under directory, generating them on first use."""
    cert_path, key_path = directory / "relay-cert.pem", directory / "relay-key.pem"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname or "steadycast-relay")])
    alt: list[x509.GeneralName] = [x509.DNSName("localhost")]
    try:
        alt.append(x509.IPAddress(ipaddress.ip_address(hostname)))
    except ValueError:
        if hostname:
            alt.append(x509.DNSName(hostname))
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=SELF_SIGNED_DAYS))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .sign(key, hashes.SHA256()))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    log.info("generated a self-signed TLS certificate at %s", cert_path)
    return cert_path, key_path


def server_ssl_context(tls: TlsSettings, state_dir: Path, hostname: str) -> ssl.SSLContext | None:
    if tls.mode == "off":
        return None
    if tls.mode == "self-signed":
        cert, key = ensure_self_signed(state_dir / "tls", hostname)
    else:
        assert tls.cert is not None and tls.key is not None
        cert, key = tls.cert, tls.key
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx
