"""The engine's thread pools, in one object the caller builds (and may share or size).

Which work goes where, and why:

- ``writer`` (1 thread): WAL appends and applies, in order: the single writer.
- ``index`` (1, lowered priority): HNSW graph building; a burst of indexing must delay the
  graph, not acknowledgements and searches (the exact buffer serves meanwhile).
- ``read`` (``search_threads``): searches and filtered listings (hnswlib and faiss release
  the GIL).
- ``get`` (2): reads by id; long searches that fill ``read`` must not make them wait.
- ``tier`` (2): the two tiers of one search in parallel.
- ``io`` (4): blob reads and writes, (de)compression, snapshots.
- ``migrate`` (1, lowered priority): migration, compaction, segment rebuilds, tuning.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields


def _lower_priority(nice: int) -> None:
    """Thread initialiser: raise this thread's niceness by ``nice`` above the daemon's
    (Linux niceness is per thread and inherited by the threads it starts, such as
    hnswlib's build workers)."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except (AttributeError, OSError):  # not Linux, or not permitted: run at normal priority
        pass


def background_pool(workers: int, prefix: str, nice: int) -> ThreadPoolExecutor:
    """A pool for bulk background work (graph building, migration, compaction): with
    ``nice`` > 0 the kernel serves the event loop, the WAL writer and searches first, so a
    burst of indexing on a busy 2-core host delays the graph, not acknowledgements and
    live events (which the exact buffer makes searchable meanwhile)."""
    if nice <= 0:
        return ThreadPoolExecutor(workers, thread_name_prefix=prefix)
    return ThreadPoolExecutor(workers, thread_name_prefix=prefix, initializer=_lower_priority, initargs=(nice,))


@dataclass(frozen=True, slots=True)
class Executors:
    """The pools one engine uses (see the module docstring)."""

    writer: ThreadPoolExecutor
    index: ThreadPoolExecutor
    read: ThreadPoolExecutor
    get: ThreadPoolExecutor
    tier: ThreadPoolExecutor
    io: ThreadPoolExecutor
    migrate: ThreadPoolExecutor

    @classmethod
    def create(cls, search_threads: int = 4, background_nice: int = 10) -> Executors:
        return cls(writer=ThreadPoolExecutor(1, thread_name_prefix="s5vec-writer"),
                   index=background_pool(1, "s5vec-indexer", background_nice),
                   read=ThreadPoolExecutor(search_threads, thread_name_prefix="s5vec-search"),
                   get=ThreadPoolExecutor(2, thread_name_prefix="s5vec-get"),
                   tier=ThreadPoolExecutor(2, thread_name_prefix="s5vec-tier"),
                   io=ThreadPoolExecutor(4, thread_name_prefix="s5vec-io"),
                   migrate=background_pool(1, "s5vec-migrate", background_nice))

    def shutdown(self, wait: bool = True) -> None:
        """Shut every pool down (after the engine that used them has closed)."""
        for field in fields(self):
            getattr(self, field.name).shutdown(wait=wait)
