"""Name -> class registries, so strategies and proxies are chosen by name from a config or CLI."""
from __future__ import annotations

from typing import Callable, Dict, TypeVar

T = TypeVar("T")


class Registry:
    """A named table of classes or functions; ``get`` fails with the known names listed."""

    def __init__(self, kind: str):
        self.kind = kind
        self._table: Dict[str, object] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._table:
                raise KeyError(f"{self.kind} {name!r} is registered twice")
            self._table[name] = obj
            return obj
        return add

    def get(self, name: str):
        if name not in self._table:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._table))}")
        return self._table[name]

    def names(self) -> list[str]:
        return sorted(self._table)

    def __contains__(self, name: str) -> bool:
        return name in self._table


STRATEGIES = Registry("strategy")
PROXIES = Registry("proxy")
SAMPLERS = Registry("sampler")
