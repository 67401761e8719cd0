"""The OpenAPI 3.1 document served at ``/openapi.json``, built from the wire structs."""

from __future__ import annotations

from typing import Any, Final

import msgspec

from .wire import (
    BatchIn, BatchOut, CollectionIn, DeleteIn, ErrorOut, MetadataIn, RecordOut, RecordsOut, SearchIn, SearchOut,
    VectorIn,
)

_STRUCTS: Final = (VectorIn, BatchIn, SearchIn, CollectionIn, DeleteIn, MetadataIn, SearchOut, BatchOut, RecordOut,
                   RecordsOut, ErrorOut)
_ERRORS: Final = {"400": "invalid request", "401": "missing or unknown API key", "403": "scope missing",
                  "404": "collection or record not found", "409": "conflicting collection",
                  "413": "body too large", "422": "dimension mismatch"}


def _ref(struct: type) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{struct.__name__}"}


def _op(summary: str, body: type | None, out: type | dict[str, Any] | None, ok: str = "200",
        params: tuple[str, ...] = ()) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {}}
    if params:
        op["parameters"] = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                            for p in params]
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    schema = _ref(out) if isinstance(out, type) else (out or {"type": "object"})
    op["responses"][ok] = {"description": "success", "content": {"application/json": {"schema": schema}}}
    for status, text in _ERRORS.items():
        op["responses"][status] = {"description": text,
                                   "content": {"application/json": {"schema": _ref(ErrorOut)}}}
    return op


def build_openapi(version: str) -> dict[str, Any]:
    _, components = msgspec.json.schema_components(_STRUCTS, ref_template="#/components/schemas/{name}")
    c, cv = ("c",), ("c", "id")
    paths: dict[str, Any] = {
        "/health": {"get": _op("Liveness and status", None, None)},
        "/ready": {"get": _op("Readiness (data loaded)", None, None)},
        "/api/v1/collections": {"get": _op("List collections", None, None),
                                "post": _op("Create a collection", CollectionIn, None, "201")},
        "/api/v1/collections/{c}": {"get": _op("Collection statistics", None, None, params=c),
                                    "delete": _op("Drop a collection", None, None, params=c)},
        "/api/v1/collections/{c}/vectors": {"post": _op("Upsert one vector", VectorIn, None, "201", c),
                                            "get": {**_op("Records matching a filter", None, RecordsOut, params=c),
                                                    "parameters": [
                                                        {"name": "c", "in": "path", "required": True,
                                                         "schema": {"type": "string"}},
                                                        *({"name": n, "in": "query", "required": False,
                                                           "schema": {"type": "string"}}
                                                          for n in ("filter", "limit", "offset", "include_vector"))]}},
        "/api/v1/collections/{c}/vectors/batch": {"post": _op("Upsert up to 10,000 vectors", BatchIn, BatchOut,
                                                              params=c)},
        "/api/v1/collections/{c}/vectors/delete": {"post": _op("Delete vectors by ids or by filter", DeleteIn,
                                                               None, params=c)},
        "/api/v1/collections/{c}/vectors/{id}": {"get": _op("Fetch a record", None, RecordOut, params=cv),
                                                 "patch": _op("Replace a record's metadata", MetadataIn, None,
                                                              params=cv),
                                                 "delete": _op("Delete a record", None, None, params=cv)},
        "/api/v1/collections/{c}/search": {"post": _op("k-NN search with filters", SearchIn, SearchOut,
                                                       params=c)},
        "/api/v1/vectors": {"post": _op("Upsert into the default collection", VectorIn, None, "201")},
        "/api/v1/vectors/batch": {"post": _op("Batch upsert into the default collection", BatchIn, BatchOut)},
        "/api/v1/vectors/{id}": {"get": _op("Fetch from the default collection", None, RecordOut, params=("id",)),
                                 "delete": _op("Delete from the default collection", None, None, params=("id",))},
        "/api/v1/search": {"post": _op("Search the default collection", SearchIn, SearchOut)},
        "/api/v1/collections/{c}/ingest": {"post": {
            **_op("Streamed NDJSON upserts: totals and per-line errors", None, None, params=c),
            "requestBody": {"required": True, "content": {"application/x-ndjson": {"schema": {"type": "string"}}}}}},
        "/api/v1/collections/{c}/export": {"get": {
            **_op("Every record as NDJSON in id order, streamed (?after=<id> resumes, ?include_vector)", None, None,
                  params=c),
            "responses": {"200": {"description": "application/x-ndjson",
                                  "content": {"application/x-ndjson": {"schema": {"type": "string"}}}}}}},
        "/api/v1/stream/updates": {"get": {
            **_op("Change feed as server-sent events (resume with Last-Event-ID or ?since=)", None, None),
            "parameters": [{"name": n, "in": "query", "required": False, "schema": {"type": "string"}}
                           for n in ("collection", "types", "filter", "since", "include_vector")],
            "responses": {"200": {"description": "text/event-stream",
                                  "content": {"text/event-stream": {"schema": {"type": "string"}}}}}}},
        "/api/v1/ws": {"get": {"summary": "WebSocket API (upgrade): requests, subscriptions, standing queries",
                               "responses": {"101": {"description": "switching protocols"}}}},
        "/api/v1/admin/checkpoint": {"post": _op("Checkpoint now", None, None)},
        "/api/v1/admin/migrate": {"post": _op("Move old records to the historical tier now", None, None)},
        "/api/v1/admin/statistics": {"get": _op("Engine statistics", None, None)},
        "/api/v1/admin/jobs": {"get": _op("Scheduled jobs: schedule, next and last run, outcome, counters",
                                          None, None)},
        **{f"/api/v1/admin/{job}": {"post": {
            **_op(summary, None, None),
            "parameters": [{"name": "wait", "in": "query", "required": False, "schema": {"type": "boolean"},
                            "description": "false: answer 202 with the job's status at once"}]}}
           for job, summary in (("rebalance", "Retrain IVF segments whose lists became skewed now"),
                                ("compact", "Compact graphs and segments, collect garbage now"),
                                ("scrub", "Re-hash a sample of blobs now"),
                                ("backup", "Checkpoint and keep the state as a backup now (body: {label})"))},
        "/api/v1/admin/backups": {"get": _op("Retained backups, newest first", None, None)},
        "/api/v1/admin/backups/{id}/verify": {"post": _op("Re-hash every blob of a backup", None, None,
                                                          params=("id",))},
        "/api/v1/admin/health": {"get": _op("Health report: checks, thresholds and active alerts", None, None)},
        "/metrics": {"get": {"summary": "Prometheus metrics (text format 0.0.4, or OpenMetrics by Accept)",
                             "responses": {"200": {"description": "metrics",
                                                   "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "s5vec", "version": version},
        "components": {"schemas": components,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}, {}],
        "paths": paths,
    }
