"""The engine's tunables (the daemon fills them from its config file)."""

from __future__ import annotations

from dataclasses import dataclass

from s5vec.index.filters import FilterLimits
from s5vec.index.recent import GRAPH_CHUNK


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Tunables of the engine (the daemon fills them from its config file)."""

    checkpoint_interval_s: float = 300.0
    checkpoint_wal_bytes: int = 256 << 20
    keep_manifests: int = 2
    max_pending: int = 100_000
    drain_batch: int = 256
    index_threads: int = 2
    search_threads: int = 4
    search_batches: int = 2
    migrate_interval_s: float = 60.0
    lazy_segments: bool = True
    migrate_max_records: int = 1_000_000
    wal_segment_bytes: int = 64 << 20
    storage_probe_s: float = 30.0          # how often a remote backend is asked whether it answers
    checkpoint_retry_max_s: float = 60.0   # longest wait between retries of a failed checkpoint
    background_nice: int = 10              # CPU niceness of graph building and migration threads
    index_linger_s: float = 0.02           # how long a few pending vectors wait to be indexed together
    graph_chunk: int = GRAPH_CHUNK         # vectors per hnswlib add_items call (a search waits for one)
    search_timeout_s: float = 5.0          # a search (or filtered listing) still running after this is cancelled
    filter_max_nodes: int = 1_000          # field conditions, operators and $and/$or branches in one filter
    filter_max_in_values: int = 10_000     # values in all $in/$nin lists of one filter together
    filter_max_bytes: int = 1 << 20        # JSON text of one filter in a request body

    @property
    def filter_limits(self) -> FilterLimits:
        return FilterLimits(self.filter_max_nodes, self.filter_max_in_values)
