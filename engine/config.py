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


DURABILITIES = ("local", "replicated")
ROLES = ("writer", "follower")


@dataclass(frozen=True, slots=True)
class ReplicationConfig:
    """WAL shipping and acknowledgement (``[replication]``; see docs/replication.md).

    ``ship_wal`` None ships when storage is remote (portal, bridge) and not in local mode."""

    ship_wal: bool | None = None
    ship_interval_ms: int = 1000       # a shipping round at least this often (local durability's loss bound)
    durability: str = "local"          # local: ack after the local fsync; replicated: after the chunk is stored
    ack_timeout_s: float = 10.0        # replicated: a write whose chunk is not stored by then fails (503)
    chunk_max_bytes: int = 8 << 20     # records per chunk blob (a backlog ships as several)
    role: str = "writer"               # writer | follower (tails the writer's shipped WAL, serves reads)
    writer_url: str | None = None      # a follower names it in its 403 read_only_replica answers
    poll_interval_ms: int = 250        # a follower reads the replication head this often
    max_lag_s: float = 5.0             # a follower is ready (GET /ready 200) while its lag is below this
    min_lsn_timeout_s: float = 5.0     # a read with min_lsn waits this long, then 503 replica_lagging
    epoch: int = 0                     # set by leader election: stamped on every chunk this writer ships
    lease_id: str | None = None        # set when a promoted follower runs again as the writer (keeps its lease)
    etcd_endpoints: tuple[str, ...] = ()  # leader election: http://host:2379 of each etcd member
    etcd_key: str = "/s5vec/writer"    # the key the writer holds (one per seed phrase / cluster)
    lease_ttl_s: int = 5               # the writer's lease: a dead writer is replaced after about this long
    auto_failover: bool = False        # a ready follower campaigns when the writer's lease is gone
    advertise_url: str | None = None   # this node's URL as the writer (stored in etcd; named in followers' 403)

    def problem(self) -> str | None:
        """What is wrong with these settings, naming the key (None when they are fine)."""
        if self.durability not in DURABILITIES:
            return f"replication.durability: must be one of {', '.join(DURABILITIES)}, got {self.durability!r}"
        if not 10 <= self.ship_interval_ms <= 60_000:
            return f"replication.ship_interval_ms: must be between 10 and 60000, got {self.ship_interval_ms}"
        if self.ack_timeout_s <= 0:
            return "replication.ack_timeout_s: must be positive"
        if not 64 << 10 <= self.chunk_max_bytes <= 16 << 20:
            return "replication.chunk_max_bytes: must be between 65536 and 16777216"
        if self.role not in ROLES:
            return f"replication.role: must be one of {', '.join(ROLES)}, got {self.role!r}"
        if not 10 <= self.poll_interval_ms <= 60_000:
            return f"replication.poll_interval_ms: must be between 10 and 60000, got {self.poll_interval_ms}"
        if self.max_lag_s <= 0:
            return "replication.max_lag_s: must be positive"
        if self.min_lsn_timeout_s < 0:
            return "replication.min_lsn_timeout_s: must be 0 or more"
        if not 2 <= self.lease_ttl_s <= 60:
            return f"replication.lease_ttl_s: must be between 2 and 60, got {self.lease_ttl_s}"
        for url in self.etcd_endpoints:
            if not url.startswith(("http://", "https://")):
                return f"replication.etcd_endpoints: expected http(s) URLs such as http://127.0.0.1:2379, got {url!r}"
        if self.auto_failover and not self.etcd_endpoints:
            return "replication.auto_failover: needs replication.etcd_endpoints (without etcd, promote by hand)"
        if not self.etcd_key.startswith("/"):
            return "replication.etcd_key: must start with /"
        return None
