"""The running relay: every stream's runtime, the metrics, the event log, the monitor store
and the wrong-credential throttles, held by the aiohttp app under ``RELAY_KEY``.

The routes (relay.app, relay.web.dashboard, relay.web.probe) read it from
``request.app[RELAY_KEY]``; this module imports none of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from monitor.events import EventLog
from monitor.metrics import RelayMetrics
from monitor.redact import REDACTOR
from monitor.store import MonitorStore
from relay.heap_trim import HEAP_TRIM_INTERVAL_S, TrimPolicy, trim_if_due
from relay.settings import RelaySettings
from relay.stream import StreamRuntime
from relay.web.throttle import CredentialThrottle

log = logging.getLogger(__name__)

TICK_S = 0.1  # every stream's housekeeping (StreamRuntime.tick) runs this often


class Relay:
    """One per process: built from the settings, started and closed by the app's lifecycle."""

    def __init__(self, settings: RelaySettings) -> None:
        self.settings = settings
        self.metrics = RelayMetrics()
        self.events = EventLog(settings.event_log)
        self.store = MonitorStore(settings.monitor_db)
        for secret in settings.secrets():
            REDACTOR.add(secret)
        self.streams = {s.name: StreamRuntime(s, settings, self.metrics, self.events, self.store)
                        for s in settings.streams}
        self._ticker: asyncio.Task[None] | None = None
        self._throttles: dict[str, CredentialThrottle] = {}

    def throttle(self, scope: str) -> CredentialThrottle:
        """The wrong-credential throttle of one secret: ``ingest:<stream>`` (that stream's
        publish token), ``dashboard`` or ``probe``. Separate per secret, so that guessing one
        never locks a right client of another out from behind the same address (a mobile
        carrier's NAT); created on first use, for configured names only."""
        throttle = self._throttles.get(scope)
        if throttle is None:
            throttle = self._throttles[scope] = CredentialThrottle()
        return throttle

    async def start(self) -> None:
        for s in self.streams.values():
            s.restore()  # sessions recorded when the relay stopped: continue them, on slate
        self._ticker = asyncio.create_task(self._tick_forever())

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        await asyncio.gather(*(s.close() for s in self.streams.values()))
        self.store.close()

    async def _tick_forever(self) -> None:
        loop = asyncio.get_running_loop()
        next_trim = loop.time() + HEAP_TRIM_INTERVAL_S
        trim_policy = TrimPolicy()
        while True:
            await asyncio.sleep(TICK_S)
            if loop.time() >= next_trim:  # after a burst, the freed heap goes back to the OS
                next_trim = loop.time() + HEAP_TRIM_INTERVAL_S
                await loop.run_in_executor(None, trim_if_due, trim_policy, loop.time())
            for s in self.streams.values():
                try:
                    await s.tick()
                except Exception:
                    log.exception("stream %s: housekeeping failed", s.settings.name)


RELAY_KEY: web.AppKey[Relay] = web.AppKey("relay")
