"""ABR controllers and their registry: ``create("steady", limits)``.

Each controller is one module; it registers itself by name when imported here.
"""

from __future__ import annotations

from encoder.abr.base import (
    UPDATE_INTERVAL_S,
    AbrController,
    AbrLimits,
    AckSample,
    Observation,
)

_REGISTRY: dict[str, type[AbrController]] = {}


def register(cls: type[AbrController]) -> type[AbrController]:
    """Class decorator: make a controller available by its `name`."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"ABR controller {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def names() -> list[str]:
    return sorted(_REGISTRY)


def create(name: str, limits: AbrLimits) -> AbrController:
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown ABR controller {name!r}: choose one of "
                         f"{', '.join(names())}") from None
    return cls(limits)


__all__ = ["UPDATE_INTERVAL_S", "AbrController", "AbrLimits", "AckSample", "Observation",
           "create", "names", "register"]

# the controllers (imported last: they use `register` above)
from encoder.abr import belacoder, fixed, gcc, obs, steady  # noqa: E402,F401
