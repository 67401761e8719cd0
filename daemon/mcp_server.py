"""MCP tools for AI agents, on the official ``mcp`` SDK: one server, two backends.

Inside the daemon (streamable HTTP at ``/mcp``) the tools call the :class:`Database`
directly; ``s5vec mcp`` (stdio, spawned by an agent host) calls a running daemon's REST API
instead, so it never opens a data directory that the daemon holds.  Every tool is
read-only.  A failure the caller can fix (unknown collection or record, wrong vector
length, malformed filter, bad arguments, unreachable daemon) comes back as a tool error
whose text starts with the daemon's error code, e.g. ``collection_not_found: ...`` or
``invalid_request: k: Input should be less than or equal to 1000``.  Results are compact
JSON without null fields (agents pay for every token).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated, Any, Final, Literal, Protocol, Self
from urllib.parse import quote

import aiohttp
import msgspec
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.types import CallToolResult, InputRequiredResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field, ValidationError
from s5vec.index import MAX_K, parse_datetime
from s5vec.engine import Database
from yarl import URL

from . import operations
from .errors import describe
from .services import VERSION
from .wire import RecordOut, SearchIn

ToolFn = Callable[..., Awaitable[BaseModel]]

DEFAULT_URL: Final = "http://127.0.0.1:7533"
MAX_LIMIT: Final = MAX_K
INSTRUCTIONS: Final = (
    "s5vec is a vector database of video (NFT) metadata. Call list_collections first to learn the "
    "collections, their vector dimension and record counts. search_vectors takes a query embedding of "
    "exactly that dimension, or text on a collection with an embedding_model (the daemon embeds it); "
    "find_similar finds neighbours of a stored record by id; filter_records "
    "selects records by metadata (genre, type, mint date, runtime) without a vector; get_record "
    "fetches one record. Filters are Mongo-style: {\"genre\": \"drama\", \"views\": {\"$gte\": 10}}."
)
_READ_ONLY: Final = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True,
                                    open_world_hint=False)

# ---------------------------------------------------------------- tool inputs
CollectionName = Annotated[str, Field(min_length=1, description="Collection name (see list_collections).")]
RecordId = Annotated[str, Field(min_length=1, description="Record id, as stored (video_nft: 'address:id').")]
QueryVector = Annotated[list[float] | None, Field(
    min_length=1, description="Query embedding; its length must equal the collection's dimension. "
                              "Give this or text, not both.")]
QueryText = Annotated[str | None, Field(
    min_length=1, max_length=65_536,
    description="Query text, embedded by the collection's embedding_model (see list_collections); "
                "only on a collection that has one. Give this or vector, not both.")]
K = Annotated[int, Field(ge=1, le=MAX_K, description=f"How many neighbours to return (1-{MAX_K}).")]
NftType = Literal["video", "audio", "image", "data"]  # index.schema.NFT_TYPES (a test keeps them equal)
Filter = Annotated[dict[str, Any] | None, Field(description=(
    "Optional Mongo-style metadata filter: $eq $ne $gt $gte $lt $lte $in $nin $exists $and $or $not; "
    "a plain value matches array members ({\"genre\": \"drama\"}); dotted paths reach nested fields and "
    "{key, value} attribute lists (\"attributes.runtime\"); ISO 8601 strings compare as instants."))]


# --------------------------------------------------------------- tool outputs
class Match(BaseModel):
    """One neighbour."""

    id: str
    score: float = Field(description="Similarity, higher is closer (cosine: (1 + cos) / 2 in [0, 1]).")
    distance: float = Field(description="Distance, lower is closer (cosine: 1 - cos; l2: Euclidean).")
    metadata: dict[str, Any] | None = Field(default=None, exclude_if=lambda v: not v,
                                            description="Left out when the record has none.")


class SearchResults(BaseModel):
    """Nearest neighbours, closest first."""

    collection: str
    count: int
    results: list[Match]


class SimilarRecords(SearchResults):
    """Nearest neighbours of a stored record, closest first, without the record itself."""

    source_id: str = Field(description="The record whose stored vector was the query.")


class Record(BaseModel):
    """One stored record."""

    id: str
    metadata: dict[str, Any]
    timestamp: float = Field(description="Unix seconds: the record's own time, or when it was ingested.")
    vector: list[float] | None = Field(default=None, exclude_if=lambda v: v is None,
                                       description="The stored vector (unit length for cosine), when asked for.")


class FilteredRecords(BaseModel):
    """A page of the records matching a metadata filter, in storage order."""

    collection: str
    filter: dict[str, Any] = Field(description="The Mongo-style filter that was applied.")
    total: int = Field(description="How many records match in all.")
    count: int = Field(description="How many are returned here (at most the limit).")
    records: list[Record]


class CollectionInfo(BaseModel):
    """A collection and its statistics (fields without a value are left out)."""

    name: str
    dimension: int
    metric: str
    metadata_schema: str | None = Field(default=None, exclude_if=lambda v: v is None,
                                        description="Metadata schema the records follow (video_nft), if any.")
    embedding_model: str | None = Field(default=None, exclude_if=lambda v: v is None,
                                        description="Model that embeds text for search_vectors, if any.")
    count: int = Field(description="Live records.")
    stats: dict[str, Any] = Field(description="The other statistics the daemon reports (indexed, pending, "
                                              "segments...), those without a value left out.")


class Collections(BaseModel):
    collections: list[CollectionInfo]


_INFO_FIELDS: Final = frozenset({"name", "dimension", "metric", "schema", "embedding_model", "count"})


def collection_info(stats: dict[str, Any]) -> CollectionInfo:
    """The fields once: those of CollectionInfo are not repeated in ``stats``, nor are empty ones."""
    rest = {k: v for k, v in stats.items() if k not in _INFO_FIELDS and v is not None and v != {} and v != []}
    return CollectionInfo(name=stats["name"], dimension=stats["dimension"], metric=stats["metric"],
                          metadata_schema=stats.get("schema"), embedding_model=stats.get("embedding_model"),
                          count=stats["count"], stats=rest)


def _record(record: RecordOut) -> Record:
    return Record(id=record.id, metadata=record.metadata, timestamp=record.timestamp, vector=record.vector)


# -------------------------------------------------------------------- backends
class Backend(Protocol):
    """What the tools need from the database; raises ToolError with a message for the caller."""

    async def collections(self) -> list[dict[str, Any]]:
        """The statistics of every collection."""
        ...

    async def search(self, collection: str, vector: list[float] | None, k: int,
                     spec: dict[str, Any] | None, text: str | None = None) -> list[Match]:
        """The k nearest to ``vector``, or to ``text`` embedded by the collection's model."""
        ...

    async def get(self, collection: str, record_id: str, include_vector: bool) -> Record:
        ...

    async def find(self, collection: str, spec: dict[str, Any], limit: int, offset: int) -> tuple[int, list[Record]]:
        """How many records match ``spec``, and a page of them."""
        ...


