"""The ``s5vec`` commands that talk to a running daemon through the Python client:
``collections``, ``upsert``, ``import``, ``export``, ``search``, ``get``, ``delete`` and
``storage``. (``serve``, ``bench``, ``keys``, ``backup`` live in ``s5vec.daemon.cli``,
which registers these.)

Global options: ``--url`` (default ``$S5VEC_URL``, else http://127.0.0.1:7533),
``--api-key`` (default ``$S5VEC_API_KEY``), ``--json`` (one JSON document on standard
output, also for errors), ``--timeout``. Progress bars go to standard error, on a terminal only.

Exit codes: 0 done; 1 the server refused or failed (not found, invalid, forbidden ...);
2 usage error (bad arguments, unreadable input); 3 the daemon could not be reached or did
not answer; 4 partly done (some records rejected, or some ids not found).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import itertools
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import IO, Any, Final

import msgspec

from .async_client import DEFAULT_URL, AsyncClient
from .errors import (
    ConnectionFailed,
    Forbidden,
    RequestTimeout,
    S5vecError,
    Unauthorized,
)
from .results import CollectionInfo, IngestResult, Record

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNREACHABLE: Final = 3
EXIT_PARTIAL: Final = 4
COMMANDS: Final = frozenset({"collections", "upsert", "import", "export", "search", "get", "delete", "storage"})
FORMATS: Final = ("ndjson", "csv", "npy", "parquet", "arrow")
BULK_FORMATS: Final = frozenset({"npy", "parquet", "arrow"})  # sent through POST .../bulk as Arrow streams
BULK_IN_FLIGHT: Final = 2  # requests of a bulk import in flight: one decoded by the server while one commits
_SHOWN_ERRORS: Final = 20


class UsageError(Exception):
    """Bad arguments or input: exit 2."""


# ----------------------------------------------------------------------- parser
def add_global_options(parser: argparse.ArgumentParser) -> None:
    """``--url``, ``--api-key``, ``--json``, ``--timeout``: accepted before or after the
    subcommand (defaults are applied in :func:`run`)."""
    parser.add_argument("--url", default=argparse.SUPPRESS,
                        help=f"daemon URL (default $S5VEC_URL or {DEFAULT_URL})")
    parser.add_argument("--api-key", default=argparse.SUPPRESS, help="API key (default $S5VEC_API_KEY)")
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print one JSON document on standard output (errors too)")
    parser.add_argument("--timeout", type=float, default=argparse.SUPPRESS,
                        help="seconds to wait for each answer (default 60)")


_VALUED_OPTIONS: Final = frozenset({"--url", "--api-key", "--timeout"})
GLOBAL_OPTIONS_HELP: Final = f"""\
options of the commands that talk to a running daemon (collections, upsert, import, export,
search, get, delete, storage), before or after the command:
  --url URL        daemon URL (default $S5VEC_URL or {DEFAULT_URL})
  --api-key KEY    API key (default $S5VEC_API_KEY)
  --json           print one JSON document on standard output (errors too)
  --timeout S      seconds to wait for each answer (default 60)

