"""Typed wire messages, decoded and validated in one place (msgspec)."""

from __future__ import annotations

import difflib
import re
import types
import typing
from typing import Annotated, Any, Final, Generic, Literal, TypeVar

import msgspec
from msgspec import Meta, Struct

from s5vec.index import MAX_DIMENSION, MAX_K
from s5vec.index.scoring import ScoringSpec

T = TypeVar("T")
K = Annotated[int, Meta(ge=1, le=MAX_K)]
Ef = Annotated[int, Meta(ge=1, le=5000)]
MAX_BATCH: Final = 10_000
Text = Annotated[str, Meta(max_length=65_536)]  # embedded server-side; the model truncates long texts


class VectorIn(Struct, forbid_unknown_fields=True):
    """One record to upsert: ``vector``, or ``text`` on a collection with an embedding_model."""

    vector: list[float] | None = None
    id: str | int | None = None
    metadata: dict[str, Any] | None = None
    timestamp: str | float | None = None
    text: Text | None = None


class BatchIn(Struct, forbid_unknown_fields=True):
    """Items are decoded one by one so one bad item does not sink the batch."""

    vectors: list[msgspec.Raw]


class SearchOptions(Struct, forbid_unknown_fields=True):
    hnsw_ef: Ef | None = None
    ivf_nprobe: Annotated[int, Meta(ge=1, le=65536)] | None = None
    ivf_rerank: Annotated[int, Meta(ge=1, le=100_000)] | None = None  # historical candidates scored exactly
    include_metadata: bool = True
    include_vector: bool = False
    score_threshold: float | None = None
    search_recent: bool = True
    search_historical: bool = True
    timeout_ms: Annotated[float, Meta(gt=0, le=600_000)] | None = None
    merge_strategy: Literal["take_best", "average", "weighted"] = "take_best"
    tier_weights: Annotated[list[float], Meta(min_length=2, max_length=2)] | None = None
    scoring: ScoringSpec | None = None


class SearchIn(Struct, forbid_unknown_fields=True):
    """``vector``, or ``text`` on a collection with an embedding_model."""

    vector: list[float] | None = None
    k: K = 10
    filter: dict[str, Any] | None = None
    options: SearchOptions = msgspec.field(default_factory=SearchOptions)
    text: Text | None = None


class IvfIn(Struct, forbid_unknown_fields=True):
    quantizer: Literal["pq4", "sq8", "pq", "flat"] = "pq4"
    nlist: Annotated[int, Meta(ge=0)] = 0
    nprobe: Annotated[int, Meta(ge=1, le=65536)] = 16
    rerank: Annotated[int, Meta(ge=1, le=100)] = 4


class HnswIn(Struct, forbid_unknown_fields=True):
    m: Annotated[int, Meta(ge=2, le=128)] = 16
    ef_construction: Annotated[int, Meta(ge=8, le=2000)] = 200
    ef_search: Ef = 64


class CollectionIn(Struct, forbid_unknown_fields=True):
    name: str
    dimension: Annotated[int, Meta(ge=1, le=MAX_DIMENSION)]
    metric: str = "cosine"
    schema: str | None = None
    hnsw: HnswIn = msgspec.field(default_factory=HnswIn)
    ivf: IvfIn = msgspec.field(default_factory=IvfIn)
    recent_threshold_s: Annotated[float, Meta(gt=0)] = 7 * 86_400.0
    window_s: Annotated[float, Meta(ge=60)] = 86_400.0
    segment_records: Annotated[int, Meta(ge=1, le=10_000_000)] = 1_000_000
    payload_indexes: dict[str, Literal["keyword", "number", "datetime", "bool"]] = msgspec.field(default_factory=dict)
    embedding_model: Annotated[str, Meta(min_length=1, max_length=1024)] | None = None
    target_recall: Annotated[float, Meta(gt=0, le=1)] = 0.95


class TuneIn(Struct, forbid_unknown_fields=True):
    target_recall: Annotated[float, Meta(gt=0, le=1)] | None = None  # None: the collection's own
    sample: Annotated[int, Meta(ge=10, le=5000)] = 200


class MetadataIn(Struct, forbid_unknown_fields=True):
    metadata: dict[str, Any]


class QueryIn(Struct, forbid_unknown_fields=True):
    """``GET .../vectors``'s query parameters as a JSON body (a filter too large for a URL)."""

    filter: dict[str, Any] | None = None
    limit: K = 100
    offset: Annotated[int, Meta(ge=0)] = 0
    include_vector: bool = False


class DeleteIn(Struct, forbid_unknown_fields=True):
    """Exactly one of ``ids`` and ``filter``."""

    ids: list[str | int] | None = None
    filter: dict[str, Any] | None = None


