"""The reconnect backoff both sides use: the relay towards a platform
(``relay.output.destination``) and the encoder towards the relay (``encoder.sender_session``)."""

from __future__ import annotations


def next_backoff_s(previous_s: float | None, first_s: float, max_s: float) -> float:
    """Capped exponential backoff: first_s, 2×, 4×, ... never above max_s."""
    if previous_s is None:
        return min(first_s, max_s)
    return min(previous_s * 2, max_s)
