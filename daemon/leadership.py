"""Who may write: a lease in etcd (its v3 JSON gateway, over aiohttp), never a protocol of
our own.

The writer holds key ``replication.etcd_key`` attached to a lease of ``lease_ttl_s``; the
etcd revision at which it created the key is its **epoch**, stamped on every WAL chunk it
ships (followers never apply an older epoch's head, see :mod:`s5vec.engine.following`).
The lease is kept alive every third of its TTL; the writer stops acknowledging as soon as
its *local* deadline (the send time of the last successful keep-alive plus the TTL, less
a margin) has passed, without asking etcd: a process that was paused (SIGSTOP, a long GC
or VM freeze) past its TTL refuses writes the moment it runs again, before etcd could even
answer, because by then etcd has expired the lease and another node may hold the key.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import sys
import time
from typing import Any, Final, NoReturn

import aiohttp
from aiohttp import web

from . import lease_bridge

log = logging.getLogger(__name__)
_MARGIN: Final = 0.5  # seconds of the TTL this node does not count on (clock rates, request time)


class ElectionUnavailable(Exception):
    """No etcd endpoint answered."""


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class EtcdLease:
    """One node's view of the writer key: campaign for it, keep it, give it up."""

    def __init__(self, endpoints: tuple[str, ...], key: str, value: str, ttl_s: int, timeout_s: float = 2.0) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoints")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.key, self.value, self.ttl_s = key, value, ttl_s
        self.lease_id: str | None = None
        self.epoch = 0
        self._deadline = 0.0  # monotonic time after which this node no longer counts on the lease
        self.lost: str | None = None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        await self.open()
        assert self._session is not None
        errors = []
        for endpoint in self.endpoints:
            try:
                async with self._session.post(f"{endpoint}/v3/{path}", json=body) as resp:
                    text = await resp.text()
                    if resp.status != 200:
                        errors.append(f"{endpoint}: HTTP {resp.status} {text[:200]!r}")
                        continue
                    # the keep-alive endpoint streams: its first line is the answer
                    doc = json.loads(text.strip().splitlines()[0]) if text.strip() else {}
                    return doc if isinstance(doc, dict) else {}
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                errors.append(f"{endpoint}: {type(exc).__name__}: {exc}")
        raise ElectionUnavailable("etcd did not answer: " + "; ".join(errors))

    # ------------------------------------------------------------------ campaign

    async def holder(self) -> tuple[str, int] | None:
        """(value, create revision) of the writer key, or None when nobody holds it."""
        doc = await self._post("kv/range", {"key": _b64(self.key)})
        kvs = doc.get("kvs") or []
        if not kvs:
            return None
        kv = kvs[0]
        return base64.b64decode(kv.get("value", "")).decode(), int(kv.get("create_revision", 0))

    async def campaign(self) -> int | None:
        """Try to become the writer: returns the epoch, or None when another node holds the
        key. Raises ElectionUnavailable."""
        sent = time.monotonic()
        grant = await self._post("lease/grant", {"TTL": self.ttl_s})
        lease_id = str(grant.get("ID", ""))
        if not lease_id or int(grant.get("TTL", 0)) <= 0:
            raise ElectionUnavailable(f"etcd granted no lease: {grant}")
        txn = await self._post("kv/txn", {
            "compare": [{"key": _b64(self.key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
            "success": [{"request_put": {"key": _b64(self.key), "value": _b64(self.value), "lease": lease_id}}],
            "failure": []})
        if not txn.get("succeeded"):
            await self._revoke(lease_id)
            return None
        self.lease_id, self.epoch, self.lost = lease_id, int(txn["header"]["revision"]), None
        self._deadline = sent + self.ttl_s - _MARGIN
        log.info("this node holds the writer lease (epoch %d, TTL %d s)", self.epoch, self.ttl_s)
        return self.epoch

    async def resume(self, lease_id: str, epoch: int) -> bool:
        """Take over a lease this node was granted before it re-executed itself (promotion):
        True when it is still alive and the key is still ours."""
        self.lease_id, self.epoch = lease_id, epoch
        alive = await self.keep_alive()
        lease_bridge.stop()  # from here on run() keeps it
        if not alive:
            return False
        held = await self.holder()
        if held is None or held[1] != epoch:
            self._lose("the writer key is no longer this node's")
            return False
        return True

    async def keep_alive(self) -> bool:
        """One keep-alive; False (and ``lost`` set) when the lease is gone."""
        if self.lease_id is None:
            return False
        sent = time.monotonic()
        try:
            doc = await self._post("lease/keepalive", {"ID": self.lease_id})
        except ElectionUnavailable as exc:
            log.warning("lease keep-alive failed: %s", exc)
            return self.fence() is None
        ttl = int((doc.get("result") or {}).get("TTL", 0))
        if ttl <= 0:
            self._lose("the leadership lease expired in etcd")
            return False
        self._deadline = sent + min(ttl, self.ttl_s) - _MARGIN
        return True

    def _lose(self, why: str) -> None:
        if self.lost is None:
            log.error("%s: this node stops acknowledging writes", why)
        self.lost = why

    def fence(self) -> str | None:
        """Why this node may not acknowledge writes now, or None while its lease holds."""
        if self.lost is not None:
            return self.lost
        if self.lease_id is None:
            return "this node does not hold the writer lease"
        if time.monotonic() > self._deadline:
            return f"the leadership lease (TTL {self.ttl_s} s) was not renewed in time"
        return None

    async def run(self) -> None:
        """Keep the lease alive every third of its TTL until cancelled or lost."""
        while self.lost is None:
            await asyncio.sleep(self.ttl_s / 3)
            if self.fence() is not None and self.lost is None:
                self._lose(self.fence() or "")
                return
            await self.keep_alive()

    async def _revoke(self, lease_id: str) -> None:
        try:
            await self._post("lease/revoke", {"ID": lease_id})
        except ElectionUnavailable:
            pass  # it expires on its own

    async def resign(self) -> None:
        """Give the key up at once (a clean shutdown): a follower need not wait for the TTL."""
        if self.lease_id is not None and self.lost is None:
            await self._revoke(self.lease_id)
        self.lease_id = None


class Restart:
    """A request to run this daemon again as another role: ``serve`` stops (in-flight
    requests finish, the database closes) and :func:`reexec` replaces the process with the
    same command and ``env`` on top (same PID, so systemd and test harnesses keep it)."""

    def __init__(self) -> None:
        self.env: dict[str, str] | None = None
        self.why = ""
        self._event: asyncio.Event | None = None

    @property
    def event(self) -> asyncio.Event:
        if self._event is None:
            self._event = asyncio.Event()
        return self._event

    def request(self, why: str, env: dict[str, str]) -> None:
        if self.env is None:
            log.warning("restarting this daemon: %s", why)
            self.env, self.why = env, why
            self.event.set()


RESTART: Final = web.AppKey("restart", Restart)


def reexec(env: dict[str, str]) -> NoReturn:
    """Replace this process with ``s5vec serve`` again (without ``--follow``), ``env`` on top."""
    args = [a for a in sys.argv[1:] if a != "--follow"]
    logging.shutdown()
    os.execve(sys.executable, [sys.executable, "-m", "s5vec.daemon.cli", *args], {**os.environ, **env})


def as_writer(epoch: int, lease: EtcdLease | None) -> dict[str, str]:
    """The environment of this daemon run again as the writer; with a lease, the lease is
    kept alive from now until the new process resumes it (see :mod:`.lease_bridge`)."""
    env = {"S5VEC_REPLICATION__ROLE": "writer", "S5VEC_REPLICATION__EPOCH": str(epoch),
           "S5VEC_REPLICATION__LEASE_ID": ""}
    if lease is not None and lease.lease_id is not None:
        lease_bridge.start(lease.endpoints, lease.lease_id, lease.ttl_s)
        env.update({"S5VEC_REPLICATION__LEASE_ID": lease.lease_id,
                    "S5VEC_REPLICATION__ETCD_ENDPOINTS": ",".join(lease.endpoints),
                    "S5VEC_REPLICATION__LEASE_TTL_S": str(lease.ttl_s)})
    return env


def as_follower() -> dict[str, str]:
    return {"S5VEC_REPLICATION__ROLE": "follower", "S5VEC_REPLICATION__EPOCH": "0",
            "S5VEC_REPLICATION__LEASE_ID": ""}
