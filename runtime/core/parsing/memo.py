"""Per-object compile caches, keyed by identity.

Solution models are frozen, so what is compiled from one (regexes, XPath, field readers) never goes
stale. Hashing a pydantic model hashes every field on every call, so the key is ``id(obj)``; the entry
keeps ``obj`` alive, which makes the id impossible to reuse while the entry exists. The cache is
bounded: when full it is emptied (a reload makes a new document; the old entries just go).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class IdentityCache(Generic[K, V]):
    __slots__ = ("_entries", "_limit")

    def __init__(self, limit: int = 4096) -> None:
        self._entries: dict[int, tuple[K, V]] = {}
        self._limit = limit

    def get(self, obj: K, build: Callable[[K], V]) -> V:
        entry = self._entries.get(id(obj))
        if entry is not None and entry[0] is obj:
            return entry[1]
        value = build(obj)
        if len(self._entries) >= self._limit:
            self._entries.clear()
        self._entries[id(obj)] = (obj, value)
        return value

    def __len__(self) -> int:
        return len(self._entries)


class KeyedCache(Generic[V]):
    """A bounded cache keyed by a hashable value (pattern text and flags, for instance)."""

    __slots__ = ("_entries", "_limit")

    def __init__(self, limit: int = 4096) -> None:
        self._entries: dict[object, V] = {}
        self._limit = limit

    def get(self, key: object, build: Callable[[], V]) -> V:
        try:
            return self._entries[key]
        except KeyError:
            pass
        value = build()
        if len(self._entries) >= self._limit:
            self._entries.clear()
        self._entries[key] = value
        return value