`s5vec COMMAND --help` describes each command."""


def is_client_command(argv: Sequence[str]) -> bool:
    """Whether ``argv`` (without the program name) runs one of these commands, so
    ``s5vec`` can skip loading the daemon for it (``--help`` before it: no)."""
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg in _VALUED_OPTIONS:
            index += 2
        elif arg == "--json" or arg.split("=", 1)[0] in _VALUED_OPTIONS:
            index += 1
        else:
            return arg in COMMANDS
    return False


def add_commands(sub: Any) -> None:
    """Register the client commands on the top-level subparsers ``sub``."""
    common = argparse.ArgumentParser(add_help=False)
    add_global_options(common)

    collections = sub.add_parser("collections", help="list, create, inspect and drop collections")
    actions = collections.add_subparsers(dest="collections_command", required=True)
    actions.add_parser("list", parents=[common], help="every collection with its size")
    create = actions.add_parser("create", parents=[common], help="create a collection")
    create.add_argument("name")
    create.add_argument("--dimension", "-d", type=int, required=True, help="vector length")
    create.add_argument("--metric", choices=("cosine", "l2", "ip"), default="cosine")
    create.add_argument("--schema", help="metadata schema, e.g. video_nft")
    create.add_argument("--index", action="append", default=[], metavar="FIELD=TYPE",
                        help="payload index (keyword, number, datetime or bool); repeatable")
    create.add_argument("--hnsw-m", type=int, help="HNSW graph degree (default 16)")
    create.add_argument("--ef-construction", type=int, help="HNSW build ef (default 200)")
    create.add_argument("--ef-search", type=int, help="HNSW search ef (default 64)")
    create.add_argument("--recent-threshold-s", type=float, help="age at which records move to the historical tier")
    create.add_argument("--embedding-model", help="model that embeds 'text' sent instead of vectors")
    get = actions.add_parser("get", parents=[common], help="a collection's settings and statistics")
    get.add_argument("name")
    drop = actions.add_parser("drop", parents=[common], help="delete a collection and all its records")
    drop.add_argument("name")
    drop.add_argument("--yes", "-y", action="store_true", help="do not ask (asked only on a terminal)")

    upsert = sub.add_parser("upsert", parents=[common], help="write one record, or NDJSON records from a file")
    upsert.add_argument("collection")
    upsert.add_argument("--file", "-f", help="NDJSON file of records ('-' for standard input)")
    upsert.add_argument("--id", help="the record's id (with --vector)")
    upsert.add_argument("--vector", help="JSON array of numbers")
    upsert.add_argument("--text", help="text to embed instead of --vector (collections with an embedding model)")
    upsert.add_argument("--metadata", help="JSON object")
    upsert.add_argument("--timestamp", help="ISO 8601 or Unix seconds (default: now)")

    imp = sub.add_parser("import", parents=[common],
                         help="import NDJSON or CSV records (streamed), or .npy, Parquet and Arrow files (bulk)")
    imp.add_argument("collection")
    imp.add_argument("files", nargs="+", metavar="FILE", help="input files ('-': NDJSON on standard input)")
    imp.add_argument("--format", choices=FORMATS, help="default: from each file name (.ndjson/.jsonl/.json, .csv/.tsv, "
                                                       ".npy, .parquet/.pq, .arrow/.feather/.arrows/.ipc)")
    imp.add_argument("--chunk-rows", type=int, default=None,
                     help="bulk formats: rows per request (default 8192)")
    imp.add_argument("--create", action="store_true",
                     help="create the collection if it does not exist (dimension from the data)")
    imp.add_argument("--metric", choices=("cosine", "l2", "ip"), default="cosine", help="with --create")
    imp.add_argument("--id-column", default="id", help="CSV/Parquet/Arrow: column of record ids (default id)")
    imp.add_argument("--vector-column", default="vector", help="CSV/Parquet/Arrow: column of vectors (default vector)")
    imp.add_argument("--timestamp-column", default="timestamp",
                     help="CSV/Parquet/Arrow: column of timestamps, if present")
    imp.add_argument("--delimiter", help="CSV: field separator (default ',', tab for .tsv)")
    imp.add_argument("--infer-types", action="store_true",
                     help="CSV: read metadata cells that are JSON numbers, booleans, arrays or objects as such "
                          "(default: every cell is a string)")
    imp.add_argument("--metadata", help=".npy: NDJSON with one {id?, metadata?, timestamp?} line per row")
    imp.add_argument("--id-prefix", default="", help="files without ids: ids are PREFIX + row number")

    export = sub.add_parser("export", parents=[common], help="write every record as NDJSON (what import reads)")
    export.add_argument("collection")
    export.add_argument("--out", "-o", help="file to write (default standard output)")
    export.add_argument("--no-vector", action="store_true", help="leave the vectors out")
    export.add_argument("--after", help="resume after this id (records come in id order)")

    search = sub.add_parser("search", parents=[common], help="nearest neighbours of a vector or of a record")
    search.add_argument("collection")
    query = search.add_mutually_exclusive_group(required=True)
    query.add_argument("--vector", help="JSON array of numbers")
    query.add_argument("--id", help="search with this record's vector (the record itself is left out)")
    query.add_argument("--text", help="text to embed (collections with an embedding model)")
    search.add_argument("-k", type=int, default=10, help="how many results (default 10)")
    search.add_argument("--filter", help="metadata filter, JSON (Mongo-style)")
    search.add_argument("--ef", type=int, help="HNSW ef for this search")
    search.add_argument("--nprobe", type=int, help="IVF lists probed in the historical tier")
    search.add_argument("--threshold", type=float, help="minimum score")
    search.add_argument("--include-vector", action="store_true", help="return the vectors too")
    search.add_argument("--scoring", help="scoring options, JSON ({\"decay\": ..., \"popularity\": ...})")

    get_records = sub.add_parser("get", parents=[common], help="fetch records by id")
    get_records.add_argument("collection")
    get_records.add_argument("ids", nargs="+", metavar="id")
    get_records.add_argument("--no-vector", action="store_true", help="leave the vector out")

    delete = sub.add_parser("delete", parents=[common], help="delete records by id or by filter")
    delete.add_argument("collection")
    which = delete.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", action="append", dest="ids", metavar="ID", help="a record id; repeatable")
    which.add_argument("--filter", help="delete every record matching this JSON filter")

    storage = sub.add_parser("storage", help="the storage backend: status, checkpoint")
    storage_actions = storage.add_subparsers(dest="storage_command", required=True)
    storage_actions.add_parser("status", parents=[common],
                               help="backend mode, reachability, failures, request counts, WAL and checkpoint LSNs")
    storage_actions.add_parser("checkpoint", parents=[common], help="write a checkpoint now (admin scope)")


# -------------------------------------------------------------------------- run
class Output:
    """Where results go: text for people, or one JSON document with ``--json``."""

    def __init__(self, as_json: bool) -> None:
        self.json = as_json

    def result(self, data: Any, text: str | Callable[[], str]) -> None:
        if self.json:
            print(json.dumps(msgspec.to_builtins(data), ensure_ascii=False))
        else:
            print(text() if callable(text) else text)

    def error(self, exc: BaseException, code: str, status: int | None = None, field: str | None = None) -> None:
        if self.json:
            detail: dict[str, Any] = {"code": code, "message": getattr(exc, "message", str(exc))}
            if status is not None:
                detail["status"] = status
            if field:
                detail["field"] = field
            print(json.dumps({"error": detail}, ensure_ascii=False))
        else:
            print(f"s5vec: {exc}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Run a client command; returns the exit code."""
    out = Output(bool(getattr(args, "json", False)))
    url = getattr(args, "url", None) or os.environ.get("S5VEC_URL") or DEFAULT_URL
    api_key = getattr(args, "api_key", None) or os.environ.get("S5VEC_API_KEY") or None
    timeout = getattr(args, "timeout", 60.0)
    command = COMMANDS_RUN[args.command]
    try:
        return asyncio.run(_with_client(command, args, out, url, api_key, timeout))
    except UsageError as exc:
        out.error(exc, "usage")
        return EXIT_USAGE
    except (ConnectionFailed, RequestTimeout) as exc:
        out.error(exc, exc.code)
        return EXIT_UNREACHABLE
    except S5vecError as exc:
        out.error(exc, exc.code, exc.status, exc.field)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("s5vec: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `s5vec export c | head`
        sys.stderr.close()
        return EXIT_OK


async def _with_client(command: Callable[..., Any], args: argparse.Namespace, out: Output, url: str,
                       api_key: str | None, timeout: float) -> int:
    async with AsyncClient(url, api_key, timeout=timeout, retries=2) as client:
        code: int = await command(client, args, out)
        return code


# ------------------------------------------------------------------ arguments
def _json_arg(text: str | None, name: str, kind: type) -> Any:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(value, kind):
        raise UsageError(f"{name} must be a JSON {'array' if kind is list else 'object'}")
    return value


def _vector_arg(text: str) -> list[float]:
    vector = _json_arg(text, "--vector", list)
    if not vector or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in vector):
        raise UsageError("--vector must be a non-empty JSON array of numbers")
    return [float(x) for x in vector]


