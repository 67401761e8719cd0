"""MCP: the tools through the SDK's own client, over stdio (``s5vec mcp``) and streamable
HTTP (``/mcp`` on the daemon), against a real daemon process; plus the pieces in process."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, get_args

import httpx2
import numpy as np
import pytest
from aiohttp import web
from conftest import REPO, Daemon, free_port
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult
from s5vec.daemon.asgi import Message, Receive, Scope, Send, call_asgi
from s5vec.daemon.errors import error_middleware
from s5vec.daemon.mcp_server import NftType, metadata_filter
from s5vec.index.schema import NFT_TYPES

READ, WRITE = "mcp-read-key-0123456789", "mcp-write-key-0123456789"
KEYS_ENV = {"S5VEC_API_KEYS": f"{READ}:read;{WRITE}:write"}
API = "/api/v1"
DIM = 16
GENRES = ("drama", "comedy", "sci-fi", "horror", "documentary")
TOOLS = {"list_collections", "search_vectors", "find_similar", "get_record", "filter_records"}


# ------------------------------------------------------------------ test data
def video(i: int, vector: np.ndarray) -> dict[str, Any]:
    return {"vector": vector.tolist(), "metadata": {
        "address": "0xfeed", "id": str(i), "title": f"video {i}",
        "genre": sorted({GENRES[i % 5], GENRES[(3 * i + 1) % 5]}), "type": NFT_TYPES[i % 4],
        "mintDateTime": f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}T12:00:00Z",
        "attributes": [{"key": "runtime", "value": 60 + i}]}}


@dataclass(frozen=True)
class Library:
    """The daemon holding the ``videos`` collection (schema video_nft) and the same data here."""

    daemon: Daemon
    vectors: np.ndarray
    records: list[dict[str, Any]]

    @property
    def ids(self) -> list[str]:
        return [f"0xfeed:{i}" for i in range(len(self.records))]

    def nearest(self, query: np.ndarray, k: int, allowed: list[int] | None = None) -> list[str]:
        """Brute-force cosine neighbours among ``allowed`` positions (all by default)."""
        rows = np.arange(len(self.vectors)) if allowed is None else np.array(allowed)
        unit = self.vectors[rows] / np.linalg.norm(self.vectors[rows], axis=1, keepdims=True)
        scores = unit @ (query / np.linalg.norm(query))
        return [self.ids[int(rows[j])] for j in np.argsort(-scores, kind="stable")[:k]]


def call(url: str, method: str, path: str, body: Any = None, key: str | None = WRITE) -> tuple[int, Any]:
    request = urllib.request.Request(url + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {key}"} if key else {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Library]:
    root = tmp_path_factory.mktemp("mcp")
    daemon = Daemon(root / "data", env=KEYS_ENV).start()
    try:
        vectors = np.random.default_rng(7).standard_normal((150, DIM)).astype(np.float32)
        records = [video(i, v) for i, v in enumerate(vectors)]
        status, _ = call(daemon.url, "POST", f"{API}/collections",
                         {"name": "videos", "dimension": DIM, "schema": "video_nft"})
        assert status == 201
        status, out = call(daemon.url, "POST", f"{API}/collections/videos/vectors/batch", {"vectors": records})
        assert status == 200 and out["failed"] == 0, out
        status, _ = call(daemon.url, "POST", f"{API}/collections", {"name": "empty", "dimension": 3, "metric": "l2"})
        assert status == 201
        yield Library(daemon, vectors, records)
    finally:
        code = daemon.stop()
    assert code == 0 and "Traceback" not in daemon.log.read_text(), daemon.log.read_text()[-3000:]


# ------------------------------------------------------------- SDK sessions
@asynccontextmanager
async def stdio_session(url: str, key: str | None, errlog: TextIO) -> AsyncIterator[ClientSession]:
    """``s5vec mcp`` spawned by the SDK's stdio client, as an agent host does."""
    env = {"S5VEC_URL": url, **({"S5VEC_API_KEY": key} if key else {})}
    params = StdioServerParameters(command=sys.executable, args=["-m", "s5vec.daemon.cli", "mcp"], env=env)
    async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


