"""The ABR controllers by name: each controller module registers its class with ``register``;
``create(name, limits)`` makes one. A name is registered once (a second class under the same
name is an error)."""

from __future__ import annotations

from encoder.abr.base import AbrController, AbrLimits

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
