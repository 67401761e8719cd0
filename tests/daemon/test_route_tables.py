"""The routes come in a read, a write and an admin table; a follower mounts only the reads."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp import web
from conftest import DaemonTestServer
from s5vec.daemon import create_app, load_config
from s5vec.daemon.app import ROUTE_TABLES

API = "/api/v1"


def canonical(app: web.Application) -> list[tuple[str, str]]:
    """``(method, canonical path)`` of the routes ``app`` registers (aiohttp's HEAD twins left out)."""
    return [(route.method, route.resource.canonical) for route in app.router.routes()
            if route.method != "HEAD" and route.resource is not None]


def table_routes(name: str) -> list[tuple[str, str]]:
    app = web.Application()
    for table in ROUTE_TABLES[name]:
        app.add_routes(table)
    return canonical(app)


def test_every_route_of_the_app_is_in_exactly_one_table(tmp_path: Path) -> None:
    counts = Counter(route for name in ROUTE_TABLES for route in table_routes(name))
    assert [route for route, n in counts.items() if n > 1] == []
    app = create_app(load_config(overrides={"data_dir": str(tmp_path)}))
    assert sorted(counts) == sorted(canonical(app))
    assert ("POST", f"{API}/collections/{{c}}/search") in table_routes("read")
    assert ("POST", f"{API}/collections/{{c}}/vectors/batch") in table_routes("write")
    assert ("GET", f"{API}/admin/statistics") in table_routes("admin")


def test_the_search_route_is_the_first_one_the_app_tries(tmp_path: Path) -> None:
    app = create_app(load_config(overrides={"data_dir": str(tmp_path)}))
    first = next(r for r in app.router.routes() if r.resource is not None
                 and r.resource.canonical.startswith(f"{API}/collections/"))
    assert (first.method, first.resource.canonical) == ("POST", f"{API}/collections/{{c}}/search")


async def test_an_app_with_only_the_read_table_searches_and_reads_but_has_no_write_routes(
        aiohttp_client: Any, make_client: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    writer = await make_client(data_dir=data)
    assert (await writer.post(f"{API}/collections", json={"name": "v", "dimension": 2})).status == 201
    resp = await writer.post(f"{API}/collections/v/vectors/batch", json={"vectors": [
        {"id": "a", "vector": [1, 0], "metadata": {"n": 1}}, {"id": "b", "vector": [0, 1]}]})
    assert (await resp.json())["successful"] == 2
    await writer.close()

    config = load_config(overrides={"data_dir": str(data)})
    reader = await aiohttp_client(DaemonTestServer(create_app(config, tables=("read",))))
    resp = await reader.post(f"{API}/collections/v/search", json={"vector": [1, 0], "k": 1})
    assert resp.status == 200
    assert [r["id"] for r in (await resp.json())["results"]] == ["a"]
    resp = await reader.get(f"{API}/collections/v/vectors/a")
    assert resp.status == 200 and (await resp.json())["metadata"] == {"n": 1}
    assert (await reader.get(f"{API}/collections")).status == 200
    assert (await reader.get("/health")).status == 200
    for method, path, body in (("POST", f"{API}/collections/v/vectors", {"id": "c", "vector": [1, 1]}),
                               ("POST", f"{API}/collections/v/vectors/batch", {"vectors": []}),
                               ("POST", f"{API}/collections", {"name": "w", "dimension": 2}),
                               ("DELETE", f"{API}/collections/v/vectors/a", None),
                               ("POST", f"{API}/collections/v/ingest", None),
                               ("POST", f"{API}/admin/checkpoint", None)):
        resp = await reader.request(method, path, json=body)
        assert resp.status in (404, 405), (method, path, resp.status)
        assert (await resp.json())["error"]["code"] in ("not_found", "method_not_allowed")
    resp = await reader.get(f"{API}/collections/v/vectors/a")
    assert resp.status == 200  # nothing was deleted
