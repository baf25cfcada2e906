"""Free loopback ports for test servers (the benchmarks' helper, one rule for both)."""

from __future__ import annotations

from harness.local_services import free_port

__all__ = ["free_port"]