def _progress(total: int | None, unit: str, description: str) -> Any:
    """A tqdm bar on standard error when it is a terminal (and tqdm is installed), else a no-op."""
    if not sys.stderr.isatty():
        return _NoBar()
    try:
        from tqdm import tqdm  # type: ignore[import-untyped]
    except ImportError:
        return _NoBar()
    return tqdm(total=total, unit=unit, unit_scale=True, desc=description, file=sys.stderr, leave=False)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


# ---------------------------------------------------------------- collections
def _collection_line(info: CollectionInfo) -> str:
    return f"{info.name:<24} {info.dimension:>6}  {info.metric:<6} {info.count:>10}  {info.pending:>8}"


def _collection_text(info: CollectionInfo) -> str:
    lines = [f"{key}: {json.dumps(value) if isinstance(value, (dict, list)) else value}"
             for key, value in info.stats.items()]
    return "\n".join(lines)


async def _collections(client: AsyncClient, args: argparse.Namespace, out: Output) -> int:
    action = args.collections_command
    if action == "list":
        infos = await client.list_collections()
        header = f"{'name':<24} {'dim':>6}  {'metric':<6} {'records':>10}  {'pending':>8}"
        out.result([i.stats for i in infos],
                   lambda: "\n".join([header, *(_collection_line(i) for i in infos)]) if infos else "no collections")
        return EXIT_OK
    if action == "create":
        indexes: dict[str, str] = {}
        for spec in args.index:
            field, sep, kind = spec.partition("=")
            if not sep or not field or not kind:
                raise UsageError(f"--index takes FIELD=TYPE, got {spec!r}")
            indexes[field] = kind
        hnsw = {k: v for k, v in (("m", args.hnsw_m), ("ef_construction", args.ef_construction),
                                  ("ef_search", args.ef_search)) if v is not None}
        info = await client.create_collection(args.name, args.dimension, args.metric, schema=args.schema,
                                              hnsw=hnsw or None, payload_indexes=indexes or None,
                                              recent_threshold_s=args.recent_threshold_s,
                                              embedding_model=args.embedding_model)
        out.result(info.stats, f"collection {info.name}: {info.dimension}-d, {info.metric}, {info.count} records")
        return EXIT_OK
    if action == "get":
        info = await client.get_collection(args.name)
        out.result(info.stats, lambda: _collection_text(info))
        return EXIT_OK
    # drop
    if not args.yes and sys.stdin.isatty() and not out.json:
        info = await client.get_collection(args.name)
        answer = input(f"drop collection {info.name} and its {info.count} records? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("not dropped", file=sys.stderr)
            return EXIT_ERROR
    await client.drop_collection(args.name)
    out.result({"dropped": args.name}, f"dropped {args.name}")
    return EXIT_OK


# ---------------------------------------------------------------------- import
class Source:
    """Records read from an input file, as NDJSON lines for the ingest stream, with the
    input line each came from (the server numbers the lines it receives)."""

    def __init__(self) -> None:
        self.lines: list[int] = []  # input line of each record sent, in order
        self.errors: list[dict[str, Any]] = []  # records rejected before sending
        self.total: int | None = None  # records expected, when known
        self.dimension: int | None = None  # of the first record

    def records(self) -> Iterator[bytes]:
        raise NotImplementedError

    def reject(self, line: int, record_id: Any, message: str) -> None:
        self.errors.append({"line": line, "id": None if record_id is None else str(record_id),
                            "error": {"code": "invalid_request", "message": message}})


class NdjsonSource(Source):
    """Lines are sent as they are (blank lines too, so the numbering matches)."""

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__()
        self.stream = stream
        self.head: list[bytes] = []

    def peek_dimension(self) -> int | None:
        while True:
            line = self.stream.readline()
            if not line:
                return None
            self.head.append(line)
            if line.strip():
                try:
                    vector = json.loads(line).get("vector")
                except (ValueError, AttributeError):
                    return None
                return len(vector) if isinstance(vector, list) else None

    def records(self) -> Iterator[bytes]:
        for number, line in enumerate(itertools.chain(self.head, self.stream), 1):
            self.lines.append(number)
            yield line if line.endswith(b"\n") else line + b"\n"


def _parse_vector(cell: str) -> list[float]:
    text = cell.strip()
    if text.startswith("["):
        value = json.loads(text)
        if not isinstance(value, list):
            raise ValueError("not an array")
        return [float(x) for x in value]
    parts = text.replace(";", " ").replace(",", " ").split()
    if not parts:
        raise ValueError("empty")
    return [float(x) for x in parts]


def _cell(value: str, infer: bool) -> Any:
    if not infer:
        return value
    try:
        parsed = json.loads(value)
    except ValueError:
        return value
    return parsed if not isinstance(parsed, str) else value


class CsvSource(Source):
    """A header row; the id, vector and timestamp columns; every other non-empty cell is metadata."""

    def __init__(self, stream: IO[str], args: argparse.Namespace, delimiter: str) -> None:
        super().__init__()
        self.reader = csv.DictReader(stream, delimiter=delimiter)
        self.args = args
        fields = self.reader.fieldnames or []
        if args.vector_column not in fields:
            raise UsageError(f"no column {args.vector_column!r} in the CSV header ({', '.join(fields)}); "
                             "use --vector-column")
        self.rows = iter(self.reader)
        self.first: dict[str, str] | None = next(self.rows, None)
        if self.first is not None:
            try:
                self.dimension = len(_parse_vector(self.first[args.vector_column] or ""))
            except ValueError:
                self.dimension = None

    def records(self) -> Iterator[bytes]:
        args = self.args
        rows = itertools.chain([self.first] if self.first is not None else [], self.rows)
        meta_columns = [c for c in self.reader.fieldnames or []
                        if c not in (args.id_column, args.vector_column, args.timestamp_column)]
        row_number = 0
        for row in rows:
            row_number += 1
            line = self.reader.line_num
            record_id: Any = row.get(args.id_column) or None
            if record_id is None and args.id_column not in (self.reader.fieldnames or []):
                record_id = str(row_number - 1)
            try:
                vector = _parse_vector(row.get(args.vector_column) or "")
            except ValueError:
                self.reject(line, record_id, f"column {args.vector_column!r} is not a vector: a JSON array or "
                                             "numbers separated by spaces, semicolons or commas")
                continue
            record: dict[str, Any] = {"id": record_id, "vector": vector,
                                      "metadata": {c: _cell(row[c], args.infer_types) for c in meta_columns
                                                   if row.get(c) not in (None, "")}}
            stamp = row.get(args.timestamp_column)
            if stamp:
                record["timestamp"] = float(stamp) if _is_number(stamp) else stamp
            self.lines.append(line)
            yield msgspec.json.encode(record) + b"\n"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class NpySource(Source):
    """Rows of a 2-d .npy array; ids, metadata and timestamps from an NDJSON file line per row."""

    def __init__(self, path: Path, metadata: Path | None, id_prefix: str) -> None:
        super().__init__()
        try:
            import numpy as np
        except ImportError:
            raise UsageError("importing .npy files needs numpy (pip install numpy)") from None
        try:
            self.array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read {path}: {exc}") from None
        if self.array.ndim != 2:
            raise UsageError(f"{path} holds a {self.array.ndim}-d array; expected rows of vectors (2-d)")
        self.total, self.dimension = int(self.array.shape[0]), int(self.array.shape[1])
        self.metadata = metadata
        self.id_prefix = id_prefix
        if metadata is not None:
            with open(metadata, "rb") as f:
                count = sum(1 for _ in f)
            if count != self.total:
                raise UsageError(f"{metadata} has {count} lines for {self.total} rows in {path}")

    def records(self) -> Iterator[bytes]:
        meta = open(self.metadata, "rb") if self.metadata is not None else None  # noqa: SIM115 - closed below
        try:
            for start in range(0, self.array.shape[0], 1024):
                rows = self.array[start:start + 1024].astype("float64").tolist()
                for offset, vector in enumerate(rows):
                    row = start + offset
                    fields: dict[str, Any] = {}
                    if meta is not None:
                        raw = meta.readline()
                        try:
                            fields = json.loads(raw) if raw.strip() else {}
                        except ValueError:
                            fields = None  # type: ignore[assignment]
                        if not isinstance(fields, dict):
                            self.reject(row + 1, None, "the metadata line is not a JSON object")
                            continue
                    fields.setdefault("id", f"{self.id_prefix}{row}")
                    self.lines.append(row + 1)
                    yield msgspec.json.encode({**fields, "vector": vector}) + b"\n"
        finally:
            if meta is not None:
                meta.close()


def _format_of(path: str, given: str | None) -> str:
    if given:
        return given
    suffix = Path(path).suffix.lower()
    if path == "-" or suffix in (".ndjson", ".jsonl", ".json"):
        return "ndjson"
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix == ".npy":
        return "npy"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".arrow", ".feather", ".arrows", ".ipc"):
        return "arrow"
    raise UsageError(f"cannot tell the format of {path}; use --format {'|'.join(FORMATS)}")