@asynccontextmanager
async def http_session(url: str, key: str | None) -> AsyncIterator[ClientSession]:
    """The daemon's ``/mcp`` through the SDK's streamable HTTP client."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with (httpx2.AsyncClient(headers=headers) as http,
                streamable_http_client(f"{url}/mcp", http_client=http) as (read, write),
                ClientSession(read, write) as session):
        await session.initialize()
        yield session


@pytest.fixture
def errlog(tmp_path: Path) -> Iterator[TextIO]:
    """Where a spawned ``s5vec mcp`` writes its standard error."""
    with open(tmp_path / "mcp-stdio.log", "w") as log:
        yield log
    assert "Traceback" not in (tmp_path / "mcp-stdio.log").read_text()


@asynccontextmanager
async def session_for(transport: str, library: Library, errlog: TextIO,
                      key: str | None = READ) -> AsyncIterator[ClientSession]:
    if transport == "stdio":
        async with stdio_session(library.daemon.url, key, errlog) as session:
            yield session
    else:
        async with http_session(library.daemon.url, key) as session:
            yield session


def ok(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


def error_text(result: CallToolResult) -> str:
    assert result.is_error, result.structured_content
    return " ".join(getattr(block, "text", "") for block in result.content)


TRANSPORTS = [pytest.param("stdio", marks=pytest.mark.e2e), pytest.param("http", marks=pytest.mark.e2e)]


# ---------------------------------------------------- both transports, real daemon
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_tools_are_listed_read_only_with_typed_input_and_output_schemas(
        transport: str, library: Library, errlog: TextIO) -> None:
    async with session_for(transport, library, errlog) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert tool.description and tool.output_schema is not None
        assert tool.annotations is not None and tool.annotations.read_only_hint is True
    search = tools["search_vectors"].input_schema
    assert set(search["required"]) == {"collection"}  # and exactly one of vector / text
    assert {"vector", "text"} <= set(search["properties"])
    assert search["properties"]["k"]["maximum"] == 1000 and search["properties"]["k"]["default"] == 10
    assert "description" in search["properties"]["vector"]
    filters = tools["filter_records"].input_schema["properties"]
    assert {"genre", "type", "minted_after", "minted_before", "runtime_min", "runtime_max", "limit"} <= set(filters)
    assert set(tools["search_vectors"].output_schema["properties"]) >= {"results", "count", "collection"}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_tool_results_match_brute_force_over_the_inserted_records(
        transport: str, library: Library, errlog: TextIO) -> None:
    drama = [i for i, r in enumerate(library.records) if "drama" in r["metadata"]["genre"]]
    async with session_for(transport, library, errlog) as session:
        listed = ok(await session.call_tool("list_collections", {}))["collections"]
        assert [(c["name"], c["dimension"], c["metric"], c.get("metadata_schema"), c["count"]) for c in listed] == [
            ("empty", 3, "l2", None, 0), ("videos", DIM, "cosine", "video_nft", 150)]
        assert listed[1]["stats"]["recent"] == 150 and "count" not in listed[1]["stats"]

        query = np.random.default_rng(11).standard_normal(DIM).astype(np.float32)
        found = ok(await session.call_tool("search_vectors", {"collection": "videos", "vector": query.tolist(),
                                                               "k": 7}))
        assert [r["id"] for r in found["results"]] == library.nearest(query, 7) and found["count"] == 7
        top = found["results"][0]
        cosine = float(np.dot(query, library.vectors[library.ids.index(top["id"])])
                       / np.linalg.norm(query) / np.linalg.norm(library.vectors[library.ids.index(top["id"])]))
        assert top["score"] == pytest.approx((1 + cosine) / 2, abs=1e-5)
        assert top["metadata"]["title"] == library.records[library.ids.index(top["id"])]["metadata"]["title"]

        filtered = ok(await session.call_tool("search_vectors", {
            "collection": "videos", "vector": query.tolist(), "k": 5, "filter": {"genre": "drama"}}))
        assert [r["id"] for r in filtered["results"]] == library.nearest(query, 5, drama)

        for i in (0, 42, 149):
            similar = ok(await session.call_tool("find_similar", {"collection": "videos", "id": library.ids[i],
                                                                  "k": 10}))
            others = [j for j in range(150) if j != i]
            assert [r["id"] for r in similar["results"]] == library.nearest(library.vectors[i], 10, others)
            assert similar["source_id"] == library.ids[i]
        similar_drama = ok(await session.call_tool("find_similar", {
            "collection": "videos", "id": library.ids[3], "k": 4, "filter": {"genre": "drama"}}))
        assert [r["id"] for r in similar_drama["results"]] == library.nearest(
            library.vectors[3], 4, [j for j in drama if j != 3])

        record = ok(await session.call_tool("get_record", {"collection": "videos", "id": "0xfeed:12"}))
        assert record["metadata"] == {**library.records[12]["metadata"], "id": "12"} and "vector" not in record
        with_vector = ok(await session.call_tool("get_record", {"collection": "videos", "id": "0xfeed:12",
                                                                "include_vector": True}))
        unit = library.vectors[12] / np.linalg.norm(library.vectors[12])
        assert np.allclose(with_vector["vector"], unit, atol=1e-6)

        page = ok(await session.call_tool("filter_records", {
            "collection": "videos", "genre": ["drama", "horror"], "type": "video", "minted_after": "2024-03-01",
            "minted_before": "2024-10-01T00:00:00Z", "runtime_min": 80, "runtime_max": 190, "limit": 4}))
    wanted = [library.ids[i] for i, r in enumerate(library.records)
              if {"drama", "horror"} & set(r["metadata"]["genre"]) and r["metadata"]["type"] == "video"
              and "2024-03-01" <= r["metadata"]["mintDateTime"] < "2024-10-01"
              and 80 <= r["metadata"]["attributes"][0]["value"] <= 190]
    assert page["total"] == len(wanted) > 4 and page["count"] == 4
    assert {r["id"] for r in page["records"]} <= set(wanted)
    assert page["filter"] == {"$and": [
        {"genre": {"$in": ["drama", "horror"]}}, {"type": "video"},
        {"mintDateTime": {"$gte": "2024-03-01", "$lt": "2024-10-01T00:00:00Z"}},
        {"attributes.runtime": {"$gte": 80, "$lte": 190}}]}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_mistakes_come_back_as_tool_errors_that_name_the_problem(
        transport: str, library: Library, errlog: TextIO) -> None:
    async with session_for(transport, library, errlog) as session:
        unknown = await session.call_tool("search_vectors", {"collection": "nope", "vector": [1.0] * DIM})
        assert "collection_not_found" in error_text(unknown) and "'nope'" in error_text(unknown)
        short = await session.call_tool("search_vectors", {"collection": "videos", "vector": [1.0, 2.0]})
        assert "dimension_mismatch" in error_text(short) and "2 dimensions" in error_text(short)
        missing = await session.call_tool("find_similar", {"collection": "videos", "id": "0xfeed:999"})
        assert "record_not_found" in error_text(missing)
        missing = await session.call_tool("get_record", {"collection": "videos", "id": "0xfeed:999"})
        assert "record_not_found" in error_text(missing)
        bad_filter = await session.call_tool("filter_records", {"collection": "videos",
                                                                "filter": {"genre": {"$regex": "dr"}}})
        assert "invalid_request" in error_text(bad_filter) and "$regex" in error_text(bad_filter)
        bad_date = await session.call_tool("filter_records", {"collection": "videos", "minted_after": "last week"})
        assert "minted_after" in error_text(bad_date) and "ISO 8601" in error_text(bad_date)
        bad_k = await session.call_tool("search_vectors", {"collection": "videos", "vector": [1.0] * DIM, "k": 0})
        assert "k" in error_text(bad_k)
        bad_type = await session.call_tool("filter_records", {"collection": "videos", "type": "movie"})
        assert "type" in error_text(bad_type)
        # the session is still usable after errors
        assert ok(await session.call_tool("list_collections", {}))["collections"]


@pytest.mark.e2e
async def test_http_endpoint_needs_a_known_api_key_before_the_mcp_app_sees_the_request(library: Library) -> None:
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}}
    headers = {"Accept": "application/json, text/event-stream"}
    async with httpx2.AsyncClient() as http:
        for key, status in ((None, 401), ("not-a-known-key-0123", 401), (READ, 200), (WRITE, 200)):
            auth = {"Authorization": f"Bearer {key}"} if key else {}
            resp = await http.post(f"{library.daemon.url}/mcp", json=initialize, headers={**headers, **auth})
            assert resp.status_code == status, resp.text
            if status == 401:
                assert resp.json()["error"]["code"] == "unauthorized"
            else:
                assert resp.json()["result"]["serverInfo"]["name"] == "s5vec"
        resp = await http.get(f"{library.daemon.url}/mcp", headers={"Authorization": f"Bearer {READ}"})
        assert resp.status_code == 405 and resp.headers["Allow"] == "POST"
    async with http_session(library.daemon.url, READ) as session:  # the read scope is enough
        assert ok(await session.call_tool("list_collections", {}))["collections"]


@pytest.mark.e2e
async def test_stdio_server_reports_a_missing_key_and_an_unreachable_daemon(library: Library,
                                                                            errlog: TextIO) -> None:
    async with stdio_session(library.daemon.url, None, errlog) as session:
        denied = await session.call_tool("list_collections", {})
        assert "unauthorized" in error_text(denied) and "S5VEC_API_KEY" in error_text(denied)
    async with stdio_session("http://127.0.0.1:9", READ, errlog) as session:  # discard port: nobody there
        down = await session.call_tool("get_record", {"collection": "videos", "id": "0xfeed:1"})
        assert "daemon_unreachable" in error_text(down) and "127.0.0.1:9" in error_text(down)


# ------------------------------------------------------------------- README
def readme_section() -> str:
    return (REPO / "docs" / "mcp.md").read_text()


def quickstart_videos(url: str) -> None:
    """The state the Quick start leaves: trailer-1 and trailer-2 in ``videos`` (trailer-3 deleted)."""
    assert call(url, "POST", f"{API}/collections", {"name": "videos", "dimension": 4, "metric": "cosine"})[0] == 201
    assert call(url, "POST", f"{API}/collections/videos/vectors/batch", {"vectors": [
        {"id": "trailer-1", "vector": [0.1, 0.9, 0.0, 0.2], "metadata": {"genre": ["sci-fi"], "views": 1200}},
        {"id": "trailer-2", "vector": [0.8, 0.1, 0.1, 0.0], "metadata": {"genre": ["drama"], "views": 90}},
        {"id": "trailer-3", "vector": [0.2, 0.8, 0.1, 0.1], "metadata": {"genre": ["sci-fi", "drama"]}}]})[0] == 200
    assert call(url, "DELETE", f"{API}/collections/videos/vectors/trailer-3")[0] == 200


@pytest.mark.e2e
async def test_readme_python_example_runs_against_the_daemon(tmp_path: Path) -> None:
    code = re.search(r'```python title="mcp-example"\n(.*?)```', readme_section(), re.DOTALL).group(1)  # type: ignore[union-attr]
    daemon = Daemon(tmp_path / "data", env=KEYS_ENV).start()
    try:
        quickstart_videos(daemon.url)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, env={**os.environ, "S5VEC_URL": daemon.url, "S5VEC_API_KEY": READ},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
    finally:
        daemon.stop()
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[:3] == ["videos 4 2", "['trailer-2']", "1 drama"], lines
    assert lines[3].startswith("True ") and "dimension_mismatch" in lines[3]


@pytest.mark.e2e
async def test_readme_agent_host_config_starts_a_working_stdio_server(tmp_path: Path, errlog: TextIO) -> None:
    config = json.loads(re.search(r"```json\n(.*?)```", readme_section(), re.DOTALL).group(1))  # type: ignore[union-attr]
    server = config["mcpServers"]["s5vec"]
    command = shutil.which(server["command"], path=str(Path(sys.executable).parent))
    assert command is not None and server["args"] == ["mcp"]
    assert set(server["env"]) == {"S5VEC_URL", "S5VEC_API_KEY"}
    daemon = Daemon(tmp_path / "data", env=KEYS_ENV).start()
    try:
        quickstart_videos(daemon.url)
        params = StdioServerParameters(command=command, args=server["args"],
                                       env={**server["env"], "S5VEC_URL": daemon.url, "S5VEC_API_KEY": READ})
        async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            record = ok(await session.call_tool("get_record", {"collection": "videos", "id": "trailer-1"}))
    finally:
        daemon.stop()
    assert record["metadata"] == {"genre": ["sci-fi"], "views": 1200}


# ------------------------------------------------------------------ in process
def test_filter_records_arguments_map_to_the_video_nft_fields() -> None:
    assert metadata_filter() == {}
    assert metadata_filter(genre="drama") == {"genre": "drama"}
    assert metadata_filter(nft_type="audio", runtime_max=90) == {
        "$and": [{"type": "audio"}, {"attributes.runtime": {"$lte": 90}}]}
    assert metadata_filter(minted_before="2024-01-01", extra={"views": {"$gt": 5}}) == {
        "$and": [{"mintDateTime": {"$lt": "2024-01-01"}}, {"views": {"$gt": 5}}]}
    with pytest.raises(ToolError, match="minted_before must be an ISO 8601"):
        metadata_filter(minted_before="yesterday")
    with pytest.raises(ToolError, match="runtime_min is greater than runtime_max"):
        metadata_filter(runtime_min=100, runtime_max=10)


def test_filter_records_type_choices_are_the_schema_types() -> None:
    assert get_args(NftType) == NFT_TYPES


async def test_in_process_endpoint_without_keys_refuses_a_rebound_host_name(make_client: Any) -> None:
    client = await make_client()
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    accept = {"Accept": "application/json, text/event-stream"}
    resp = await client.post("/mcp", json=ping, headers={**accept, "Host": "attacker.example:7533"})
    assert resp.status == 421
    resp = await client.post("/mcp", json=ping, headers={**accept, "Origin": "http://attacker.example"})
    assert resp.status == 403
    assert (await client.delete("/mcp")).status == 405
    url = str(client.make_url("/mcp"))
    async with (httpx2.AsyncClient() as http, streamable_http_client(url, http_client=http) as (read, write),
                ClientSession(read, write) as session):
        await session.initialize()
        assert ok(await session.call_tool("list_collections", {})) == {"collections": []}


async def test_in_process_endpoint_with_keys_answers_401_and_403_like_the_rest_api(make_client: Any) -> None:
    client = await make_client(env={"S5VEC_API_KEYS": f"{READ}:read"})
    assert (await client.post("/mcp", json={})).status == 401
    resp = await client.post("/mcp", json={}, headers={"Authorization": "Bearer wrong-key-0123456789"})
    assert resp.status == 401 and (await resp.json())["error"]["code"] == "unauthorized"


async def test_list_route_pages_through_the_records_that_match_a_filter(client: Any) -> None:
    await client.post(f"{API}/collections", json={"name": "v", "dimension": 2})
    vectors = [{"id": f"r{i}", "vector": [1, i], "metadata": {"n": i, "even": i % 2 == 0}} for i in range(30)]
    assert (await (await client.post(f"{API}/collections/v/vectors/batch", json={"vectors": vectors})).json())[
        "failed"] == 0
    every = await (await client.get(f"{API}/collections/v/vectors")).json()
    assert every["total"] == 30 and every["count"] == 30 and "vector" not in every["records"][0]
    spec = json.dumps({"even": True, "n": {"$gte": 10}})
    seen: list[str] = []
    for offset in (0, 4, 8):
        page = await (await client.get(f"{API}/collections/v/vectors",
                                       params={"filter": spec, "limit": "4", "offset": str(offset)})).json()
        assert page["total"] == 10
        seen += [r["id"] for r in page["records"]]
    assert sorted(seen, key=lambda s: int(s[1:])) == [f"r{i}" for i in range(10, 30, 2)]
    one = await (await client.get(f"{API}/collections/v/vectors",
                                  params={"filter": '{"n": 3}', "include_vector": "true"})).json()
    assert one["records"][0]["id"] == "r3" and len(one["records"][0]["vector"]) == 2
    for params, field in (({"filter": "[1]"}, "filter"), ({"filter": "{"}, "filter"), ({"limit": "0"}, "limit"),
                          ({"limit": "1001"}, "limit"), ({"offset": "-1"}, "offset"), ({"limit": "x"}, "limit")):
        resp = await client.get(f"{API}/collections/v/vectors", params=params)
        assert resp.status == 400 and (await resp.json())["error"]["field"] == field
    resp = await client.get(f"{API}/collections/v/vectors", params={"filter": '{"n": {"$bad": 1}}'})
    assert resp.status == 400
    assert (await client.get(f"{API}/collections/nope/vectors")).status == 404


# --------------------------------------------------------------- ASGI bridge
def bridged(asgi: Any) -> web.Application:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await call_asgi(asgi, request, {"marker": "extra"})
    app = web.Application(middlewares=[error_middleware])
    app.router.add_route("*", "/asgi", handler)
    return app


async def test_bridge_streams_the_body_both_ways_and_keeps_repeated_headers(aiohttp_client: Any) -> None:
    seen: dict[str, Any] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.update(scope)
        body = b""
        while True:
            message = await receive()
            body += message["body"]
            if not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 207,
                    "headers": [(b"x-count", b"1"), (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")]})
        for part in (b"size=", str(len(body)).encode(), b";"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": body[-3:]})

    client = await aiohttp_client(bridged(app))
    payload = bytes(range(256)) * 8192  # 2 MiB: many chunks
    resp = await client.post("/asgi?q=1&r=%20", data=io.BytesIO(payload), headers={"X-Mixed-Case": "v"})
    assert resp.status == 207 and await resp.read() == f"size={len(payload)};".encode() + payload[-3:]
    assert resp.headers.getall("Set-Cookie") == ["a=1", "b=2"] and resp.headers["X-Count"] == "1"
    assert seen["method"] == "POST" and seen["path"] == "/asgi" and seen["query_string"] == b"q=1&r=%20"
    assert (b"x-mixed-case", b"v") in seen["headers"] and seen["marker"] == "extra"
    assert seen["client"][0] == "127.0.0.1" and seen["http_version"] == "1.1"


async def test_bridge_reports_a_client_that_goes_away_as_http_disconnect() -> None:
    messages: list[Message] = []
    done = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        messages.append(await receive())
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"streaming", "more_body": True})
        messages.append(await receive())  # blocks until the client hangs up
        done.set()

    # like the daemon's runner: no handler cancellation on disconnect (aiohttp's test server has it)
    runner = web.AppRunner(bridged(app))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /asgi HTTP/1.1\r\nHost: test\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(5):
            assert b"streaming" in await reader.readuntil(b"streaming")
        writer.close()
        await writer.wait_closed()
        async with asyncio.timeout(5):
            await done.wait()
    finally:
        await runner.cleanup()
    assert messages == [{"type": "http.request", "body": b"", "more_body": False}, {"type": "http.disconnect"}]


async def test_bridge_errors_before_the_response_get_the_json_error_shape(aiohttp_client: Any) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise ValueError("boom")

    async def silent(scope: Scope, receive: Receive, send: Send) -> None:
        return None

    client = await aiohttp_client(bridged(app))
    resp = await client.get("/asgi")
    assert resp.status == 500 and (await resp.json())["error"]["code"] == "internal_error"
    client = await aiohttp_client(bridged(silent))
    assert (await client.get("/asgi")).status == 500


async def test_bridge_closes_the_connection_when_the_app_fails_mid_response(aiohttp_client: Any) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise ValueError("boom")

    client = await aiohttp_client(bridged(app))
    resp = await client.get("/asgi")
    assert resp.status == 200
    with pytest.raises(Exception):  # noqa: B017 - the body is cut off: whichever error aiohttp reports
        await resp.read()
