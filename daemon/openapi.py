"""The OpenAPI 3.1 document served at ``/openapi.json``, built from the wire structs."""

from __future__ import annotations

import re
from typing import Any, Final

import msgspec

from s5vec.index import MAX_K
from s5vec.index.filters import DEFAULT_FILTER_LIMITS, MAX_FILTER_DEPTH
from s5vec.index.records import MAX_ID_BYTES, METRICS, NAME_RE
from s5vec.index.schema import SCHEMAS

from .admin import BackupIn
from .wire import (
    BatchIn, BatchOut, CollectionIn, DeleteIn, ErrorOut, MetadataIn, QueryIn, RecordOut, RecordsOut, SearchIn,
    SearchOut, TuneIn, VectorIn,
)

_STRUCTS: Final = (VectorIn, BatchIn, SearchIn, CollectionIn, DeleteIn, MetadataIn, TuneIn, QueryIn, BackupIn,
                   SearchOut, BatchOut, RecordOut, RecordsOut, ErrorOut)
_ERRORS: Final = {"400": "invalid request", "401": "missing or unknown API key", "403": "scope missing",
                  "404": "collection or record not found", "409": "conflicting collection",
                  "413": "body too large", "414": "request line longer than 8,190 bytes",
                  "422": "the vector's dimension is not the collection's, or text the collection has no (or an "
                         "unknown) embedding model for",
                  "503": "storage backend unavailable, the WAL refuses writes, or the daemon is stopping",
                  "507": "disk full: nothing was written"}


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
        op["responses"][status] = _error(text)
    return op


def _with_error(status: str, text: str, op: dict[str, Any]) -> dict[str, Any]:
    """``op`` that also documents the error ``status``."""
    op["responses"][status] = _error(text)
    return op


def _object(**properties: Any) -> dict[str, Any]:
    """A JSON object schema in which every listed property is required."""
    return {"type": "object", "required": sorted(properties), "properties": properties}


_STR: Final = {"type": "string"}
_STATS: Final = {"type": "object", "required": ["name", "dimension", "metric", "count"], "additionalProperties": True,
                 "properties": {"name": {"type": "string"}, "dimension": {"type": "integer"},
                                "metric": {"type": "string", "enum": list(METRICS)}, "count": {"type": "integer"}}}
_INT: Final = {"type": "integer"}
_UPSERTED: Final = _object(id=_STR, status={"const": "upserted"})
_UPDATED: Final = _object(id=_STR, status={"const": "updated"})
_DELETED_ID: Final = _object(deleted=_STR)
_DELETED_COUNT: Final = _object(deleted=_INT)
_INGESTED: Final = _object(
    lines=_INT, successful=_INT, failed=_INT, batches=_INT, errors_truncated={"type": "boolean"},
    errors={"type": "array", "items": _object(line=_INT, id={"type": ["string", "null"]},
                                              error=_object(code=_STR, message=_STR))})
_BULKED: Final = _object(records=_INT, historical=_INT, wal_records=_INT)


def _error(text: str) -> dict[str, Any]:
    return {"description": text, "content": {"application/json": {"schema": _ref(ErrorOut)}}}


def _query(*names: str, kind: str = "string", **bounds: int) -> list[dict[str, Any]]:
    return [{"name": n, "in": "query", "required": False, "schema": {"type": kind, **bounds}} for n in names]