@contextlib.contextmanager
def _as_tool_error() -> Iterator[None]:
    """Engine errors → ToolError, through the daemon's one error mapping (errors.describe)."""
    try:
        yield
    except ToolError:
        raise
    except Exception as exc:
        _, code, message, _, _ = describe(exc)
        raise ToolError(f"{code}: {message}") from exc


class DatabaseBackend:
    """The tools inside the daemon: straight to the engine."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def collections(self) -> list[dict[str, Any]]:
        return await operations.list_collections(self.db)

    async def search(self, collection: str, vector: list[float] | None, k: int,
                     spec: dict[str, Any] | None, text: str | None = None) -> list[Match]:
        with _as_tool_error():
            results, _ = await operations.search(self.db, collection, SearchIn(vector, k, spec, text=text))
        return [Match(id=r.id, score=r.score, distance=r.distance, metadata=r.metadata) for r in results]

    async def get(self, collection: str, record_id: str, include_vector: bool) -> Record:
        with _as_tool_error():
            return _record(await operations.get(self.db, collection, record_id, include_vector))

    async def find(self, collection: str, spec: dict[str, Any], limit: int, offset: int) -> tuple[int, list[Record]]:
        with _as_tool_error():
            page = await operations.find(self.db, collection, spec, limit, offset, False)
        return page.total, [_record(r) for r in page.records]


class RestBackend:
    """The tools in ``s5vec mcp``: a running daemon's REST API, with an API key if one is set.
    Use as an async context manager (it owns one HTTP connection pool)."""

    def __init__(self, url: str = DEFAULT_URL, api_key: str | None = None, timeout_s: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _endpoint(self, *segments: str) -> URL:
        return URL("/".join([self.url, "api", "v1", *(quote(s, safe="") for s in segments)]), encoded=True)

    async def _call(self, method: str, url: URL, *, params: dict[str, str] | None = None,
                    body: dict[str, Any] | None = None) -> Any:
        if self._session is None:
            raise RuntimeError("RestBackend is used outside 'async with'")
        try:
            async with self._session.request(method, url, params=params, json=body) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ToolError(f"daemon_unreachable: cannot reach the s5vec daemon at {self.url} "
                            f"({type(exc).__name__}: {exc}); is `s5vec serve` running, is S5VEC_URL right?") from exc
        try:
            decoded = msgspec.json.decode(raw) if raw else None
        except msgspec.DecodeError:
            decoded = None
        if status < 400:
            return decoded
        error = decoded.get("error") if isinstance(decoded, dict) else None
        code = error.get("code", "http_error") if isinstance(error, dict) else "http_error"
        message = error.get("message", "") if isinstance(error, dict) else raw[:200].decode("utf-8", "replace")
        if status in (401, 403):
            message += " (set S5VEC_API_KEY to a key with the read scope)"
        raise ToolError(f"{code}: {message}")

    async def collections(self) -> list[dict[str, Any]]:
        body = await self._call("GET", self._endpoint("collections"))
        return list(body["collections"])

    async def search(self, collection: str, vector: list[float] | None, k: int,
                     spec: dict[str, Any] | None, text: str | None = None) -> list[Match]:
        request: dict[str, Any] = {"k": k, "options": {"include_metadata": True}}
        if vector is not None:
            request["vector"] = vector
        if text is not None:
            request["text"] = text
        if spec is not None:
            request["filter"] = spec
        body = await self._call("POST", self._endpoint("collections", collection, "search"), body=request)
        return [Match.model_validate(r) for r in body["results"]]

    async def get(self, collection: str, record_id: str, include_vector: bool) -> Record:
        body = await self._call("GET", self._endpoint("collections", collection, "vectors", record_id),
                                params={"include_vector": "true" if include_vector else "false"})
        return Record.model_validate(body)

    async def find(self, collection: str, spec: dict[str, Any], limit: int, offset: int) -> tuple[int, list[Record]]:
        params = {"filter": msgspec.json.encode(spec).decode(), "limit": str(limit), "offset": str(offset)}
        body = await self._call("GET", self._endpoint("collections", collection, "vectors"), params=params)
        return int(body["total"]), [Record.model_validate(r) for r in body["records"]]


# ----------------------------------------------------------------------- tools
def metadata_filter(genre: str | list[str] | None = None, nft_type: str | None = None,
                    minted_after: str | None = None, minted_before: str | None = None,
                    runtime_min: float | None = None, runtime_max: float | None = None,
                    extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Mongo-style filter of ``filter_records``'s arguments over the video_nft fields
    (``genre``, ``type``, ``mintDateTime``, ``attributes.runtime``); raises ToolError for a
    date that is not ISO 8601 or an empty range."""
    clauses: list[dict[str, Any]] = []
    if genre is not None:
        clauses.append({"genre": genre if isinstance(genre, str) else {"$in": list(genre)}})
    if nft_type is not None:
        clauses.append({"type": nft_type})
    minted: dict[str, str] = {}
    for name, op, value in (("minted_after", "$gte", minted_after), ("minted_before", "$lt", minted_before)):
        if value is not None:
            if parse_datetime(value) is None:
                raise ToolError(f"invalid_request: {name} must be an ISO 8601 date or date-time, got {value!r}")
            minted[op] = value
    if minted:
        clauses.append({"mintDateTime": minted})
    runtime: dict[str, float] = {}
    if runtime_min is not None:
        runtime["$gte"] = runtime_min
    if runtime_max is not None:
        runtime["$lte"] = runtime_max
    if runtime_min is not None and runtime_max is not None and runtime_min > runtime_max:
        raise ToolError("invalid_request: runtime_min is greater than runtime_max")
    if runtime:
        clauses.append({"attributes.runtime": runtime})
    if extra:
        clauses.append(extra)
    if not clauses:
        return {}
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def _argument_errors(exc: ValidationError) -> str:
    """Arguments that do not fit a tool's schema, as ``invalid_request: <field>: <problem>``
    (pydantic's own text carries a documentation URL per error: tokens an agent cannot use)."""
    problems = [f"{'.'.join(str(part) for part in error['loc']) or 'arguments'}: {error['msg']}"
                for error in exc.errors(include_url=False, include_input=False, include_context=False)]
    return "invalid_request: " + "; ".join(problems)


