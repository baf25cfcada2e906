"""How a client of the relay (``steadycast encode``, ``steadycast probe``) checks the relay's
TLS certificate, and the one line it says when the check fails.

Three ways, one per option: the system's CA store (the default: a relay with a certificate
from a public CA, e.g. Let's Encrypt), only the certificate in ``--ca-file`` (a relay with
``tls = "self-signed"``: a copy of its ``state_dir/tls/relay-cert.pem``), or no check
(``--insecure``). In the first two the name in the relay URL must be among the
certificate's names (RFC 6125, as Python's ``ssl`` checks it): a certificate that does not
verify is not retried (``RelayNotTrusted``).
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Protocol

import aiohttp

# OpenSSL's verify results for a certificate that does not name the host (x509_vfy.h)
NAME_MISMATCH_CODES = (62, 64)  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH


class RelayNotTrusted(Exception):
    """The relay's TLS certificate did not verify: retrying will not help."""


class RelayTrust(Protocol):
    """The settings of a client that talks to the relay over TLS."""

    @property
    def verify_tls(self) -> bool: ...  # False: --insecure

    @property
    def ca_file(self) -> Path | None: ...  # --ca-file


def tls_context(settings: RelayTrust) -> ssl.SSLContext | bool:
    """How to check the relay's certificate: the system's CA store (True), the --ca-file
    only, or not at all (False, --insecure). A bad --ca-file raises OSError (ssl.SSLError
    for a file that holds no certificate)."""
    if not settings.verify_tls:
        return False
    if settings.ca_file is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(settings.ca_file))
    except OSError as exc:  # ssl.SSLError too
        reason = exc.strerror or getattr(exc, "reason", None) or str(exc)
        raise OSError(f"--ca-file {str(settings.ca_file)!r}: cannot read a certificate from "
                      f"it ({reason})") from exc


def untrusted_reason(exc: aiohttp.ClientConnectorCertificateError, with_ca_file: bool) -> str:
    """The refusal line for a relay whose certificate did not verify."""
    cert = exc.certificate_error
    reason = getattr(cert, "verify_message", None) or getattr(cert, "reason", None) or str(cert)
    if with_ca_file and getattr(cert, "verify_code", None) in NAME_MISMATCH_CODES:
        hint = (f"the certificate does not name {exc.host!r}: connect with a name it carries, "
                f"or add {exc.host!r} to the relay's [relay] tls_names (the relay then makes "
                "its certificate again: copy the new state_dir/tls/relay-cert.pem)")
    elif with_ca_file:
        hint = "the certificate given with --ca-file did not match it"
    else:
        hint = ("if it is your own relay with its self-signed certificate, give that "
                "certificate with --ca-file (the relay's state_dir/tls/relay-cert.pem) or run "
                "again with --insecure")
    return (f"cannot trust the relay {exc.host}:{exc.port}: its TLS certificate did not "
            f"verify ({reason}); {hint}")
