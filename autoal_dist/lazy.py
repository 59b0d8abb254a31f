"""A registry whose entries are imported on first use.

Why: naming a strategy, a model or an optimizer is checked on every command, and
`--help`, `strategies` and `pool info` should answer at once, but the objects live in
modules that import torch (2-3 s). The table of names is the registry; an entry's module is
imported when the entry itself is asked for.
"""
from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class LazyRegistry(Mapping[str, T], Generic[T]):
    """name -> object, from `{name: "package.module:attribute"}`; each entry may carry a
    one-line summary, readable without importing it."""

    def __init__(self, entries: dict[str, str], summaries: dict[str, str] | None = None):
        self._paths = dict(entries)
        self.summaries = dict(summaries or {})
        unknown = set(self.summaries) - set(self._paths)
        if unknown:
            raise ValueError(f"summaries for unregistered names: {sorted(unknown)}")

    def __getitem__(self, name: str) -> T:
        module, _, attr = self._paths[name].partition(":")
        return getattr(importlib.import_module(module), attr)

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)

    def __contains__(self, name: object) -> bool:  # a name check imports nothing
        return name in self._paths

    def path(self, name: str) -> str:
        """Where `name` is defined ("module:attribute")."""
        return self._paths[name]