def _open_source(path: str, fmt: str, args: argparse.Namespace) -> tuple[Source, AbstractContextManager[Any]]:
    try:
        if fmt == "npy":
            metadata = Path(args.metadata) if getattr(args, "metadata", None) else None
            return NpySource(Path(path), metadata, args.id_prefix), nullcontext()
        if fmt == "csv":
            handle: IO[Any] = open(path, newline="", encoding="utf-8")  # noqa: SIM115 - returned to a with
            delimiter = args.delimiter or ("\t" if path.lower().endswith(".tsv") else ",")
            return CsvSource(handle, args, delimiter), handle
        handle = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
        return NdjsonSource(handle), handle if path != "-" else nullcontext()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None


async def _ingest(client: AsyncClient, collection: str, source: Source, create: bool, metric: str,
                  out: Output) -> int:
    if create:
        if isinstance(source, NdjsonSource):
            source.dimension = source.peek_dimension()
        try:
            await client.get_collection(collection)
        except S5vecError as exc:
            if exc.code != "collection_not_found":
                raise
            if source.dimension is None:
                raise UsageError("cannot create the collection: the first record has no vector") from None
            await client.create_collection(collection, source.dimension, metric)
    bar = _progress(source.total, "rec", f"import {collection}")
    try:
        result = await client.ingest(collection, source.records(), progress=bar.update)
    finally:
        bar.close()
    return _report_ingest(collection, result, source, out)


