"""Everything a handler needs, in one object under one app key: ``request.app[SERVICES]``.

Shape: one frozen ``Services`` built by ``create_app(config)`` with what exists before start-up
(config, API keys, metrics, open feeds, query cache, notifier, start time, OpenAPI document).
What only exists once start-up ran (the database and the single-upsert batcher, the jobs, the
health monitor, the MCP endpoint) is set exactly once by the ``cleanup_ctx`` that opens it,
through :meth:`Services.opened` and its siblings, and read through properties that raise
``ServiceUnavailable`` (503) before that. The fields cannot be reassigned (frozen), so no
handler swaps a service under another one; the set-once slots keep ``create_app`` the one
factory and ``cleanup_ctx`` the one place lifecycles live, without a second, mutable registry.

Handlers reach the engine through :mod:`.operations` (transport-neutral: REST, WebSocket and
MCP call the same functions), never through another transport module.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from aiohttp import web

from s5vec.engine import Database
from s5vec.engine.following import Follower
from s5vec.ops import HealthMonitor, Metrics
from s5vec.ops.jobs import Jobs

from .auth import KeyRing
from .cache import QueryCache
from .config import Config
from .errors import ApiError
from .feeds import Feeds
from .systemd import Notifier
from .upserts import SingleUpserts

VERSION: Final = "0.1.0"


class Endpoint(Protocol):
    """A sub-application served from one route (the MCP endpoint)."""

    async def handle(self, request: web.Request) -> web.StreamResponse: ...


class ServiceUnavailable(ApiError):
    def __init__(self, what: str) -> None:
        super().__init__(503, "not_ready", f"the daemon is starting: {what} is not open yet")


@dataclass(frozen=True, slots=True, eq=False)
class Services:
    """The daemon's services; see the module docstring for which are set when."""

    config: Config
    keys: KeyRing
    metrics: Metrics
    feeds: Feeds
    cache: QueryCache
    notifier: Notifier
    openapi: dict[str, Any]
    started: float = field(default_factory=time.time)
    _db: Database | None = field(default=None, init=False)
    _upserts: SingleUpserts | None = field(default=None, init=False)
    _jobs: Jobs | None = field(default=None, init=False)
    _monitor: HealthMonitor | None = field(default=None, init=False)
    _mcp: Endpoint | None = field(default=None, init=False)
    _follower: Follower | None = field(default=None, init=False)
    _lease: Any = field(default=None, init=False)  # leadership.EtcdLease with replication.etcd_endpoints

    def _set_once(self, name: str, value: Any) -> None:
        if getattr(self, name) is not None:
            raise RuntimeError(f"Services.{name.lstrip('_')} is set once, by the cleanup_ctx that opens it")
        object.__setattr__(self, name, value)

    # ------------------------------------------------------------ set at start-up
    def opened(self, db: Database) -> None:
        """The database is open (database_ctx): single upserts are batched into it from now on."""
        self._set_once("_db", db)
        self._set_once("_upserts", SingleUpserts(db))

    def following(self, follower: Follower) -> None:
        """This node is a follower (database_ctx): ``db`` is its read-only database."""
        self._set_once("_follower", follower)

    def elected(self, lease: Any) -> None:
        """This node takes part in leader election (etcd)."""
        self._set_once("_lease", lease)

    @property
    def lease(self) -> Any:
        """The etcd lease (``leadership.EtcdLease``), or None without etcd."""
        return self._lease

    def jobs_started(self, jobs: Jobs) -> None:
        self._set_once("_jobs", jobs)

    def monitoring(self, monitor: HealthMonitor) -> None:
        self._set_once("_monitor", monitor)

    def serving_mcp(self, endpoint: Endpoint) -> None:
        self._set_once("_mcp", endpoint)

    # -------------------------------------------------------------------- access
    @property
    def is_open(self) -> bool:
        return self._db is not None

    @property
    def db(self) -> Database:
        db = self._db
        if db is None:
            raise ServiceUnavailable("the database")
        return db

    @property
    def follower(self) -> Follower | None:
        """The WAL tailer on a follower; None on a writer (or before start-up)."""
        return self._follower

    @property
    def upserts(self) -> SingleUpserts:
        if self._upserts is None:
            raise ServiceUnavailable("the database")
        return self._upserts

    @property
    def jobs(self) -> Jobs:
        if self._jobs is None:
            raise ServiceUnavailable("the job scheduler")
        return self._jobs

    @property
    def monitor(self) -> HealthMonitor:
        if self._monitor is None:
            raise ServiceUnavailable("the health monitor")
        return self._monitor

    @property
    def mcp(self) -> Endpoint:
        if self._mcp is None:
            raise ServiceUnavailable("the MCP endpoint")
        return self._mcp


SERVICES: Final = web.AppKey("services", Services)