class SearchResult(Struct, omit_defaults=True):
    id: str
    distance: float
    score: float
    metadata: dict[str, Any] | None = None
    vector: list[float] | None = None


class SearchOut(Struct):
    results: list[SearchResult]
    count: int
    search_time_ms: float
    partial: bool = False
    cached: bool = False


class ItemErrorOut(Struct):
    index: int
    id: str | None
    error: dict[str, str]


class BatchOut(Struct):
    successful: int
    failed: int
    errors: list[ItemErrorOut]


class RecordOut(Struct, omit_defaults=True):
    id: str
    metadata: dict[str, Any]
    timestamp: float
    vector: list[float] | None = None


class RecordsOut(Struct):
    """A page of the records matching a filter; ``total`` counts every match."""

    records: list[RecordOut]
    count: int
    total: int


class ErrorBody(Struct):
    code: str
    message: str
    field: str | None = None


class ErrorOut(Struct):
    error: ErrorBody


# ------------------------------------------------------------------ WebSocket
# Client → server frames: JSON objects told apart by "type"; "id" (optional, chosen by the
# client) comes back in the reply. Server → client frames are built in daemon/ws.py.
MessageId = str | int | None
EventType = Literal["vector_added", "vector_updated", "vector_deleted", "migration_started",
                    "migration_completed", "checkpoint_completed", "backup_completed"]
SubId = Annotated[str, Meta(min_length=1, max_length=64)]
Lsn = Annotated[int, Meta(ge=0)]
EventIdText = Annotated[str, Meta(pattern=r"^[0-9]{1,18}(\.[0-9]{1,18})?$")]  # "<lsn>" or "<lsn>.<n>"


class WsAuth(Struct, tag="auth", tag_field="type", forbid_unknown_fields=True):
    key: str
    id: MessageId = None


class WsPing(Struct, tag="ping", tag_field="type", forbid_unknown_fields=True):
    id: MessageId = None


class WsUpsert(Struct, tag="upsert", tag_field="type", forbid_unknown_fields=True):
    collection: str
    record: VectorIn
    id: MessageId = None


class WsUpsertBatch(Struct, tag="upsert_batch", tag_field="type", forbid_unknown_fields=True):
    """Like the REST batch: records are decoded one by one; a bad one does not sink the rest."""

    collection: str
    records: list[msgspec.Raw]
    id: MessageId = None


class WsDelete(Struct, tag="delete", tag_field="type", forbid_unknown_fields=True):
    """Exactly one of ``ids`` and ``filter``."""

    collection: str
    ids: list[str | int] | None = None
    filter: dict[str, Any] | None = None
    id: MessageId = None


class WsGet(Struct, tag="get", tag_field="type", forbid_unknown_fields=True):
    collection: str
    ids: Annotated[list[str | int], Meta(min_length=1, max_length=1000)]
    include_vector: bool = False
    id: MessageId = None


class WsSearch(SearchIn, tag="search", tag_field="type", kw_only=True):
    """A search body (as ``POST .../search``) plus the collection."""

    collection: str
    id: MessageId = None


class WsSubscribe(Struct, tag="subscribe", tag_field="type", forbid_unknown_fields=True):
    """Change feed of some collections (all when omitted), optionally filtered by metadata
    and event type, from now or from the first change after ``since``: an event id (an LSN,
    or ``"<lsn>.<n>"`` for a job event, see :mod:`s5vec.engine.events`)."""

    collections: list[str] | None = None
    filter: dict[str, Any] | None = None
    types: list[EventType] | None = None
    since: Lsn | EventIdText | None = None
    include_vector: bool = False
    sub: SubId | None = None
    id: MessageId = None


class WsSubscribeQuery(Struct, tag="subscribe_query", tag_field="type", forbid_unknown_fields=True):
    """A standing query: new or updated records of ``collection`` that match, with their score."""

    collection: str
    vector: list[float]
    k: K | None = None
    score_threshold: float | None = None
    filter: dict[str, Any] | None = None
    include_vector: bool = False
    sub: SubId | None = None
    id: MessageId = None


class WsUnsubscribe(Struct, tag="unsubscribe", tag_field="type", forbid_unknown_fields=True):
    sub: str
    id: MessageId = None


WsMessage = (WsAuth | WsPing | WsUpsert | WsUpsertBatch | WsDelete | WsGet | WsSearch | WsSubscribe
             | WsSubscribeQuery | WsUnsubscribe)


class WsEnvelope(Struct):
    """Lenient view of any frame: enough to echo the id of one that does not decode."""

    id: Any = None
    type: Any = None


class FieldValidationError(msgspec.ValidationError):
    """A ValidationError that knows the dotted ``field`` it is about (``None``: the whole body)."""

    def __init__(self, message: str, field: str | None) -> None:
        super().__init__(message)
        self.field = field


