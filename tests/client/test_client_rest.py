"""The Python client's REST calls against a real ``s5vec serve`` subprocess, its error
mapping, and its retries against a failing endpoint."""

from __future__ import annotations

import ast
import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from conftest import REPO, Daemon, free_port
from s5vec.client import (
    AsyncClient,
    BatchResult,
    Client,
    CollectionNotFound,
    Conflict,
    ConnectionFailed,
    DimensionMismatch,
    Forbidden,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    Record,
    RecordNotFound,
    RetryPolicy,
    S5vecError,
    Unauthorized,
    Unavailable,
)
from s5vec.client.errors import error_from

pytestmark = pytest.mark.e2e
FAST = RetryPolicy(retries=3, base_delay=0.01, max_delay=0.05)
READ, ADMIN = "read-key-0123456789", "admin-key-0123456789"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A daemon with API keys and a 4 KiB body limit."""
    daemon = Daemon(tmp_path_factory.mktemp("secured") / "data",
                    {"S5VEC_API_KEYS": f"{READ}:read;{ADMIN}:admin", "S5VEC_HTTP__MAX_BODY_BYTES": "4096"}).start()
    yield daemon
    daemon.stop()


@pytest.fixture
async def client(live: Daemon) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(live.url, retry=FAST) as c:
        yield c


async def test_collections_are_created_listed_inspected_and_dropped(client: AsyncClient) -> None:
    info = await client.create_collection("c-life", 3, "l2", payload_indexes={"genre": "keyword"},
                                          hnsw={"m": 8, "ef_search": 32})
    assert (info.name, info.dimension, info.metric, info.count) == ("c-life", 3, "l2", 0)
    assert info.stats["payload_indexes"] == {"genre": "keyword"}
    again = await client.create_collection("c-life", 3, "l2", payload_indexes={"genre": "keyword"},
                                           hnsw={"m": 8, "ef_search": 32})
    assert again.name == "c-life"  # identical: answered as is (create is idempotent)
    with pytest.raises(Conflict) as conflict:
        await client.create_collection("c-life", 4)
    assert conflict.value.status == 409 and conflict.value.code == "collection_exists"
    assert "c-life" in [c.name for c in await client.list_collections()]
    assert (await client.get_collection("c-life")).dimension == 3
    await client.drop_collection("c-life")
    with pytest.raises(CollectionNotFound):
        await client.get_collection("c-life")


async def test_records_round_trip_through_upsert_get_update_and_delete(client: AsyncClient) -> None:
    await client.create_collection("c-rec", 4, "l2")
    odd_id = "trailer/1 ?&#%"  # path segments are percent-encoded
    assert await client.upsert("c-rec", odd_id, np.array([0.5, 0.25, 0, 1], np.float32),
                               {"genre": ["sci-fi"]}, timestamp="2026-01-02T03:04:05Z") == odd_id
    record = await client.get("c-rec", odd_id)
    assert isinstance(record, Record)
    assert record.vector == [0.5, 0.25, 0.0, 1.0] and record.metadata == {"genre": ["sci-fi"]}
    assert record.timestamp == 1767323045.0
    assert (await client.get("c-rec", odd_id, include_vector=False)).vector is None
    await client.update_metadata("c-rec", odd_id, {"genre": ["drama"], "views": 3})
    assert (await client.get("c-rec", odd_id)).metadata == {"genre": ["drama"], "views": 3}
    await client.update_metadata("c-rec", odd_id, {"views": 91, "rating": {"imdb": 7}}, merge=True)
    assert (await client.get("c-rec", odd_id)).metadata == {"genre": ["drama"], "views": 91, "rating": {"imdb": 7}}
    await client.update_metadata("c-rec", odd_id, {"genre": None, "rating": {"mpaa": "PG"}}, merge=True)
    assert (await client.get("c-rec", odd_id)).metadata == {"views": 91, "rating": {"imdb": 7, "mpaa": "PG"}}
    await client.update_metadata("c-rec", odd_id, {"views": 1})
    assert (await client.get("c-rec", odd_id)).metadata == {"views": 1}
    await client.delete("c-rec", odd_id)
    with pytest.raises(RecordNotFound) as missing:
        await client.get("c-rec", odd_id)
    assert missing.value.status == 404 and missing.value.code == "record_not_found"
    with pytest.raises(RecordNotFound):
        await client.delete("c-rec", odd_id)


async def test_batches_split_at_the_server_limit_and_report_errors_by_overall_index(client: AsyncClient) -> None:
    await client.create_collection("c-batch", 2, "l2")
    records: list[Any] = [{"id": f"r{i}", "vector": [float(i), 1.0]} for i in range(10_003)]
    records[3] = {"id": "bad-dim", "vector": [1.0, 2.0, 3.0]}
    records[10_001] = Record(id="bad-field", vector=[1.0, 1.0], metadata="nope")  # type: ignore[arg-type]
    result = await client.upsert_batch("c-batch", records)
    assert isinstance(result, BatchResult) and not result.ok
    assert (result.successful, result.failed) == (10_001, 2)
    assert [(e.index, e.id, e.error.code) for e in result.errors] == [
        (3, "bad-dim", "dimension_mismatch"), (10_001, None, "invalid_request")]
    assert (await client.get_collection("c-batch")).count == 10_001
    assert (await client.upsert_batch("c-batch", [])).successful == 0


async def test_search_with_filter_options_and_scoring(client: AsyncClient) -> None:
    await client.create_collection("c-search", 3, "cosine")
    await client.upsert_batch("c-search", [
        {"id": "a", "vector": [1, 0, 0], "metadata": {"genre": "drama", "views": 5}},
        {"id": "b", "vector": [0.9, 0.1, 0], "metadata": {"genre": "comedy", "views": 50}},
        {"id": "c", "vector": [0, 1, 0], "metadata": {"genre": "drama", "views": 500}}])
    everything = await client.search("c-search", [1, 0, 0], k=3)
    assert everything.ids == ["a", "b", "c"] and len(everything) == 3
    assert everything.hits[0].score == pytest.approx(1.0) and everything.hits[0].metadata is not None
    dramas = await client.search("c-search", np.array([1, 0, 0]), k=3, filter={"genre": "drama"}, ef=16,
                                 include_vector=True, include_metadata=False)
    assert [h.id for h in dramas] == ["a", "c"]
    assert dramas.hits[0].vector == pytest.approx([1.0, 0.0, 0.0]) and dramas.hits[0].metadata is None
    close = await client.search("c-search", [1, 0, 0], k=3, score_threshold=0.9)
    assert close.ids == ["a", "b"]
    boosted = await client.search("c-search", [1, 0, 0], k=3, scoring={
        "popularity": {"field": "views", "weight": 1.0, "scale": 10.0}})
    assert boosted.ids[0] != "a"  # popularity lifted a more-viewed record
    with pytest.raises(DimensionMismatch) as wrong:
        await client.search("c-search", [1, 0], k=3)
    assert wrong.value.status == 422
    with pytest.raises(InvalidRequest) as bad:
        await client.search("c-search", [1, 0, 0], k=0)
    assert bad.value.field == "k"


async def test_delete_many_by_ids_and_by_filter(client: AsyncClient) -> None:
    await client.create_collection("c-del", 2, "l2")
    await client.upsert_batch("c-del", [{"id": str(i), "vector": [i, 1], "metadata": {"even": i % 2 == 0}}
                                        for i in range(10)])
    assert await client.delete_many("c-del", ids=["0", "1", "missing"]) == 2
    assert await client.delete_many("c-del", filter={"even": True}) == 4
    assert (await client.get_collection("c-del")).count == 4
    with pytest.raises(InvalidRequest):
        await client.delete_many("c-del", filter={})


async def test_find_and_export_page_through_records(client: AsyncClient) -> None:
    await client.create_collection("c-exp", 2, "l2")
    await client.upsert_batch("c-exp", [{"id": f"r{i:04d}", "vector": [i, 0.5], "metadata": {"i": i}}
                                        for i in range(2500)])
    found = await client.find("c-exp", {"i": {"$lt": 10}}, limit=5)
    assert found.count == 5 and found.total == 10
    exported = [r async for r in client.export("c-exp")]
    assert [r.id for r in exported] == [f"r{i:04d}" for i in range(2500)]  # id order, every page
    assert exported[7].vector == [7.0, 0.5] and exported[7].metadata == {"i": 7}
    after = [r.id async for r in client.export("c-exp", include_vector=False, after="r2497")]
    assert after == ["r2498", "r2499"]
    with pytest.raises(CollectionNotFound):
        [r async for r in client.export("nope")]


async def test_ingest_streams_records_and_reports_bad_lines(client: AsyncClient) -> None:
    await client.create_collection("c-ing", 2, "l2")
    seen: list[int] = []

    async def records() -> AsyncIterator[Any]:
        for i in range(3000):
            yield {"id": f"a{i}", "vector": [i, 1]}
        yield b'{"id": "bad", "vector": [1, 2, 3]}'
        yield Record(id="last", vector=[0.0, 1.0])

    result = await client.ingest("c-ing", records(), progress=seen.append)
    assert (result.lines, result.successful, result.failed) == (3002, 3001, 1)
    assert [(e.line, e.id, e.error.code) for e in result.errors] == [(3001, "bad", "dimension_mismatch")]
    assert sum(seen) == 3002
    raw = await client.ingest("c-ing", b'{"id": "x", "vector": [1, 1]}\n\n{"vector": 5}\n')
    assert (raw.successful, raw.failed, raw.errors[0].line) == (1, 1, 3)
    assert (await client.get_collection("c-ing")).count == 3002
    with pytest.raises(CollectionNotFound):
        await client.ingest("nope", [{"id": "a", "vector": [1, 1]}])


async def test_admin_calls_health_and_readiness(client: AsyncClient) -> None:
    assert (await client.health())["status"] == "ok"
    assert await client.ready()
    await client.create_collection("c-admin", 2, "l2")
    await client.upsert("c-admin", "a", [1, 0])
    checkpoint = await client.checkpoint()
    assert checkpoint["lsn"] >= 1
    stats = await client.statistics()
    assert "c-admin" in stats["collections"] and "storage" in stats
    assert isinstance(await client.migrate(), dict)
    assert isinstance(await client.tune_collection("c-admin", 0.9, 10), dict)


async def test_keys_scopes_and_body_limit_map_to_exceptions(secured: Daemon) -> None:
    async with AsyncClient(secured.url, retry=FAST) as anonymous:
        with pytest.raises(Unauthorized) as no_key:
            await anonymous.list_collections()
        assert no_key.value.status == 401
        assert (await anonymous.health())["status"] == "ok"  # public
    async with AsyncClient(secured.url, READ, retry=FAST) as reader:
        assert await reader.list_collections() == []
        with pytest.raises(Forbidden):
            await reader.create_collection("v", 2)
    async with AsyncClient(secured.url, ADMIN, retry=FAST) as admin:
        await admin.create_collection("v", 2)
        with pytest.raises(PayloadTooLarge) as large:
            await admin.upsert_batch("v", [{"id": str(i), "vector": [i, 1]} for i in range(500)])
        assert large.value.status == 413


def test_error_codes_and_statuses_map_to_exception_classes() -> None:
    cases = [(404, "collection_not_found", CollectionNotFound), (404, "record_not_found", RecordNotFound),
             (404, "subscription_not_found", NotFound), (400, "invalid_request", InvalidRequest),
             (422, "dimension_mismatch", DimensionMismatch), (409, "collection_exists", Conflict),
             (503, "storage_unavailable", Unavailable), (503, "something_new", Unavailable),
             (418, "teapot", S5vecError)]
    for status, code, kind in cases:
        error = error_from(status, {"error": {"code": code, "message": "m", "field": "f"}})
        assert type(error) is kind and (error.status, error.code, error.field) == (status, code, "f")
    proxy = error_from(502, "<html>bad gateway</html>")
    assert isinstance(proxy, Unavailable) and proxy.code == "http_502"
    assert issubclass(DimensionMismatch, InvalidRequest) and issubclass(RecordNotFound, NotFound)


@pytest.fixture
async def flaky() -> AsyncIterator[tuple[str, list[str]]]:
    """A tiny server whose every route answers 503 twice (with Retry-After: 0), then 200."""
    calls: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        calls.append(f"{request.method} {request.path}")
        if sum(1 for c in calls if c == calls[-1]) <= 2:
            return web.json_response({"error": {"code": "storage_unavailable", "message": "later"}}, status=503,
                                     headers={"Retry-After": "0"})
        if request.path.endswith("/search"):
            return web.json_response({"results": [{"id": "a", "distance": 0.0, "score": 1.0}], "count": 1,
                                      "search_time_ms": 0.1})
        return web.json_response({"collections": [], "deleted": "x"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    yield f"http://127.0.0.1:{port}", calls
    await runner.cleanup()


async def test_idempotent_calls_are_retried_on_503_and_others_are_not(flaky: tuple[str, list[str]]) -> None:
    url, calls = flaky
    async with AsyncClient(url, retry=FAST) as client:
        assert await client.list_collections() == []
        assert calls == ["GET /api/v1/collections"] * 3
        assert (await client.search("v", [1, 0])).ids == ["a"]  # a search is safe to repeat
        calls.clear()
        with pytest.raises(Unavailable) as refused:
            await client.drop_collection("v")  # not idempotent: one attempt
        assert refused.value.status == 503 and calls == ["DELETE /api/v1/collections/v"]
    async with AsyncClient(url, retry=RetryPolicy(retries=1, base_delay=0.01)) as impatient:
        calls.clear()
        with pytest.raises(Unavailable):
            await impatient.get_collection("w")
        assert len(calls) == 2


async def test_connection_refused_is_retried_with_backoff_then_raises() -> None:
    port = free_port()  # nothing listens there
    started = asyncio.get_running_loop().time()
    async with AsyncClient(f"http://127.0.0.1:{port}", retry=RetryPolicy(retries=3, base_delay=0.05)) as client:
        with pytest.raises(ConnectionFailed) as failed:
            await client.drop_collection("v")  # even a non-idempotent call: nothing reached a server
        assert failed.value.status is None and failed.value.code == "connection_failed"
        assert not await client.ready()
    assert asyncio.get_running_loop().time() - started < 5


def test_backoff_grows_exponentially_with_jitter_and_honours_retry_after() -> None:
    policy = RetryPolicy(retries=5, base_delay=0.1, max_delay=1.0)
    for attempt in range(6):
        delays = [policy.delay(attempt) for _ in range(200)]
        assert 0 <= min(delays) and max(delays) <= min(1.0, 0.1 * 2 ** attempt)
        assert len(set(delays)) > 100  # jitter
    assert policy.delay(0, "0.5") == 0.5 and policy.delay(0, "30") == 1.0


async def test_sync_client_works_with_a_running_event_loop_in_the_calling_thread(live: Daemon) -> None:
    # as in Jupyter: this coroutine runs on a loop, and the blocking client still works
    with Client(live.url) as client:
        client.create_collection("c-sync", 2, "l2")
        client.upsert("c-sync", "a", [1, 0], {"k": 1})
        assert client.upsert_batch("c-sync", [{"id": "b", "vector": [0, 1]}]).successful == 1
        assert client.search("c-sync", [1, 0], k=1).ids == ["a"]
        assert client.get("c-sync", "a").metadata == {"k": 1}
        assert [r.id for r in client.export("c-sync")] == ["a", "b"]
        assert client.ingest("c-sync", [{"id": "c", "vector": [1, 1]}]).successful == 1
        assert client.delete_many("c-sync", ids=["c"]) == 1
        with pytest.raises(RecordNotFound):
            client.get("c-sync", "c")


def test_client_package_depends_only_on_aiohttp_and_msgspec() -> None:
    for path in (REPO / "clients" / "python" / "client").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                assert not node.module.startswith("s5vec."), f"{path.name} imports {node.module}"
    code = ("import sys, s5vec.client, s5vec.client.cli; "
            "print(sorted(m for m in ('s5vec.daemon', 's5vec.index', 's5vec.ops', 'numpy', 'faiss', 'hnswlib') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"


def test_idempotent_documentation_matches_the_methods() -> None:
    from s5vec.client import IDEMPOTENT
    methods = {name.split("(")[0] for name in IDEMPOTENT}
    assert methods <= set(dir(AsyncClient)), methods - set(dir(AsyncClient))
    assert Path(REPO / "clients" / "python" / "client" / "async_client.py").is_file()