class _Server(MCPServer):
    """The SDK's server, with errors that start with their code (argument errors name the
    field and nothing else), and results as compact JSON."""

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None,
                        ) -> CallToolResult | InputRequiredResult:
        try:
            result = await super().call_tool(name, arguments, context)
        except UnexpectedToolError:
            raise
        except ToolError as exc:
            if isinstance(exc.__cause__, ValidationError):
                raise ToolError(_argument_errors(exc.__cause__)) from exc.__cause__
            # the text starts with the error code, as the module doc says, not the SDK's preamble
            message = str(exc).removeprefix(f"Error executing tool {name}: ")
            raise ToolError(message) from exc.__cause__
        if isinstance(result, CallToolResult) and result.structured_content is not None and not result.is_error:
            text = msgspec.json.encode(result.structured_content).decode()  # no indentation, unlike the SDK's
            result = result.model_copy(update={"content": [TextContent(type="text", text=text)]})
        return result


def build_server(backend: Backend) -> MCPServer:
    """An MCP server whose read-only tools answer from ``backend``."""
    server: MCPServer = _Server("s5vec", instructions=INSTRUCTIONS, version=VERSION)

    def tool(fn: ToolFn) -> ToolFn:
        # the docstring, on one line, is the description the agent reads
        server.add_tool(fn, description=" ".join((fn.__doc__ or "").split()), annotations=_READ_ONLY,
                        structured_output=True)
        return fn

    @tool
    async def list_collections() -> Collections:
        """List the collections with their vector dimension, metric, metadata schema, record count and
        statistics. Call this first: search_vectors needs a vector of the collection's dimension."""
        stats = await backend.collections()
        return Collections(collections=[collection_info(s) for s in sorted(stats, key=lambda s: s["name"])])

    @tool
    async def search_vectors(collection: CollectionName, vector: QueryVector = None, text: QueryText = None,
                             k: K = 10, filter: Filter = None) -> SearchResults:
        """Find the k records nearest to a query: a query embedding (vector), or text on a collection
        with an embedding_model (the daemon embeds it); optionally only among records whose metadata
        matches a filter. Returns ids, scores and metadata, closest first."""
        if (vector is None) == (text is None):
            raise ToolError("invalid_request: give exactly one of vector (a query embedding of the collection's "
                            "dimension) or text (on a collection with an embedding_model)")
        results = await backend.search(collection, vector, k, filter, text)
        return SearchResults(collection=collection, count=len(results), results=results)

    @tool
    async def find_similar(collection: CollectionName, id: RecordId, k: K = 10,
                           filter: Filter = None) -> SimilarRecords:
        """Find the k records (e.g. videos) most similar to a stored record, using its stored vector;
        the record itself is left out. Optionally only among records matching a metadata filter."""
        source = await backend.get(collection, id, include_vector=True)
        if source.vector is None:
            raise ToolError(f"internal_error: record {id!r} came back without its vector")
        found = await backend.search(collection, source.vector, min(k + 1, MAX_K), filter)
        results = [m for m in found if m.id != id][:k]
        return SimilarRecords(collection=collection, count=len(results), results=results, source_id=id)

    @tool
    async def get_record(collection: CollectionName, id: RecordId,
                         include_vector: Annotated[bool, Field(description="Also return the stored vector.")] = False,
                         ) -> Record:
        """Fetch one record by id: its metadata, timestamp and optionally its vector."""
        return await backend.get(collection, id, include_vector)

    @tool
    async def filter_records(
        collection: CollectionName,
        genre: Annotated[str | list[str] | None, Field(
            description="A genre, or a list of genres of which a record must have at least one.")] = None,
        type: Annotated[NftType | None, Field(
            description="The NFT type.")] = None,
        minted_after: Annotated[str | None, Field(
            description="ISO 8601 date or date-time: minted at or after this instant (mintDateTime).")] = None,
        minted_before: Annotated[str | None, Field(
            description="ISO 8601 date or date-time: minted strictly before this instant.")] = None,
        runtime_min: Annotated[float | None, Field(
            description="Smallest runtime (the 'runtime' attribute, inclusive).")] = None,
        runtime_max: Annotated[float | None, Field(
            description="Largest runtime (the 'runtime' attribute, inclusive).")] = None,
        filter: Filter = None,
        limit: Annotated[int, Field(ge=1, le=MAX_LIMIT, description="At most this many records.")] = 20,
        offset: Annotated[int, Field(ge=0, description="Skip this many matches (paging).")] = 0,
    ) -> FilteredRecords:
        """Select records by metadata without a query vector: genre, type, mint date range, runtime range
        (video_nft fields), plus an optional extra Mongo-style filter; all conditions must hold.
        Returns how many match in all and a page of them with their metadata."""
        spec = metadata_filter(genre, type, minted_after, minted_before, runtime_min, runtime_max, filter)
        total, records = await backend.find(collection, spec, limit, offset)
        return FilteredRecords(collection=collection, filter=spec, total=total, count=len(records), records=records)

    return server



async def serve_stdio(url: str, api_key: str | None) -> None:
    """Serve the tools over stdin/stdout against the daemon at ``url`` until stdin closes."""
    async with RestBackend(url, api_key) as backend:
        await build_server(backend).run_stdio_async()
