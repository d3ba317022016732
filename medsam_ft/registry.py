"""A name -> factory registry (timm style), shared by backbones and networks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

Factory = TypeVar("Factory", bound=Callable)


class Registry(Generic[Factory]):
    """Factories registered by name with ``@registry.register(name)``; looked up with ``registry.get(name)``.

    Args:
        kind: what the names name ("method", "backbone"), for errors.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Factory] = {}

    def register(self, name: str) -> Callable[[Factory], Factory]:
        def decorator(factory: Factory) -> Factory:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = factory
            return factory

        return decorator

    def names(self) -> list[str]:
        return sorted(self._factories)

    def get(self, name: str) -> Factory:
        if name not in self._factories:
            raise ValueError(f"unknown {self.kind} {name!r}; choose one of {self.names()}")
        return self._factories[name]