class FieldDecodeError(msgspec.DecodeError):
    """Malformed JSON: about the whole body."""

    field: Final = "body"


# Names callers reach for out of habit (other vector databases' APIs) → the field meant,
# as a dotted path from the object in which the unknown name appeared. difflib catches typos.
ALIASES: Final[dict[tuple[str, str], str]] = {
    ("SearchIn", "top_k"): "k", ("SearchIn", "topk"): "k", ("SearchIn", "limit"): "k",
    ("SearchIn", "filters"): "filter", ("SearchIn", "where"): "filter",
    ("SearchIn", "ef"): "options.hnsw_ef", ("SearchIn", "ef_search"): "options.hnsw_ef",
    ("SearchIn", "hnsw_ef"): "options.hnsw_ef", ("SearchIn", "nprobe"): "options.ivf_nprobe",
    ("SearchIn", "include_vector"): "options.include_vector",
    ("SearchIn", "include_metadata"): "options.include_metadata",
    ("SearchIn", "score_threshold"): "options.score_threshold", ("SearchIn", "query"): "vector",
    ("SearchOptions", "ef"): "hnsw_ef", ("SearchOptions", "ef_search"): "hnsw_ef",
    ("SearchOptions", "nprobe"): "ivf_nprobe", ("SearchOptions", "rerank"): "ivf_rerank",
    ("SearchIn", "rerank"): "options.ivf_rerank",
    ("DeleteIn", "filters"): "filter", ("DeleteIn", "where"): "filter",
    ("VectorIn", "values"): "vector", ("VectorIn", "embedding"): "vector", ("VectorIn", "meta"): "metadata",
    ("VectorIn", "payload"): "metadata",
    ("BatchIn", "records"): "vectors", ("BatchIn", "items"): "vectors",
    ("CollectionIn", "dim"): "dimension", ("CollectionIn", "dimensions"): "dimension",
    ("CollectionIn", "size"): "dimension", ("CollectionIn", "distance"): "metric",
}
_AT: Final = re.compile(r"^(?P<text>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_STEP: Final = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_UNKNOWN: Final = re.compile(r"^Object contains unknown field `(?P<name>.*)`$", re.S)
_MISSING: Final = re.compile(r"^Object missing required field `(?P<name>.*)`$", re.S)


def _struct_at(kind: Any, path: str) -> Any:
    """The type found at msgspec error ``path`` (``.options``, ``.vectors[0]``) under ``kind``,
    or None where it cannot be told (a union of several structs, a dict)."""
    for name, _ in _STEP.findall(path):
        kind = _unwrap(kind)
        if name:
            if not (isinstance(kind, type) and issubclass(kind, Struct)):
                return None
            kind = typing.get_type_hints(kind, include_extras=True).get(name)
        else:
            args = typing.get_args(kind)
            if typing.get_origin(kind) is not list or not args:
                return None
            kind = args[0]
    return _unwrap(kind)


def _unwrap(kind: Any) -> Any:
    """``kind`` without Annotated metadata and without ``| None``."""
    while typing.get_origin(kind) is Annotated:
        kind = typing.get_args(kind)[0]
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and len(args) == 1:
        return _unwrap(args[0])
    return kind


def _suggest(kind: Any, name: str) -> str | None:
    """The field meant by unknown ``name`` in struct ``kind``: the alias table, else the
    closest field name (difflib)."""
    if not (isinstance(kind, type) and issubclass(kind, Struct)):
        return None
    for base in kind.__mro__:
        alias = ALIASES.get((base.__name__, name))
        if alias is not None:
            return alias
    fields = kind.__struct_fields__
    same = [f for f in fields if f.lower() == name.lower()]
    close = same or difflib.get_close_matches(name, fields, n=1, cutoff=0.6)
    return close[0] if close else None


def _tags(kind: Any) -> list[str]:
    """The tags of a union of tagged Structs (the WebSocket message types), else []."""
    members = typing.get_args(kind) if isinstance(kind, types.UnionType) else ()
    return [str(m.__struct_config__.tag) for m in members
            if isinstance(m, type) and issubclass(m, Struct) and m.__struct_config__.tag is not None]


def field_error(kind: Any, exc: msgspec.ValidationError) -> FieldValidationError:
    """``exc`` as a FieldValidationError naming its dotted field: an unknown field says which
    one was probably meant, a bare array where an object of one list was expected says how
    to wrap it; an error about the body as a whole names ``body``."""
    match = _AT.match(str(exc))
    assert match is not None  # the pattern matches any text
    text, path = match["text"], match["path"] or ""
    prefix = path.lstrip(".") + "." if path else ""
    unknown, missing = _UNKNOWN.match(text), _MISSING.match(text)
    tags = _tags(kind)
    if tags and path == ".type" and text.startswith("Invalid value "):
        return FieldValidationError(f"unknown type {text.removeprefix('Invalid value ')}; valid types: "
                                    + ", ".join(tags), "type")
    if tags and not path and missing and missing["name"] == "type":
        return FieldValidationError("missing required field 'type'; valid types: " + ", ".join(tags), "type")
    if unknown:
        name = unknown["name"]
        struct = _struct_at(kind, path)
        meant = _suggest(struct, name)
        hint = f"; did you mean '{prefix}{meant}'?" if meant else ""
        if not meant and isinstance(struct, type) and issubclass(struct, Struct):
            hint = "; known fields: " + ", ".join(prefix + f for f in struct.__struct_fields__)
        return FieldValidationError(f"unknown field '{prefix}{name}'{hint}", prefix + name)
    if missing:
        return FieldValidationError(f"missing required field '{prefix}{missing['name']}'", prefix + missing["name"])
    if path:
        return FieldValidationError(str(exc), path.lstrip("."))
    fields = kind.__struct_fields__ if isinstance(kind, type) and issubclass(kind, Struct) else ()
    if text == "Expected `object`, got `array`" and len(fields) == 1 \
            and typing.get_origin(typing.get_type_hints(kind)[fields[0]]) is list:
        return FieldValidationError(f"the body must be a JSON object {{\"{fields[0]}\": [...]}}, not a bare "
                                    "array; wrap the array in it", fields[0])
    return FieldValidationError(f"body: {text}", "body")


class JsonDecoder(Generic[T]):
    """A msgspec JSON decoder for which input nested too deeply is malformed JSON like any
    other (msgspec raises RecursionError for it, which would surface as a 500), and whose
    validation errors name their field (:func:`field_error`)."""

    __slots__ = ("_decoder", "_kind")

    def __init__(self, kind: type[T] | Any) -> None:
        self._decoder: msgspec.json.Decoder[T] = msgspec.json.Decoder(kind)
        self._kind = kind

    def decode(self, data: bytes | str | msgspec.Raw) -> T:
        """Raises msgspec.DecodeError or msgspec.ValidationError (with ``field``), naming the problem."""
        try:
            return self._decoder.decode(data)
        except RecursionError:
            raise FieldDecodeError("JSON is malformed: arrays and objects nest too deeply") from None
        except msgspec.ValidationError as exc:
            return self._integral_floats_as_ints(data, exc)
        except msgspec.DecodeError as exc:
            raise FieldDecodeError(str(exc)) from None

    def _integral_floats_as_ints(self, data: bytes | str | msgspec.Raw, exc: msgspec.ValidationError) -> T:
        """JSON has one number type: ``5.0`` is the integer 5 (JSON Schema agrees, and Python's
        json writes floats so), but msgspec wants ``5`` where an int goes. Rewrite exactly the
        integral floats it names there, one at a time, and decode again; an error of another
        kind is raised as a FieldValidationError."""
        doc: Any = _NOT_DECODED
        for _ in range(_MAX_INT_REWRITES):
            found = _FLOAT_FOR_INT.match(str(exc))
            if found is None or "int" not in found["expected"].split(" | "):
                break
            if doc is _NOT_DECODED:
                doc = _ANY.decode(data)
            parent, key = doc, None
            for name, index in _STEP.findall(found["path"]):
                if key is not None:
                    parent = parent[key]
                key = name if name else int(index)
            value = parent[key] if key is not None else None
            if not (isinstance(value, float) and value.is_integer()):
                break
            parent[key] = int(value)
            try:
                return self._decoder.decode(ENCODER.encode(doc))
            except msgspec.ValidationError as again:
                exc = again
        raise field_error(self._kind, exc) from None


_NOT_DECODED: Final = object()
_MAX_INT_REWRITES: Final = 16  # more integer fields than any body has
_FLOAT_FOR_INT: Final = re.compile(r"^Expected `(?P<expected>[^`]*)`, got `float` - at `\$(?P<path>[^`]*)`$", re.S)


def decode_json(data: bytes | str) -> Any:
    """Untyped JSON; too deep is a DecodeError as in :class:`JsonDecoder`."""
    return _ANY.decode(data)


DECODERS: Final = {
    VectorIn: JsonDecoder(VectorIn), BatchIn: JsonDecoder(BatchIn), SearchIn: JsonDecoder(SearchIn),
    CollectionIn: JsonDecoder(CollectionIn), DeleteIn: JsonDecoder(DeleteIn), MetadataIn: JsonDecoder(MetadataIn),
    TuneIn: JsonDecoder(TuneIn), QueryIn: JsonDecoder(QueryIn),
}
WS_DECODER: Final = JsonDecoder(WsMessage)
WS_ENVELOPE: Final = JsonDecoder(WsEnvelope)
_ANY: Final = JsonDecoder(Any)
ENCODER: Final = msgspec.json.Encoder()
