"""ABR controllers and their registry: ``create("steady", limits)``.

Each controller is one module that registers itself by name (``encoder.abr.registry``);
importing this package imports them all, so ``names()`` lists every one.
"""

from __future__ import annotations

from encoder.abr import belacoder, fixed, gcc, obs, steady  # noqa: F401 (they register)
from encoder.abr.base import (
    UPDATE_INTERVAL_S,
    AbrController,
    AbrLimits,
    AckSample,
    Observation,
)
from encoder.abr.registry import create, names, register

__all__ = ["UPDATE_INTERVAL_S", "AbrController", "AbrLimits", "AckSample", "Observation",
           "create", "names", "register"]