def _report_ingest(collection: str, result: IngestResult, source: Source, out: Output) -> int:
    errors = [{"line": source.lines[e.line - 1] if 0 < e.line <= len(source.lines) else e.line, "id": e.id,
               "error": msgspec.to_builtins(e.error)} for e in result.errors]
    errors = sorted(errors + source.errors, key=lambda e: e["line"])
    failed = result.failed + len(source.errors)
    report = {"collection": collection, "records": result.lines + len(source.errors),
              "successful": result.successful, "failed": failed, "errors": errors,
              "errors_truncated": result.errors_truncated}

    def text() -> str:
        lines = [f"imported {result.successful} of {report['records']} records into {collection}"
                 + (f"; {failed} rejected:" if failed else "")]
        for error in errors[:_SHOWN_ERRORS]:
            where = f" (id {error['id']})" if error["id"] else ""
            lines.append(f"  line {error['line']}{where}: {error['error']['code']}: {error['error']['message']}")
        if failed > _SHOWN_ERRORS:
            lines.append(f"  ... and {failed - _SHOWN_ERRORS} more (--json lists up to 1,000)")
        return "\n".join(lines)

    out.result(report, text)
    return EXIT_PARTIAL if failed else EXIT_OK


async def _import(client: AsyncClient, args: argparse.Namespace, out: Output) -> int:
    formats = [_format_of(path, args.format) for path in args.files]
    if any(fmt in BULK_FORMATS for fmt in formats):
        if not all(fmt in BULK_FORMATS for fmt in formats):
            raise UsageError("import .npy, Parquet and Arrow files (bulk) apart from NDJSON and CSV (streamed)")
        return await _bulk_import(client, args, formats, out)
    if len(args.files) > 1:
        codes = []
        for path, fmt in zip(args.files, formats):
            source, handle = _open_source(path, fmt, args)
            with handle:
                codes.append(await _ingest(client, args.collection, source, args.create, args.metric, out))
        return max(codes)
    source, handle = _open_source(args.files[0], formats[0], args)
    with handle:
        return await _ingest(client, args.collection, source, args.create, args.metric, out)


