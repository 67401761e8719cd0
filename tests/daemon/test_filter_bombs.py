"""Filter bombs (issue 17, item 5): filters are bounded (``engine.filter_max_nodes``,
``engine.filter_max_in_values``, ``engine.filter_max_bytes``), every search has a server-side
time limit (``engine.search_timeout_s``), and reads by id, ``/health`` and ``/metrics`` are
answered while long searches fill the search threads."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import Daemon
from s5vec.daemon.config import ConfigError, load_config

from s5vec_tools.filterbomb import or_tree, slow_filter  # the reliability run's bombs, one copy

API = "/api/v1"
JSON_TYPE = {"Content-Type": "application/json"}


def records(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"id": f"r{i}", "vector": [1.0, i / count], "metadata": {"g": f"g{i % 10}", "n": i,
                                                                      "t": "2024-01-01T00:00:00"}}
            for i in range(start, start + count)]


async def seeded(make_client: Any, count: int, env: dict[str, str] | None = None) -> Any:
    client = await make_client(env=env or {})
    assert (await client.post(f"{API}/collections", json={"name": "c", "dimension": 2})).status == 201
    resp = await client.post(f"{API}/collections/c/vectors/batch", headers=JSON_TYPE,
                             data=io.BytesIO(json.dumps({"vectors": records(count)}).encode()))
    assert (await resp.json())["successful"] == count
    return client


def bomb_body(filter_json: bytes, delete: bool = False) -> bytes:
    return b'{"filter":' + filter_json + (b"}" if delete else b',"vector":[1,0]}')


BOMBS = [
    pytest.param(or_tree(12), "engine.filter_max_nodes = 1000", id="or-tree-depth-12"),
    pytest.param(or_tree(17), "engine.filter_max_bytes = 1048576", id="or-tree-depth-17"),
    pytest.param(json.dumps({"g": {"$in": [f"v{i}" for i in range(50_000)]}}).encode(),
                 "engine.filter_max_in_values = 10000", id="in-50000"),
    pytest.param(or_tree(20), "engine.filter_max_bytes = 1048576", id="or-tree-20MB"),
]


@pytest.mark.parametrize(("filter_json", "limit"), BOMBS)
async def test_a_filter_bomb_is_refused_with_a_400_naming_the_limit_and_nothing_is_lost(
        make_client: Any, filter_json: bytes, limit: str) -> None:
    client = await seeded(make_client, 100)
    for path, body in ((f"{API}/collections/c/search", bomb_body(filter_json)),
                       (f"{API}/collections/c/vectors/delete", bomb_body(filter_json, delete=True))):
        resp = await client.post(path, data=io.BytesIO(body), headers={"Content-Type": "application/json"})
        assert resp.status == 400, path
        error = (await resp.json())["error"]
        assert error["code"] == "invalid_request" and error["field"] == "filter"
        assert limit in error["message"], error
    assert (await (await client.get(f"{API}/collections/c")).json())["count"] == 100


async def test_a_websocket_search_with_a_filter_bomb_gets_an_error_naming_the_limit(make_client: Any) -> None:
    client = await seeded(make_client, 10)
    async with client.ws_connect(f"{API}/ws") as ws:
        tree = json.loads(or_tree(12))  # 8,191 nodes: under the frame limit, over the node limit
        await ws.send_json({"type": "search", "id": 1, "collection": "c", "vector": [1, 0], "filter": tree})
        reply = await ws.receive_json(timeout=10)
        assert reply["type"] == "error" and reply["error"]["field"] == "filter"
        assert "engine.filter_max_nodes = 1000" in reply["error"]["message"]


async def test_large_but_legal_filters_still_work(make_client: Any) -> None:
    client = await seeded(make_client, 2000)
    wanted = list(range(0, 2000, 2))  # 1,000 values: the old limit of a ?filter= query string
    cases = [
        ({"n": {"$in": wanted}}, 1000),
        ({"n": {"$nin": wanted}}, 1000),
        ({"$or": [{"n": i} for i in range(400)]}, 400),
        ({"$and": [{"n": {"$in": wanted}}, {"$or": [{"g": "g0"}, {"g": "g2"}]}]}, 400),
        ({"n": {"$in": [*map(str, wanted), True, None, 1.0, [3]]}}, 1),  # only 1.0 == 1 matches
    ]
    for spec, matching in cases:
        resp = await client.post(f"{API}/collections/c/search", json={"vector": [1, 0], "k": 1000, "filter": spec})
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["count"] == matching, spec


async def test_a_search_over_the_time_limit_is_cancelled_with_504_and_the_error_shape(make_client: Any) -> None:
    client = await seeded(make_client, 10_000, {"S5VEC_ENGINE__SEARCH_TIMEOUT_S": "1"})  # ~10 s of work
    resp = await client.post(f"{API}/collections/c/search", json={"vector": [1, 0], "filter": slow_filter(1)})
    assert resp.status == 504
    error = (await resp.json())["error"]
    assert error["code"] == "search_timeout" and "engine.search_timeout_s = 1 s" in error["message"]
    resp = await client.post(f"{API}/collections/c/search", json={"vector": [1, 0], "filter": {"n": 7}})
    assert [r["id"] for r in (await resp.json())["results"]] == ["r7"]


def test_filter_limits_and_the_search_time_limit_are_configurable_and_checked() -> None:
    config = load_config(env={"S5VEC_ENGINE__SEARCH_TIMEOUT_S": "2.5", "S5VEC_ENGINE__FILTER_MAX_NODES": "50",
                              "S5VEC_ENGINE__FILTER_MAX_IN_VALUES": "70", "S5VEC_ENGINE__FILTER_MAX_BYTES": "4096"})
    engine = config.engine
    assert (engine.search_timeout_s, engine.filter_max_nodes, engine.filter_max_in_values,
            engine.filter_max_bytes) == (2.5, 50, 70, 4096)
    for key in ("search_timeout_s", "filter_max_nodes", "filter_max_in_values", "filter_max_bytes"):
        with pytest.raises(ConfigError, match=f"engine.{key}"):
            load_config(env={f"S5VEC_ENGINE__{key.upper()}": "0"})


async def test_a_configured_node_limit_is_the_one_applied_and_named(make_client: Any) -> None:
    client = await seeded(make_client, 10, {"S5VEC_ENGINE__FILTER_MAX_NODES": "5000"})
    resp = await client.post(f"{API}/collections/c/search", data=io.BytesIO(bomb_body(or_tree(10))),  # 4,095 nodes
                             headers={"Content-Type": "application/json"})
    assert resp.status == 200
    resp = await client.post(f"{API}/collections/c/search", data=io.BytesIO(bomb_body(or_tree(12))),
                             headers={"Content-Type": "application/json"})
    assert resp.status == 400 and "engine.filter_max_nodes = 5000" in (await resp.json())["error"]["message"]


async def in_flight(session: aiohttp.ClientSession, url: str) -> float:
    async with session.get(url + "/metrics") as resp:
        text = await resp.text()
    return next(float(line.split()[-1]) for line in text.splitlines()
                if line.startswith("s5vec_http_requests_in_flight"))


async def long_searches(session: aiohttp.ClientSession, url: str, count: int) -> list[asyncio.Task[int]]:
    """``count`` legal searches that run for minutes without a time limit; returns once the
    daemon is handling all of them (its in-flight gauge counts them and the /metrics request)."""
    async def one(seed: int) -> int:
        async with session.post(f"{url}{API}/collections/c/search",
                                json={"vector": [1, 0], "k": 5, "filter": slow_filter(seed)}) as resp:
            await resp.read()
            return resp.status

    tasks = [asyncio.create_task(one(seed)) for seed in range(count)]
    async with asyncio.timeout(30):
        while await in_flight(session, url) < count + 1:
            await asyncio.sleep(0.02)
    return tasks


async def test_the_filter_bomb_repro_leaves_reads_health_metrics_and_sigterm_unharmed(tmp_path: Path) -> None:
    """The issue's repro against ``s5vec serve``: four long legal searches fill the search
    threads; the bombs (depth-17 ``$or`` tree, a 20 MB filter, four 50,000-value ``$in``
    searches) are refused with 400; a GET by id, /health and /metrics are answered while the
    searches are still running; the searches end with 504 at the default time limit; SIGTERM
    during long searches exits within the README's 10 s."""
    daemon = Daemon(tmp_path / "data").start()
    url = daemon.url
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            async with session.post(f"{url}{API}/collections", json={"name": "c", "dimension": 2}) as resp:
                assert resp.status == 201
            for start in (0, 10_000):
                async with session.post(f"{url}{API}/collections/c/vectors/batch", headers=JSON_TYPE,
                                        data=io.BytesIO(json.dumps({"vectors": records(10_000, start)}).encode())) as resp:
                    assert (await resp.json())["successful"] == 10_000
            searches = await long_searches(session, url, 4)

            async def bomb(body: bytes) -> int:
                async with session.post(f"{url}{API}/collections/c/search", data=io.BytesIO(body),
                                        headers={"Content-Type": "application/json"}) as resp:
                    await resp.read()
                    return resp.status

            in_list = json.dumps({"g": {"$in": [f"v{i}" for i in range(50_000)]}}).encode()
            statuses = await asyncio.gather(bomb(bomb_body(or_tree(17))), bomb(bomb_body(or_tree(20))),
                                            *(bomb(bomb_body(in_list)) for _ in range(4)))
            assert statuses == [400] * 6
            async with session.get(f"{url}{API}/collections/c/vectors/r7") as resp:
                assert resp.status == 200 and (await resp.json())["id"] == "r7"
            async with session.get(f"{url}/health") as resp:
                assert resp.status == 200
            async with session.get(f"{url}/metrics") as resp:
                assert resp.status == 200
            assert not any(task.done() for task in searches), "the reads waited for the searches"
            assert await asyncio.gather(*searches) == [504] * 4  # engine.search_timeout_s (default 5)

            searches = await long_searches(session, url, 4)
            assert daemon.proc is not None
            daemon.proc.terminate()
            assert await asyncio.to_thread(daemon.proc.wait, 15) == 0
            await asyncio.gather(*searches, return_exceptions=True)
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait(10)