# ?filter= is JSON text: a parameter with content (not schema) says so, and tools send JSON
_FILTER_PARAM: Final = {"name": "filter", "in": "query", "required": False,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Filter"}}}}


def _streamed(op: dict[str, Any], media_type: str, description: str) -> dict[str, Any]:
    """``op`` answering a stream of ``media_type`` on success; errors stay JSON."""
    ok = {"description": description, "content": {media_type: {"schema": {"type": "string"}}}}
    return {**op, "responses": {**op["responses"], "200": ok}}


def _one_of(*alternatives: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Exactly one of the named properties present (with a value of its schema)."""
    return [{"type": "object", "required": [name], "properties": {name: schema}} for name, schema in alternatives]


_FILTER: Final = {"$ref": "#/components/schemas/Filter"}
_F32_MAX: Final = 3.4028234663852886e38  # float32's largest value (index/records.py allows |x| up to it)
_DOTTED: Final = r"^[^.]+(\.[^.]+)*$"
_ISO_DATE_TIME: Final = (r"^(000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])"
                         r"([T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?(Z|[+-](0[0-9]|1[0-9]|2[0-3]):[0-5][0-9])?)?$")
_OPERATORS: Final = {"$ref": "#/components/schemas/FilterOperators"}
FIELD_PATH: Final = r"^[^$.][^.]*(\.[^.]+)*$"
"""A field condition's key (index/filters.py): a dotted path of non-empty parts, not starting with '$'."""


def _filter_schemas() -> dict[str, Any]:
    """The metadata filter language of index/filters.py, with its default size limits
    (``[engine]`` filter_max_nodes, filter_max_in_values, filter_max_bytes can change them)."""
    limits = DEFAULT_FILTER_LIMITS
    branches = {"type": "array", "minItems": 1, "maxItems": limits.max_nodes - 1, "items": _FILTER}
    values = {"type": "array", "items": {}, "maxItems": limits.max_in_values}
    ordered = {"type": ["number", "string"], "description": "numbers, or strings (ISO 8601 dates compare as dates)"}
    return {
        "Filter": {
            "title": "Filter", "type": "object", "maxProperties": limits.max_nodes, "additionalProperties": False,
            "description": "Metadata filter, Mongo style: {field: value} (equality; an array field matches "
                           "any of its elements) or {field: {operator: argument}}, dotted paths for nested "
                           "fields, and $and/$or (non-empty arrays of filters) and $not (a filter); an empty "
                           f"filter matches every record. $and/$or/$not nest at most {MAX_FILTER_DEPTH} "
                           f"levels. Limits (defaults, daemon settings): at most {limits.max_nodes} field "
                           "conditions, operators and $and/$or branches together (engine.filter_max_nodes), "
                           f"{limits.max_in_values} $in/$nin values together (engine.filter_max_in_values), "
                           "and 1 MiB of JSON (engine.filter_max_bytes).",
            "properties": {"$and": branches, "$or": branches, "$not": _FILTER},
            "patternProperties": {FIELD_PATH: {"$ref": "#/components/schemas/FilterCondition"}},
        },
        "FilterCondition": {
            "title": "FilterCondition",
            "description": "Operators, or a value the field must equal (an object of plain keys too).",
            "anyOf": [_OPERATORS, {"title": "FilterScalar", "type": ["string", "number", "boolean", "null"]},
                      {"title": "FilterArray", "type": "array", "items": {}},
                      {"title": "FilterObject", "type": "object", "propertyNames": {"pattern": "^([^$]|$)"}}],
        },
        "FilterOperators": {
            "title": "FilterOperators", "type": "object", "minProperties": 1, "additionalProperties": False,
            "properties": {"$eq": {}, "$ne": {}, "$gt": ordered, "$gte": ordered, "$lt": ordered, "$lte": ordered,
                           "$in": values, "$nin": values, "$exists": {"type": "boolean"},
                           "$not": {**_OPERATORS, "description": f"nests at most {MAX_FILTER_DEPTH - 1} levels"}},
        },
    }


def _vector_or_text(vector: dict[str, Any], text: dict[str, Any], *titles: str) -> list[dict[str, Any]]:
    """'vector' (and no 'text') or 'text' (and no 'vector'), named for generated clients."""
    with_vector, with_text = _one_of(("vector", vector), ("text", text))
    with_vector["properties"]["text"] = with_text["properties"]["vector"] = {"type": "null"}
    return [{**with_vector, "title": titles[0]}, {**with_text, "title": titles[1]}]


def _tighten(components: dict[str, Any]) -> None:
    """Rules of the server that msgspec's generated schemas do not carry."""
    # float32 range; at least one element not 0 (a zero vector has no cosine, the default metric)
    vector = {"type": "array", "items": {"type": "number", "minimum": -_F32_MAX, "maximum": _F32_MAX},
              "contains": {"not": {"const": 0}}}
    text = {"type": "string", "maxLength": 65_536}
    components["VectorIn"]["oneOf"] = _vector_or_text(vector, text, "VectorRecord", "TextRecord")
    # id null is 'no id' to the server: a 400 except on a video_nft collection (which derives the
    # id from the metadata, and accepts the one it would derive): the document asks for an id
    components["VectorIn"]["required"] = ["id"]
    components["VectorIn"]["properties"]["id"] = {"anyOf": [
        {"type": "string", "minLength": 1, "maxLength": MAX_ID_BYTES,
         "description": f"at most {MAX_ID_BYTES} bytes as UTF-8"}, {"type": "integer"}]}
    components["VectorIn"]["description"] += (" Exactly one of 'vector' and 'text'. A video_nft collection "
                                              "also takes no id and derives '<address>:<id>' from the metadata.")
    components["SearchIn"]["oneOf"] = _vector_or_text(vector, text, "VectorQuery", "TextQuery")
    components.update(_filter_schemas())
    for struct in ("SearchIn", "DeleteIn", "QueryIn"):
        if struct in components:
            components[struct]["properties"]["filter"] = {"anyOf": [_FILTER, {"type": "null"}], "default": None}
    by_ids, by_filter = _one_of(
        ("ids", {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}),
        ("filter", {"allOf": [_FILTER], "minProperties": 1,
                    "description": "not empty: an empty filter would match every record"}))
    by_ids["properties"]["filter"] = by_filter["properties"]["ids"] = {"type": "null"}
    components["DeleteIn"]["oneOf"] = [{**by_ids, "title": "DeleteByIds"}, {**by_filter, "title": "DeleteByFilter"}]
    components["SearchOptions"]["anyOf"] = [  # the server's rule: tier weights only for a weighted merge
        {"title": "UnweightedMerge", "properties": {"tier_weights": {"type": "null"}}},
        {"title": "WeightedMerge", "required": ["merge_strategy"], "properties": {"merge_strategy": {
            "const": "weighted"}}}]
    decay = components["DecaySpec"]["properties"]
    decay["field"]["pattern"] = components["PopularitySpec"]["properties"]["field"]["pattern"] = _DOTTED
    decay["origin"]["anyOf"][1]["pattern"] = _ISO_DATE_TIME
    components["VectorIn"]["properties"]["timestamp"]["anyOf"][0]["pattern"] = _ISO_DATE_TIME
    name = components["CollectionIn"]["properties"]["name"]
    name["pattern"] = f"^{NAME_RE.pattern}$"
    components["CollectionIn"]["properties"]["metric"] = {"enum": list(METRICS), "default": "cosine"}
    components["CollectionIn"]["properties"]["schema"] = {"anyOf": [{"enum": list(SCHEMAS)}, {"type": "null"}],
                                                          "default": None}


_TAGS: Final = (("/api/v1/admin", "admin"), ("/api/v1/stream", "feeds"),
                ("/api/v1/collections/{c}/search", "search"), ("/api/v1/search", "search"),
                ("/api/v1/collections/{c}/vectors", "vectors"), ("/api/v1/vectors", "vectors"),
                ("/api/v1/collections/{c}/ingest", "vectors"), ("/api/v1/collections/{c}/export", "vectors"),
                ("/api/v1/collections/{c}/bulk", "vectors"),
                ("/api/v1/collections", "collections"), ("/api/v1/replication", "replication"), ("/", "service"))
OPERATION_IDS: Final = {
    ("get", "/health"): "health", ("get", "/ready"): "ready", ("get", "/metrics"): "metrics",
    ("get", "/api/v1/collections"): "list_collections", ("post", "/api/v1/collections"): "create_collection",
    ("get", "/api/v1/collections/{c}"): "get_collection", ("delete", "/api/v1/collections/{c}"): "drop_collection",
    ("post", "/api/v1/collections/{c}/vectors"): "upsert", ("get", "/api/v1/collections/{c}/vectors"): "find",
    ("post", "/api/v1/collections/{c}/vectors/batch"): "upsert_batch",
    ("post", "/api/v1/collections/{c}/vectors/delete"): "delete_many",
    ("post", "/api/v1/collections/{c}/vectors/query"): "find_by_body",
    ("get", "/api/v1/collections/{c}/vectors/{id}"): "get_record",
    ("patch", "/api/v1/collections/{c}/vectors/{id}"): "merge_metadata",
    ("put", "/api/v1/collections/{c}/vectors/{id}"): "replace_metadata",
    ("delete", "/api/v1/collections/{c}/vectors/{id}"): "delete_record",
    ("post", "/api/v1/collections/{c}/search"): "search",
    ("post", "/api/v1/collections/{c}/ingest"): "ingest", ("post", "/api/v1/collections/{c}/bulk"): "bulk", ("get", "/api/v1/collections/{c}/export"): "export",
    ("post", "/api/v1/collections/{c}/tune"): "tune_collection",
    ("post", "/api/v1/vectors"): "default_upsert", ("post", "/api/v1/vectors/batch"): "default_upsert_batch",
    ("get", "/api/v1/vectors/{id}"): "default_get_record", ("delete", "/api/v1/vectors/{id}"): "default_delete_record",
    ("post", "/api/v1/search"): "default_search",
    ("get", "/api/v1/stream/updates"): "stream_updates",
    ("get", "/api/v1/admin/statistics"): "statistics", ("get", "/api/v1/admin/jobs"): "list_jobs",
    ("get", "/api/v1/admin/backups"): "list_backups", ("post", "/api/v1/admin/backups/{id}/verify"): "verify_backup",
    ("get", "/api/v1/admin/health"): "health_report",
    ("get", "/api/v1/replication/role"): "replication_role",
}


def _name_operations(paths: dict[str, Any]) -> None:
    """Give every operation an ``operationId`` (client method names) and a tag (by path).
    Operations missing from OPERATION_IDS get ``<method>_<path words>``."""
    for path, item in paths.items():
        tag = next(t for prefix, t in _TAGS if path.startswith(prefix))
        for method, op in item.items():
            words = re.sub(r"[^a-z0-9]+", "_", path.removeprefix("/api/v1").lower()).strip("_")
            fallback = words.removeprefix("admin_") if path.startswith("/api/v1/admin/") and method == "post" \
                else f"{method}_{words}"
            op.setdefault("operationId", OPERATION_IDS.get((method, path), fallback))
            op.setdefault("tags", [tag])


# OpenAPI describes request/response operations; a GET that becomes a WebSocket is none (a client
# generated from the document could not use it, and without the upgrade it only answers 400), so
# the socket is named here instead of under paths, as FastAPI does for its WebSocket routes.
WEBSOCKET_NOTE: Final = ("Also served: the WebSocket API at /api/v1/ws (GET with Upgrade: websocket; JSON frames: "
                         "upsert, search, subscribe to the change feed, standing queries; authenticate with the "
                         "bearer header or a first {\"type\": \"auth\"} frame). See docs/live-feeds.md.")


def build_openapi(version: str) -> dict[str, Any]:
    _, components = msgspec.json.schema_components(_STRUCTS, ref_template="#/components/schemas/{name}")
    c, cv = ("c",), ("c", "id")
    create = _op("Create a collection", CollectionIn, None, "201")
    create["responses"]["200"] = {"description": "an identical collection exists already",
                                  "content": {"application/json": {"schema": {"type": "object"}}}}
    paths: dict[str, Any] = {
        "/health": {"get": _op("Liveness and status", None, {**_object(status=_STR, version=_STR),
                                                              "additionalProperties": True})},
        "/ready": {"get": {**_op("Readiness (data loaded)", None, None),
                           "responses": {status: {"description": text, "content": {"application/json": {"schema": {
                               "type": "object", "required": ["ready"], "properties": {"ready": {"type": "boolean"}}}}}}
                               for status, text in (("200", "ready"), ("503", "still loading"))}}},
        "/api/v1/collections": {"get": _op("List collections", None, _object(collections={
                                    "type": "array", "items": _STATS})),
                                "post": create},
        "/api/v1/collections/{c}": {"get": _op("Collection statistics", None, None, params=c),
                                    "delete": _op("Drop a collection", None, _DELETED_ID, params=c)},
        "/api/v1/collections/{c}/vectors": {"post": _op("Upsert one vector", VectorIn, _UPSERTED, "201", c),
                                            "get": {**_op("Records matching a filter", None, RecordsOut, params=c),
                                                    "parameters": [
                                                        {"name": "c", "in": "path", "required": True,
                                                         "schema": {"type": "string"}},
                                                        _FILTER_PARAM,
                                                        *_query("limit", kind="integer", minimum=1, maximum=MAX_K),
                                                        *_query("offset", kind="integer", minimum=0),
                                                        *_query("include_vector", kind="boolean")]}},
        "/api/v1/collections/{c}/vectors/batch": {"post": _op("Upsert up to 10,000 vectors", BatchIn, BatchOut,
                                                              params=c)},
        "/api/v1/collections/{c}/vectors/delete": {"post": _op("Delete vectors by ids or by filter", DeleteIn,
                                                               _DELETED_COUNT, params=c)},
        "/api/v1/collections/{c}/vectors/query": {"post": _op("Records matching a filter (GET .../vectors with "
                                                              "its parameters in the body)", QueryIn, RecordsOut,
                                                              params=c)},
        "/api/v1/collections/{c}/vectors/{id}": {"get": {**_op("Fetch a record", None, RecordOut, params=cv),
                                                         "parameters": [*_op("", None, None, params=cv)["parameters"],
                                                                        *_query("include_vector", kind="boolean")]},
                                                 "patch": _op("Merge into a record's metadata (JSON Merge Patch, "
                                                              "RFC 7396: null deletes a key)", MetadataIn, _UPDATED,
                                                              params=cv),
                                                 "put": _op("Replace a record's metadata (the vector is kept)",
                                                            MetadataIn, _UPDATED, params=cv),
                                                 "delete": _op("Delete a record", None, _DELETED_ID, params=cv)},
        "/api/v1/collections/{c}/search": {"post": _op("k-NN search with filters", SearchIn, SearchOut,
                                                       params=c)},
        "/api/v1/vectors": {"post": _op("Upsert into the default collection", VectorIn, _UPSERTED, "201")},
        "/api/v1/vectors/batch": {"post": _op("Batch upsert into the default collection", BatchIn, BatchOut)},
        "/api/v1/vectors/{id}": {"get": {**_op("Fetch from the default collection", None, RecordOut,
                                               params=("id",)),
                                         "parameters": [*_op("", None, None, params=("id",))["parameters"],
                                                        *_query("include_vector", kind="boolean")]},
                                 "delete": _op("Delete from the default collection", None, _DELETED_ID,
                                               params=("id",))},
        "/api/v1/search": {"post": _op("Search the default collection", SearchIn, SearchOut)},
        "/api/v1/collections/{c}/ingest": {"post": {
            **_op("Streamed NDJSON upserts: totals and per-line errors", None, _INGESTED, params=c),
            "requestBody": {"required": False,  # an empty body ingests nothing (200, 0 lines)
                            "content": {"application/x-ndjson": {"schema": {"type": "string"}}}}}},
        "/api/v1/collections/{c}/bulk": {"post": _with_error("415", "the body is not an Arrow IPC stream", {
            **_op("Bulk upsert from an Arrow IPC stream (columns id, vector, metadata, timestamp), all or "
                  "nothing, acknowledged once durable", None, _BULKED, params=c),
            "parameters": [*_op("", None, None, params=c)["parameters"],
                           *_query("rows", kind="integer", minimum=0)],
            "requestBody": {"required": True,
                            "content": {"application/vnd.apache.arrow.stream": {
                                "schema": {"type": "string", "format": "binary"}}}}})},
        "/api/v1/collections/{c}/export": {"get": {
            **_streamed(_op("Every record as NDJSON in id order, streamed (?after=<id> resumes, ?include_vector)",
                            None, None, params=c), "application/x-ndjson", "one record per line"),
            "parameters": [*_op("", None, None, params=c)["parameters"], *_query("after"),
                           *_query("include_vector", kind="boolean")]}},
        "/api/v1/collections/{c}/tune": {"post": {
            **_op("Pick ef_search for a target recall (body optional)", TuneIn, None, params=c),
            "requestBody": {"required": False, "content": {"application/json": {"schema": _ref(TuneIn)}}}}},
        "/api/v1/stream/updates": {"get": {
            **_streamed(_op("Change feed as server-sent events (resume with Last-Event-ID or ?since=)", None, None),
                        "text/event-stream", "server-sent events"),
            "parameters": [*_query("collection", "types"), _FILTER_PARAM, *_query("since"),
                           *_query("include_vector", kind="boolean")]}},
        "/api/v1/admin/checkpoint": {"post": _op("Checkpoint now", None, None)},
        "/api/v1/admin/migrate": {"post": _op("Move old records to the historical tier now", None, None)},
        "/api/v1/admin/statistics": {"get": _op("Engine statistics", None, None)},
        "/api/v1/admin/jobs": {"get": _op("Scheduled jobs: schedule, next and last run, outcome, counters",
                                          None, None)},
        **{f"/api/v1/admin/{job}": {"post": {
            **_op(summary, BackupIn if job == "backup" else None, None),
            **({"requestBody": {"required": False, "content": {"application/json": {"schema": _ref(BackupIn)}}}}
               if job == "backup" else {}),
            "responses": {**_op(summary, None, None)["responses"],
                          "202": {"description": "wait=false: the job started; its status",
                                  "content": {"application/json": {"schema": {"type": "object"}}}}},
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
        "/api/v1/replication/role": {"get": _op("This node's replication role (writer or follower), applied LSN "
                                                "and shipping or tailing state", None, None)},
        "/api/v1/admin/promote": {"post": {**_op("Make this follower the writer (202; it runs again as the writer)",
                                                 None, None, "202"),
            "parameters": [{"name": "force", "in": "query", "required": False, "schema": {"type": "boolean"},
                            "description": "without etcd: promote although the old writer may be alive"}]}},
        "/metrics": {"get": {"summary": "Prometheus metrics (text format 0.0.4, or OpenMetrics by Accept)",
                             "responses": {"200": {"description": "metrics",
                                                   "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
    }
    _tighten(components)
    _name_operations(paths)
    return {
        "openapi": "3.1.0",
        "info": {"title": "s5vec", "version": version, "description": WEBSOCKET_NOTE},
        "components": {"schemas": components,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}, {}],
        "paths": paths,
    }
