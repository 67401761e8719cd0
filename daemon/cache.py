"""Search result cache keyed on the request and the collection's version."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any


class QueryCache:
    """A bounded LRU of search results. A key includes the collection's version, which
    every write bumps, so a cached answer is never served after the data changed."""

    def __init__(self, entries: int) -> None:
        self._entries = entries
        self._data: OrderedDict[tuple[str, int, bytes], Any] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self._entries > 0

    def get(self, key: tuple[str, int, bytes]) -> Any | None:
        value = self._data.get(key)
        if value is None:
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: tuple[str, int, bytes], value: Any) -> None:
        if not self._entries:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self._entries:
            self._data.popitem(last=False)

    def drop(self, collection: str) -> None:
        for key in [k for k in self._data if k[0] == collection]:
            del self._data[key]
