"""``fixed``: the start bitrate, always. The baseline that does not adapt."""

from __future__ import annotations

from encoder.abr.base import AbrController, Observation
from encoder.abr.registry import register


@register
class FixedController(AbrController):
    name = "fixed"

    def update(self, obs: Observation, *, now: float) -> int:
        return self.limits.start_kbps
