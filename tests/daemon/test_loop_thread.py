"""Handlers never touch a collection's live state on the event loop: a read by id (which
takes the collection's lock) runs on a worker thread, whichever transport asked."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from s5vec.index import Collection

API = "/api/v1"


def record_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the threads that enter ``Collection.get``/``get_many`` from now on."""
    threads: list[str] = []
    for name in ("get", "get_many"):
        original = getattr(Collection, name)

        def spy(self: Collection, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            threads.append(threading.current_thread().name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(Collection, name, spy)
    return threads


async def test_deleting_one_record_looks_it_up_on_a_worker_not_under_the_lock_on_the_loop(
        client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    assert (await client.post(f"{API}/collections", json={"name": "v", "dimension": 2})).status == 201
    assert (await client.post(f"{API}/collections/v/vectors", json={"id": "a", "vector": [1, 0]})).status == 201
    threads = record_threads(monkeypatch)
    assert (await client.delete(f"{API}/collections/v/vectors/a")).status == 200
    resp = await client.delete(f"{API}/collections/v/vectors/a")
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "record_not_found"
    assert threads and threading.main_thread().name not in threads


async def test_a_websocket_get_reads_the_records_on_a_worker(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    assert (await client.post(f"{API}/collections", json={"name": "v", "dimension": 2})).status == 201
    assert (await client.post(f"{API}/collections/v/vectors", json={"id": "a", "vector": [1, 0]})).status == 201
    threads = record_threads(monkeypatch)
    async with client.ws_connect(f"{API}/ws") as ws:
        await ws.send_json({"type": "get", "id": 1, "collection": "v", "ids": ["a", "zz"]})
        reply = await ws.receive_json()
    assert reply["result"]["missing"] == ["zz"] and [r["id"] for r in reply["result"]["records"]] == ["a"]
    assert threads and threading.main_thread().name not in threads