async def _bulk_import(client: AsyncClient, args: argparse.Namespace, formats: list[str], out: Output) -> int:
    """Files through ``POST .../bulk`` in chunks, BULK_IN_FLIGHT requests at a time; each
    request is all or nothing, so the first refused chunk stops the import (the chunks
    before it are stored: importing again rewrites them by id)."""
    import time

    from .bulk import CHUNK_ROWS, BulkInputError, file_chunks

    rows = args.chunk_rows or CHUNK_ROWS
    if rows < 1:
        raise UsageError("--chunk-rows must be at least 1")
    sources = []
    try:
        for path, fmt in zip(args.files, formats):
            sidecar = Path(args.metadata) if fmt == "npy" and args.metadata else None
            total, tables = file_chunks(Path(path), fmt, rows, id_column=args.id_column,
                                        vector_column=args.vector_column, timestamp_column=args.timestamp_column,
                                        id_prefix=args.id_prefix, sidecar=sidecar)
            sources.append((path, total, tables))
    except ImportError as exc:
        raise UsageError(f"importing {', '.join(sorted(set(formats)))} files needs pyarrow and numpy ({exc})") from None
    except (BulkInputError, OSError) as exc:
        raise UsageError(f"cannot read {getattr(exc, 'filename', None) or ''}{exc}".strip()) from None
    grand_total = sum(total for _, total, _ in sources)
    bar = _progress(grand_total, "rec", f"import {args.collection}")
    stored = historical = requests = 0
    started = time.perf_counter()
    created = not args.create
    in_flight: set[asyncio.Task[Any]] = set()

    async def settle(task: asyncio.Task[Any]) -> None:
        nonlocal stored, historical, requests
        result, count = await task
        stored += result.records
        historical += result.historical
        requests += 1
        bar.update(count)

    try:
        for path, _total, tables in sources:
            first = 0
            try:
                for table in tables:
                    if not created:
                        await _ensure_collection(client, args.collection, table, args.metric)
                        created = True
                    where = f"{path} rows {first}..{first + table.num_rows - 1}"
                    in_flight.add(asyncio.create_task(_send_chunk(client, args.collection, table, where)))
                    first += table.num_rows
                    while len(in_flight) >= BULK_IN_FLIGHT:
                        done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                        for task in done:
                            await settle(task)
            except BulkInputError as exc:
                raise UsageError(str(exc)) from None
        while in_flight:
            done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                await settle(task)
    finally:
        for task in in_flight:
            task.cancel()
        await asyncio.gather(*in_flight, return_exceptions=True)
        bar.close()
    seconds = time.perf_counter() - started
    report = {"collection": args.collection, "files": list(args.files), "records": stored, "successful": stored,
              "failed": 0, "errors": [], "historical": historical, "requests": requests,
              "seconds": round(seconds, 3), "records_per_s": round(stored / seconds, 1) if seconds > 0 else None}
    out.result(report, f"imported {stored} of {grand_total} records into {args.collection} ({historical} "
                       f"historical) in {seconds:.1f}s, {report['records_per_s']} records/s")
    return EXIT_OK


