"""End to end: SIGKILL during migration and right after a checkpoint of migrated data."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from typing import Any

import aiohttp
import pytest

from conftest import Daemon

pytestmark = pytest.mark.e2e
API = "/api/v1"


def call(url: str, body: Any = None, method: str = "GET") -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.load(resp)


def check_each_id_once(daemon: Daemon, vectors: Any, expected: int) -> None:
    info = call(f"{daemon.url}{API}/collections/m")
    assert info["count"] == expected and info["recent"] + info["historical"] == expected
    for probe in (0, 1, 2, 3, 501, 1002):
        body = call(f"{daemon.url}{API}/collections/m/search", {"vector": vectors[probe].tolist(), "k": 30,
                                                                "options": {"include_metadata": False}}, "POST")
        ids = [r["id"] for r in body["results"]]
        assert len(ids) == len(set(ids)) == 30
        assert str(probe) in ids[:3]


def test_kill_during_migration_leaves_every_id_in_exactly_one_tier(daemon: Daemon, minilm: Any) -> None:
    vectors = minilm.base[:1600]
    daemon.start()
    call(f"{daemon.url}{API}/collections", {"name": "m", "dimension": 384, "segment_records": 200}, "POST")
    now = time.time()
    for start in range(0, len(vectors), 200):
        call(f"{daemon.url}{API}/collections/m/vectors/batch", {"vectors": [
            {"id": str(i), "vector": vectors[i].tolist(), "timestamp": now - (40 if i % 4 else 0) * 86_400}
            for i in range(start, start + 200)]}, "POST")
    call(f"{daemon.url}{API}/admin/checkpoint", None, "POST")

    async def migrate_then_kill() -> None:
        async with aiohttp.ClientSession() as session:
            # the change feed from the start: no migration_started can slip by before the stream subscribes
            async with session.get(f"{daemon.url}{API}/stream/updates",
                                   params={"types": "migration_started", "since": "0"}) as feed:
                request = asyncio.create_task(session.post(f"{daemon.url}{API}/admin/migrate"))
                async with asyncio.timeout(60):
                    async for line in feed.content:
                        if line.strip() == b"event: migration_started":
                            break  # planned: the first segments are being trained now
                    else:
                        raise AssertionError("the change feed ended before the migration started")
                daemon.kill()
            try:
                (await request).release()
            except aiohttp.ClientError:
                pass  # killed mid-migration: the usual case

    asyncio.run(migrate_then_kill())
    daemon.start()
    check_each_id_once(daemon, vectors, 1600)

    moved = call(f"{daemon.url}{API}/admin/migrate", None, "POST")
    assert moved["moved"] == 1200
    call(f"{daemon.url}{API}/admin/checkpoint", None, "POST")
    call(f"{daemon.url}{API}/collections/m/vectors", {"id": "1", "vector": vectors[1].tolist()}, "POST")
    daemon.kill()  # the upsert of a migrated id is only in the WAL
    daemon.start()
    check_each_id_once(daemon, vectors, 1600)
    info = call(f"{daemon.url}{API}/collections/m")
    assert info["historical"] == 1199 and info["recent"] == 401
    assert daemon.stop() == 0
