"""Listing collections while the writer thread creates and drops them: every listing (REST,
admin statistics, MCP) is one consistent snapshot, never a "dictionary changed size during
iteration", and the statistics are gathered on a worker thread, not on the event loop."""

from __future__ import annotations

import threading
from typing import Any

import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from s5vec.daemon.services import SERVICES
from s5vec.index import Collection, CollectionConfig
from s5vec.engine import Database
from s5vec.engine.walrecords import Create, Drop

API = "/api/v1"


def writer_commits_during_the_first_stats(monkeypatch: pytest.MonkeyPatch, db: Database) -> list[str]:
    """While a handler is half-way through listing (inside the first ``Collection.stats()``
    call), the writer thread applies a drop of ``c`` and creates of
    ``late`` and ``later`` — what it does when such requests commit at that moment. Returns
    the threads the first call ran on."""
    original = Collection.stats
    threads: list[str] = []

    def stats(self: Collection) -> dict[str, Any]:
        if not threads:
            threads.append(threading.current_thread().name)
            db._writer_pool.submit(db._apply_record, Drop("c")).result()
            for name in ("late", "later"):
                create = Create(name, CollectionConfig(name, 3).to_dict())
                db._writer_pool.submit(db._apply_record, create).result()
        return original(self)

    monkeypatch.setattr(Collection, "stats", stats)
    return threads


async def three_collections(client: Any) -> Database:
    for name in "abc":
        resp = await client.post(f"{API}/collections", json={"name": name, "dimension": 3})
        assert resp.status == 201
    db: Database = client.app[SERVICES].db
    return db


async def test_listing_collections_while_the_writer_creates_and_drops_one_answers_a_snapshot(
        client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    db = await three_collections(client)
    threads = writer_commits_during_the_first_stats(monkeypatch, db)
    resp = await client.get(f"{API}/collections")
    assert resp.status == 200, await resp.text()
    assert [c["name"] for c in (await resp.json())["collections"]] == ["a", "b", "c"]  # as it was when listed
    assert threads and threads != [threading.main_thread().name]  # the listing ran on a worker, not the loop
    resp = await client.get(f"{API}/collections")
    assert [c["name"] for c in (await resp.json())["collections"]] == ["a", "b", "late", "later"]


async def test_admin_statistics_while_the_writer_creates_and_drops_a_collection_answers_a_snapshot(
        client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    db = await three_collections(client)
    writer_commits_during_the_first_stats(monkeypatch, db)
    resp = await client.get(f"{API}/admin/statistics")
    assert resp.status == 200, await resp.text()
    assert sorted((await resp.json())["collections"]) == ["a", "b", "c"]


async def test_mcp_list_collections_while_the_writer_creates_and_drops_one_answers_a_snapshot(
        client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    db = await three_collections(client)
    url = str(client.make_url("/mcp"))
    async with (httpx2.AsyncClient() as http, streamable_http_client(url, http_client=http) as (read, write),
                ClientSession(read, write) as session):
        await session.initialize()
        writer_commits_during_the_first_stats(monkeypatch, db)
        result = await session.call_tool("list_collections", {})
        assert not result.is_error, result.content
        assert result.structured_content is not None
        assert [c["name"] for c in result.structured_content["collections"]] == ["a", "b", "c"]