async def _send_chunk(client: AsyncClient, collection: str, table: Any, where: str) -> tuple[Any, int]:
    try:
        return await client.bulk_upsert(collection, table), table.num_rows
    except S5vecError as exc:  # say which file and rows the server refused
        exc.message = f"{where}: {exc.message}"
        raise


async def _ensure_collection(client: AsyncClient, collection: str, table: Any, metric: str) -> None:
    """``--create``: the collection, with the dimension of the first chunk's vectors."""
    try:
        await client.get_collection(collection)
    except S5vecError as exc:
        if exc.code != "collection_not_found":
            raise
        await client.create_collection(collection, table.schema.field("vector").type.list_size, metric)


async def _upsert(client: AsyncClient, args: argparse.Namespace, out: Output) -> int:
    if args.file is not None:
        if args.vector is not None or args.text is not None or args.id is not None:
            raise UsageError("give either --file or --id with --vector/--text, not both")
        source, handle = _open_source(args.file, "ndjson", args)
        with handle:
            return await _ingest(client, args.collection, source, False, "cosine", out)
    if (args.vector is None) == (args.text is None):
        raise UsageError("give --file, or --id with one of --vector and --text")
    metadata = _json_arg(args.metadata, "--metadata", dict)
    timestamp: float | str | None = args.timestamp
    if args.timestamp is not None and _is_number(args.timestamp):
        timestamp = float(args.timestamp)
    vector = _vector_arg(args.vector) if args.vector is not None else None
    record_id = await client.upsert(args.collection, args.id, vector, metadata, timestamp, text=args.text)
    out.result({"id": record_id, "status": "upserted"}, f"upserted {record_id}")
    return EXIT_OK


# ---------------------------------------------------------------------- export
async def _export(client: AsyncClient, args: argparse.Namespace, out: Output) -> int:
    info = await client.get_collection(args.collection)
    target = _output(args.out)
    bar = _progress(info.count, "rec", f"export {args.collection}")
    count = 0
    try:
        async for line in _batched(client.export_lines(args.collection, not args.no_vector, args.after)):
            target.write(line)
            count += line.count(b"\n")
            bar.update(line.count(b"\n"))
    except S5vecError as exc:  # the stream broke off: say what was kept, and that it is not all
        where = args.out or "the output"
        raise type(exc)(f"{exc.message}; {where} is incomplete: {count} records were written before the "
                        f"export broke off (resume with --after <last id written>)", status=exc.status,
                        code=exc.code, field=exc.field) from None
    finally:
        bar.close()
        if args.out:
            target.close()
        else:
            target.flush()
    summary = {"collection": args.collection, "exported": count, "out": args.out}
    if args.out:
        out.result(summary, f"exported {count} records of {args.collection} to {args.out}")
    else:
        print(f"exported {count} records of {args.collection}", file=sys.stderr)
    return EXIT_OK


def _output(path: str | None) -> IO[bytes]:
    if path is None:
        return sys.stdout.buffer
    try:
        return open(path, "wb")  # the caller closes it
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


async def _batched(lines: AsyncIterator[bytes], size: int = 1 << 16) -> AsyncIterator[bytes]:
    buffer = io.BytesIO()
    try:
        async for line in lines:
            buffer.write(line)
            if buffer.tell() >= size:
                yield buffer.getvalue()
                buffer = io.BytesIO()
    except S5vecError:
        if buffer.tell():  # the whole lines received before a failure still go out
            yield buffer.getvalue()
        raise
    if buffer.tell():
        yield buffer.getvalue()


# ---------------------------------------------------------------------- search
def _brief(value: Any, width: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False) if value is not None else ""
    return text if len(text) <= width else text[:width - 1] + "…"


async def _search(client: AsyncClient, args: argparse.Namespace, out: Output) -> int:
    filter_spec = _json_arg(args.filter, "--filter", dict)
    scoring = _json_arg(args.scoring, "--scoring", dict)
    k = args.k
    if args.id is not None:
        record = await client.get(args.collection, args.id, include_vector=True)
        vector: Any = record.vector
        k += 1
    else:
        vector = _vector_arg(args.vector) if args.vector is not None else None
    response = await client.search(args.collection, vector, k, filter_spec, text=args.text, ef=args.ef,
                                   nprobe=args.nprobe,
                                   score_threshold=args.threshold, include_vector=args.include_vector or None,
                                   scoring=scoring)
    hits = [h for h in response.hits if args.id is None or h.id != args.id][:args.k]
    data = {"results": hits, "count": len(hits), "search_time_ms": response.search_time_ms,
            "partial": response.partial}

    def text() -> str:
        if not hits:
            return "no results"
        width = max(4, *(len(h.id) for h in hits))
        lines = [f"{'#':>3}  {'score':>8}  {'id':<{width}}  metadata"]
        lines += [f"{n:>3}  {h.score:>8.4f}  {h.id:<{width}}  {_brief(h.metadata)}" for n, h in enumerate(hits, 1)]
        if response.partial:
            lines.append("(partial: the search hit its timeout)")
        return "\n".join(lines)

    out.result(data, text)
    return EXIT_OK


