"""Throttling of wrong credentials per client address, without I/O and without a clock.

Used by every endpoint that checks a secret: the ingest's publish token, the dashboard's
password, the connection check's tokens (relay/app.py, relay/web/dashboard.py, relay/web/probe.py).
The handlers ask :meth:`CredentialThrottle.allow` before they look at the credential, and
report the outcome with :meth:`~CredentialThrottle.failed` or
:meth:`~CredentialThrottle.succeeded`; ``now`` (seconds, any monotonic origin) always comes
in as an argument.

The policy (the usual one for online guessing, e.g. OWASP's Authentication Cheat Sheet,
"Login Throttling"; NIST SP 800-63B §5.2.2 "Rate Limiting"):

- ``FREE_FAILURES`` wrong credentials from one address cost nothing (a person mistyping);
- each failure after those locks the address out for ``FIRST_LOCKOUT_S`` doubled per extra
  failure (1, 2, 4, 8, ... s), capped at ``MAX_LOCKOUT_S``;
- while locked out, *every* attempt from that address is refused (HTTP 429 with
  ``Retry-After``) without the credential being checked, so that no answer tells a guess
  apart; such refused attempts do not count as failures and do not extend the lockout;
- failures are forgiven at one per ``DECAY_S`` without a new one, so an address that stops
  guessing is back to free tries after a while; a success forgets the address at once;
- other addresses are never affected; an IPv6 address counts by its /64 (one customer's
  prefix), an IPv4-mapped IPv6 address as the IPv4 address;
- memory is bounded: at most ``max_peers`` addresses are tracked; when a new one comes, the
  one whose record changed longest ago is forgotten.

Invariant: :meth:`allow` returns ``None`` or a positive number of seconds; an address never
seen, or last seen succeeding, is always allowed.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from dataclasses import dataclass

FREE_FAILURES = 5
FIRST_LOCKOUT_S = 1.0
MAX_LOCKOUT_S = 60.0
DECAY_S = 60.0  # one failure forgiven per this many seconds without a new one
MAX_TRACKED_PEERS = 10_000  # about 100 bytes each: a megabyte at most
IPV6_PREFIX_BITS = 64


def peer_key(peer: str) -> str:
    """The address a throttle counts by: IPv4 as is, IPv6 by its /64, anything else as is."""
    try:
        address = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return peer
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX_BITS), strict=False))
    return str(address)


def lockout_s(failures: float, free_failures: int = FREE_FAILURES,
              first_lockout_s: float = FIRST_LOCKOUT_S,
              max_lockout_s: float = MAX_LOCKOUT_S) -> float:
    """How long ``failures`` (possibly decayed, so fractional) lock an address out: 0 up to
    ``free_failures``, then ``first_lockout_s`` doubled per further failure, capped."""
    excess = math.ceil(failures - free_failures - 1e-9)
    if excess <= 0:
        return 0.0
    return min(max_lockout_s, first_lockout_s * 2.0 ** min(excess - 1, 62))


@dataclass
class _Record:
    failures: float
    updated_s: float
    locked_until_s: float


class CredentialThrottle:
    """Wrong credentials per client address; see the module docstring for the policy."""

    def __init__(self, *, free_failures: int = FREE_FAILURES,
                 first_lockout_s: float = FIRST_LOCKOUT_S,
                 max_lockout_s: float = MAX_LOCKOUT_S, decay_s: float = DECAY_S,
                 max_peers: int = MAX_TRACKED_PEERS) -> None:
        if free_failures < 0 or first_lockout_s <= 0 or max_lockout_s < first_lockout_s:
            raise ValueError("need free_failures >= 0 and 0 < first_lockout_s <= max_lockout_s")
        if decay_s <= 0 or max_peers < 1:
            raise ValueError("need decay_s > 0 and max_peers >= 1")
        self.free_failures = free_failures
        self.first_lockout_s = first_lockout_s
        self.max_lockout_s = max_lockout_s
        self.decay_s = decay_s
        self.max_peers = max_peers
        self._records: OrderedDict[str, _Record] = OrderedDict()  # oldest change first

    def __len__(self) -> int:
        return len(self._records)

    def _decayed(self, record: _Record, now: float) -> float:
        forgiven = max(0.0, now - record.updated_s) / self.decay_s
        return max(0.0, record.failures - forgiven)

    def allow(self, peer: str, now: float) -> float | None:
        """None when ``peer`` may try a credential now; else the seconds until it may."""
        key = peer_key(peer)
        record = self._records.get(key)
        if record is None:
            return None
        if now < record.locked_until_s:
            return record.locked_until_s - now
        if self._decayed(record, now) <= 0:
            del self._records[key]  # all forgiven
        return None

    def failed(self, peer: str, now: float) -> float | None:
        """Count a wrong credential from ``peer``; the lockout it starts (seconds), if any."""
        key = peer_key(peer)
        record = self._records.pop(key, None)
        if record is None:
            record = _Record(0.0, now, -math.inf)
            while len(self._records) >= self.max_peers:
                self._records.popitem(last=False)
        record.failures = self._decayed(record, now) + 1.0
        record.updated_s = now
        self._records[key] = record  # newest last
        locked_s = lockout_s(record.failures, self.free_failures, self.first_lockout_s,
                             self.max_lockout_s)
        if locked_s <= 0:
            return None
        record.locked_until_s = max(record.locked_until_s, now + locked_s)
        return locked_s

    def succeeded(self, peer: str, now: float) -> None:
        """A right credential from ``peer``: its failures are forgotten."""
        self._records.pop(peer_key(peer), None)
