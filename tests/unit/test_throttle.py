"""The wrong-credential throttle (relay/web/throttle.py), driven directly with its own clock, and
the token comparison every endpoint uses (relay/web/responses.py), fuzzed."""

from __future__ import annotations

import base64
import random

import pytest

from relay.web.dashboard import WRONG_PASSWORD, check_basic_auth
from relay.web.responses import token_matches
from relay.web.throttle import (
    DECAY_S,
    FIRST_LOCKOUT_S,
    FREE_FAILURES,
    MAX_LOCKOUT_S,
    CredentialThrottle,
    lockout_s,
    peer_key,
)

A, B = "192.0.2.1", "192.0.2.2"


def fail_until_locked(t: CredentialThrottle, peer: str, now: float) -> float:
    """Failures from ``peer`` at ``now`` until a lockout starts; its length."""
    for _ in range(FREE_FAILURES + 1):
        locked = t.failed(peer, now)
        if locked is not None:
            return locked
    raise AssertionError("no lockout after the free failures")


def test_the_free_failures_cost_nothing_then_the_address_is_locked_out() -> None:
    t = CredentialThrottle()
    for _ in range(FREE_FAILURES):
        assert t.failed(A, 100.0) is None
        assert t.allow(A, 100.0) is None
    assert t.failed(A, 100.0) == FIRST_LOCKOUT_S
    assert t.allow(A, 100.0) == pytest.approx(FIRST_LOCKOUT_S)
    assert t.allow(A, 100.0 + FIRST_LOCKOUT_S / 2) == pytest.approx(FIRST_LOCKOUT_S / 2)
    assert t.allow(A, 100.0 + FIRST_LOCKOUT_S) is None


def test_the_lockout_doubles_per_failure_up_to_the_cap() -> None:
    t = CredentialThrottle()
    now = 0.0
    seen = [fail_until_locked(t, A, now)]
    for _ in range(12):
        retry = t.allow(A, now)
        assert retry is not None
        now += retry  # the attacker waits exactly as told, then guesses again
        assert t.allow(A, now) is None
        locked = t.failed(A, now)
        assert locked is not None
        seen.append(locked)
    assert seen[:4] == [1.0, 2.0, 4.0, 8.0]
    assert max(seen) == MAX_LOCKOUT_S and seen[-1] == MAX_LOCKOUT_S
    # at the cap, one guess a minute: over an hour at most about 60
    assert lockout_s(10_000) == MAX_LOCKOUT_S


def test_attempts_while_locked_out_do_not_extend_the_lockout() -> None:
    t = CredentialThrottle()
    locked = fail_until_locked(t, A, 10.0)
    for i in range(1000):  # refused without a check: the handler does not call failed()
        assert t.allow(A, 10.0 + i * locked / 2000) is not None
    assert t.allow(A, 10.0 + locked) is None


def test_other_addresses_are_never_affected() -> None:
    t = CredentialThrottle()
    fail_until_locked(t, A, 0.0)
    assert t.allow(A, 0.0) is not None
    assert t.allow(B, 0.0) is None
    assert t.failed(B, 0.0) is None  # B's first failure is one of its own free ones


def test_a_success_forgets_the_address() -> None:
    t = CredentialThrottle()
    for _ in range(FREE_FAILURES):
        t.failed(A, 0.0)
    t.succeeded(A, 0.0)
    assert len(t) == 0
    for _ in range(FREE_FAILURES):
        assert t.failed(A, 0.0) is None  # free tries again


def test_failures_decay_so_an_address_that_stops_guessing_gets_free_tries_back() -> None:
    t = CredentialThrottle()
    fail_until_locked(t, A, 0.0)  # FREE_FAILURES + 1 failures
    later = (FREE_FAILURES + 1) * DECAY_S
    assert t.allow(A, later) is None
    assert len(t) == 0  # all forgiven: the record is gone
    for _ in range(FREE_FAILURES):
        assert t.failed(A, later) is None
    # half-way, some are forgiven: fewer free tries, but some
    t2 = CredentialThrottle()
    fail_until_locked(t2, A, 0.0)
    assert t2.failed(A, 2 * DECAY_S) is None  # 6 - 2 + 1 = 5 failures: still free
    assert t2.failed(A, 2 * DECAY_S) is not None


def test_memory_is_bounded_and_the_oldest_address_is_forgotten() -> None:
    t = CredentialThrottle(max_peers=100)
    for i in range(10_000):
        t.failed(f"10.0.{i // 256}.{i % 256}", float(i))
        assert len(t) <= 100
    assert t.allow("10.0.0.0", 10_000.0) is None  # forgotten long ago
    newest = f"10.0.{9999 // 256}.{9999 % 256}"
    for _ in range(FREE_FAILURES):
        t.failed(newest, 10_000.0)
    assert t.allow(newest, 10_000.0) is not None  # kept: its failures added up


def test_ipv6_counts_by_its_64_prefix_and_mapped_ipv4_as_ipv4() -> None:
    assert peer_key("2001:db8:1:2:aaaa::1") == peer_key("2001:db8:1:2:bbbb::2") == \
        "2001:db8:1:2::/64"
    assert peer_key("2001:db8:1:3::1") != peer_key("2001:db8:1:2::1")
    assert peer_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert peer_key("fe80::1%eth0") == "fe80::/64"
    assert peer_key("?") == "?" and peer_key("not an address") == "not an address"
    t = CredentialThrottle()
    fail_until_locked(t, "2001:db8:1:2::1", 0.0)
    assert t.allow("2001:db8:1:2::99", 0.0) is not None


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        CredentialThrottle(first_lockout_s=0)
    with pytest.raises(ValueError):
        CredentialThrottle(max_peers=0)


# --- the comparison the endpoints use (fault 8: a non-UTF-8 token was an HTTP 500) ----------

def test_tokens_with_any_bytes_are_simply_wrong() -> None:
    secret = "farm1-publish-token-0001"
    assert token_matches(secret, secret)
    latin1 = b"farm1-\xe9-token".decode("utf-8", "surrogateescape")  # what aiohttp hands over
    assert not token_matches(latin1, secret)
    assert not token_matches("farm1-é-token", secret)
    assert not token_matches(secret, "")  # an unset secret matches nothing
    assert not token_matches("", "")
    assert token_matches(latin1, latin1)


def test_token_comparison_and_basic_auth_fuzzed() -> None:
    """Random bytes as a client's token or Basic header: an answer, never an exception."""
    rng = random.Random(13)
    secret = "dash-board-pass-0001"
    for _ in range(5000):
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
        text = raw.decode("utf-8", "surrogateescape")
        assert not token_matches(text, secret) or raw == secret.encode()
        encoded = base64.b64encode(b"user:" + raw).decode()
        for header in (text, "Basic " + text, "Basic " + encoded, "bearer " + text):
            reason = check_basic_auth(header, secret)
            assert reason is None or isinstance(reason, str)
        assert check_basic_auth("Basic " + encoded, secret) == WRONG_PASSWORD
    right = base64.b64encode(f"anyone:{secret}".encode()).decode()
    assert check_basic_auth("Basic " + right, secret) is None