# ------------------------------------------------------------------ get/delete
def _record_text(record: Record) -> str:
    lines = [f"id: {record.id}", f"timestamp: {record.timestamp}",
             f"metadata: {json.dumps(record.metadata, ensure_ascii=False)}"]
    if record.vector is not None:
        shown = ", ".join(f"{x:.6g}" for x in record.vector[:8])
        more = ", …" if len(record.vector) > 8 else ""
        lines.append(f"vector: [{shown}{more}] ({len(record.vector)} dimensions)")
    return "\n".join(lines)


async def _get(client: AsyncClient, args: argparse.Namespace, out: Output) -> int:
    found: list[Record] = []
    missing: list[str] = []
    for record_id in args.ids:
        try:
            found.append(await client.get(args.collection, record_id, include_vector=not args.no_vector))
        except S5vecError as exc:
            if exc.code != "record_not_found":
                raise
            missing.append(record_id)
    data: Any = found[0] if len(args.ids) == 1 and found else {"records": found, "missing": missing}
    if len(args.ids) == 1 and missing:
        out.error(S5vecError(f"no record {missing[0]!r} in collection {args.collection!r}", status=404,
                             code="record_not_found"), "record_not_found", 404)
        return EXIT_ERROR
    out.result(data, lambda: "\n\n".join([*(_record_text(r) for r in found),
                                          *(f"{m}: not found" for m in missing)]))
    if missing:
        return EXIT_PARTIAL if found else EXIT_ERROR
    return EXIT_OK


async def _delete(client: AsyncClient, args: argparse.Namespace, out: Output) -> int:
    if args.filter is not None:
        spec = _json_arg(args.filter, "--filter", dict)
        if not spec:
            raise UsageError("an empty --filter would delete everything; drop the collection instead")
        deleted = await client.delete_many(args.collection, filter=spec)
        out.result({"deleted": deleted}, f"deleted {deleted} records")
        return EXIT_OK
    deleted = await client.delete_many(args.collection, ids=args.ids)
    out.result({"deleted": deleted, "requested": len(args.ids)},
               f"deleted {deleted} of {len(args.ids)} records" if deleted < len(args.ids) else f"deleted {deleted}")
    if deleted == len(args.ids):
        return EXIT_OK
    return EXIT_PARTIAL if deleted else EXIT_ERROR


# --------------------------------------------------------------------- storage
async def _storage(client: AsyncClient, args: argparse.Namespace, out: Output) -> int:
    if args.storage_command == "checkpoint":
        result = await client.checkpoint()
        out.result(result, f"checkpoint at LSN {result.get('lsn')}: manifest {result.get('manifest')}")
        return EXIT_OK
    try:
        stats = await client.statistics()
        source = "statistics"
    except (Forbidden, Unauthorized):  # not an admin key: the public health report has most of it
        stats = await client.health()
        source = "health"
    data = {"storage": stats.get("storage", {}), "wal_bytes": stats.get("wal_bytes"),
            "applied_lsn": stats.get("applied_lsn"), "checkpoint_lsn": stats.get("checkpoint_lsn"), "source": source}

    def text() -> str:
        storage = data["storage"]
        # JSON values (true, null, "text" unquoted), never Python reprs (True, None)
        lines = [f"{key}: {value if isinstance(value, str) else json.dumps(value)}" for key, value in storage.items()]
        lines += [f"wal_bytes: {data['wal_bytes']}", f"applied_lsn: {data['applied_lsn']}",
                  f"checkpoint_lsn: {data['checkpoint_lsn']}"]
        return "\n".join(lines)

    out.result(data, text)
    return EXIT_OK


COMMANDS_RUN: Final[dict[str, Callable[..., Any]]] = {
    "collections": _collections, "upsert": _upsert, "import": _import, "export": _export, "search": _search,
    "get": _get, "delete": _delete, "storage": _storage,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run only the client commands (``python -m s5vec.client.cli ...``): starts faster
    than ``s5vec``, which also loads the daemon."""
    parser = argparse.ArgumentParser(prog="s5vec", description="s5vec client commands")
    add_global_options(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    add_commands(sub)
    return run(parser.parse_args(list(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    raise SystemExit(main())
