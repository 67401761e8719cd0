"""The OpenAPI document is as strict as the server and usable by third-party tooling:
openapi-python-client generates a client from the served document without a warning and
with one readable method per operation (its operationId), and that client talks to the
daemon; POST-only paths answer any other method with 405 and ``Allow: POST``."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon

from s5vec.daemon.openapi import OPERATION_IDS, build_openapi
from s5vec.daemon.rest import VERSION

API = "/api/v1"
GENERATOR = Path(sys.executable).parent / "openapi-python-client"
# the NDJSON bodies (ingest, export), Arrow streams (bulk) and the SSE feed as bytes: the generator
# has no codec for them
GENERATOR_CONFIG = "content_type_overrides:\n  application/x-ndjson: application/octet-stream\n" \
                   "  text/event-stream: application/octet-stream\n" \
                   "  application/vnd.apache.arrow.stream: application/octet-stream\n"


def operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(method, path): op for path, item in doc["paths"].items() for method, op in item.items()}


def test_every_operation_has_a_unique_readable_operation_id_and_a_tag() -> None:
    ops = operations(build_openapi(VERSION))
    ids = [op["operationId"] for op in ops.values()]
    assert len(ids) == len(set(ids))
    assert all(op["tags"] for op in ops.values())
    assert {key: ops[key]["operationId"] for key in OPERATION_IDS if key in ops} == \
        {key: name for key, name in OPERATION_IDS.items() if key in ops}
    assert ops[("get", "/api/v1/collections")]["operationId"] == "list_collections"


def test_schemas_carry_the_rules_the_server_enforces() -> None:
    doc = build_openapi(VERSION)
    schemas = doc["components"]["schemas"]
    assert [alt["required"] for alt in schemas["VectorIn"]["oneOf"]] == [["vector"], ["text"]]
    assert [alt["required"] for alt in schemas["SearchIn"]["oneOf"]] == [["vector"], ["text"]]
    assert [alt["required"] for alt in schemas["DeleteIn"]["oneOf"]] == [["ids"], ["filter"]]
    assert [alt["title"] for alt in schemas["VectorIn"]["oneOf"]] == ["VectorRecord", "TextRecord"]
    assert schemas["VectorIn"]["required"] == ["id"]
    assert set(schemas["Filter"]["properties"]) == {"$and", "$or", "$not"}
    assert set(schemas["FilterOperators"]["properties"]) == {"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in",
                                                             "$nin", "$exists", "$not"}
    find = doc["paths"]["/api/v1/collections/{c}/vectors"]["get"]["parameters"]
    assert next(p for p in find if p["name"] == "filter")["content"]["application/json"]["schema"] == \
        {"$ref": "#/components/schemas/Filter"}
    assert "/api/v1/ws" not in doc["paths"] and "/api/v1/ws" in doc["info"]["description"]
    assert schemas["CollectionIn"]["properties"]["name"]["pattern"] == "^[a-z0-9_-]{1,64}$"
    assert schemas["CollectionIn"]["properties"]["metric"]["enum"] == ["cosine", "l2", "ip"]
    listing = doc["paths"]["/api/v1/collections"]["get"]["responses"]["200"]["content"]["application/json"]
    assert listing["schema"]["properties"]["collections"]["items"]["required"] == ["name", "dimension", "metric",
                                                                                     "count"]
    assert "/api/v1/collections/{c}/ingest" in doc["paths"]


async def test_an_integral_float_is_an_integer_as_in_json_schema(client: Any) -> None:
    made = await client.post(f"{API}/collections", json={"name": "f", "dimension": 2.0, "hnsw": {"m": 8.0}})
    assert made.status == 201, await made.text()
    assert (await made.json())["dimension"] == 2
    assert (await client.post(f"{API}/collections/f/vectors", json={"id": 7.0, "vector": [1, 0]})).status == 201
    found = await client.post(f"{API}/collections/f/search", json={"vector": [1, 0], "k": 1.0})
    assert [r["id"] for r in (await found.json())["results"]] == ["7"]
    for body, field in (({"name": "g", "dimension": 2.5}, "dimension"), ({"name": "g", "dimension": "2"}, "dimension"),
                        ({"name": "g", "dimension": 0.0}, "dimension"), ({"name": "g", "dimension": 2, "hnsw": {
                            "m": 1e30}}, "hnsw.m")):
        resp = await client.post(f"{API}/collections", json=body)
        assert resp.status == 400 and (await resp.json())["error"]["field"] == field, body


@pytest.mark.parametrize("body, field", [({"text": None}, "vector"), ({}, "vector"), ({"vector": None}, "vector"),
                                         ({"vector": [1, 0], "text": "a"}, "text"),
                                         ({"vector": [1, 0], "filter": {"$nor": []}}, "filter")])
async def test_a_bad_search_of_the_default_collection_is_400_before_anything_was_upserted(
        client: Any, body: dict[str, Any], field: str) -> None:
    resp = await client.post(f"{API}/search", json=body)
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["error"]["field"] == field
    nothing = await client.post(f"{API}/search", json={"vector": [1, 0]})
    assert nothing.status == 200 and (await nothing.json())["results"] == []


@pytest.mark.parametrize("method, path", [
    ("GET", f"{API}/collections/v/vectors/batch"), ("PUT", f"{API}/collections/v/vectors/batch"),
    ("TRACE", f"{API}/collections/v/vectors/batch"), ("DELETE", f"{API}/collections/v/vectors/delete"),
    ("PATCH", f"{API}/collections/v/vectors/delete"), ("GET", f"{API}/vectors/batch"),
])
async def test_another_method_on_a_post_only_path_is_405_allowing_only_post(client: Any, method: str,
                                                                            path: str) -> None:
    assert (await client.post(f"{API}/collections", json={"name": "v", "dimension": 2})).status == 201
    resp = await client.request(method, path, json={"metadata": {}})
    assert resp.status == 405
    assert resp.headers["Allow"] == "POST"
    assert (await resp.json())["error"]["code"] == "method_not_allowed"


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_openapi_python_client_generates_a_working_client_without_warnings(daemon: Daemon, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    daemon.start()
    with urllib.request.urlopen(daemon.url + "/openapi.json", timeout=10) as resp:
        doc = json.loads(resp.read())
    (tmp_path / "openapi.json").write_text(json.dumps(doc))
    (tmp_path / "config.yml").write_text(GENERATOR_CONFIG)
    env = {**os.environ, "PATH": f"{GENERATOR.parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # its ruff
    done = subprocess.run([str(GENERATOR), "generate", "--path", "openapi.json", "--config", "config.yml",
                           "--meta", "none", "--output-path", "s5vec_generated", "--fail-on-warning"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "warning" not in output.lower(), output
    generated = {p.stem for p in (tmp_path / "s5vec_generated" / "api").glob("*/*.py") if p.stem != "__init__"}
    assert generated == {op["operationId"] for op in operations(doc).values()}

    monkeypatch.syspath_prepend(str(tmp_path))
    package = importlib.import_module("s5vec_generated")
    create = importlib.import_module("s5vec_generated.api.collections.create_collection")
    listing = importlib.import_module("s5vec_generated.api.collections.list_collections")
    upsert = importlib.import_module("s5vec_generated.api.vectors.upsert")
    merge = importlib.import_module("s5vec_generated.api.vectors.merge_metadata")
    get_record = importlib.import_module("s5vec_generated.api.vectors.get_record")
    models = importlib.import_module("s5vec_generated.models")
    with package.Client(base_url=daemon.url) as http:
        made = create.sync_detailed(client=http, body=models.CollectionIn.from_dict({"name": "gen", "dimension": 2}))
        assert made.status_code == 201, made.content
        assert [c.name for c in listing.sync(client=http).collections] == ["gen"]
        done_upsert = upsert.sync_detailed("gen", client=http, body=models.VectorRecord.from_dict(  # the vector (not text) form
            {"id": "a", "vector": [1, 0], "metadata": {"genre": "drama"}}))
        assert done_upsert.status_code == 201, done_upsert.content
        patched = merge.sync_detailed("gen", "a", client=http, body=models.MetadataIn.from_dict(
            {"metadata": {"views": 91}}))
        assert patched.status_code == 200, patched.content
        record = get_record.sync("gen", "a", client=http)
        assert record.metadata.to_dict() == {"genre": "drama", "views": 91}
    daemon.stop()
