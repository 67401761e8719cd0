"""Bodies of ``POST .../bulk``: Arrow IPC streams, built from columns or from Arrow data,
and the reading of Parquet, Arrow and ``.npy`` files into such bodies (``s5vec import``).

Needs pyarrow (and numpy), imported here only: the rest of the client does without them.
The columns are ``id``, ``vector`` (fixed-size list of float32), ``metadata`` (JSON text)
and ``timestamp`` (float64 Unix seconds); see :mod:`s5vec.daemon.bulk`.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import msgspec

ARROW_STREAM: Final = "application/vnd.apache.arrow.stream"
CHUNK_ROWS: Final = 8192
"""Rows per request of a bulk import: ~14 MB at 384-d, well under the server's 64 MiB body
limit; two requests in flight keep the server's decoding and its WAL busy at once."""
COLUMNS: Final = ("id", "vector", "metadata", "timestamp")
_ENCODE: Final = msgspec.json.Encoder().encode


class BulkInputError(ValueError):
    """A file or columns that cannot become a bulk body (names the file and column)."""


def arrow_table(ids: Sequence[Any], vectors: Any, metadata: Sequence[Mapping[str, Any] | None] | None = None,
                timestamps: Sequence[Any] | Any | None = None) -> Any:
    """A ``pyarrow.Table`` in the bulk layout from columns: ``vectors`` an (n, d) array,
    ``metadata`` dicts (sent as JSON text), ``timestamps`` Unix seconds or ISO 8601 text."""
    import numpy as np
    import pyarrow as pa

    rows = np.ascontiguousarray(vectors, dtype=np.float32)
    if rows.ndim != 2 or len(rows) != len(ids):
        raise BulkInputError(f"vectors must be {len(ids)} rows (one per id), got shape {rows.shape}")
    columns: dict[str, Any] = {
        "id": pa.array(list(ids)),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1)), rows.shape[1]),
    }
    if metadata is not None:
        columns["metadata"] = pa.array([None if m is None else _ENCODE(m) for m in metadata], pa.binary())
    if timestamps is not None:
        columns["timestamp"] = pa.array(timestamps if not isinstance(timestamps, np.ndarray)
                                         else timestamps.astype(np.float64))
    return pa.table(columns)


def arrow_stream(data: Any) -> bytes:
    """An Arrow IPC stream of a ``pyarrow.Table`` or ``RecordBatch``."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    table = pa.Table.from_batches([data]) if isinstance(data, pa.RecordBatch) else data
    sink = io.BytesIO()
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def to_bulk_layout(table: Any, where: str, id_column: str = "id", vector_column: str = "vector",
                   timestamp_column: str = "timestamp", id_prefix: str = "", first_row: int = 0) -> Any:
    """``table`` (a pyarrow Table) with the bulk columns: ``id_column`` becomes ``id`` (row
    numbers from ``first_row``, after ``id_prefix``, when absent), ``vector_column`` a
    fixed-size list of float32, ``timestamp_column`` ``timestamp``; every other column goes
    into ``metadata`` (a struct column as is, or as a struct of the rest).
    Raises BulkInputError naming ``where``."""
    import pyarrow as pa

    names = table.column_names
    if vector_column not in names:
        raise BulkInputError(f"{where}: no column {vector_column!r} (columns: {', '.join(names)}); "
                             "use --vector-column")
    vector = table.column(vector_column)
    kind = vector.type
    if not (pa.types.is_fixed_size_list(kind) or pa.types.is_list(kind) or pa.types.is_large_list(kind)) \
            or not pa.types.is_floating(kind.value_type):
        raise BulkInputError(f"{where}: column {vector_column!r} must be lists of floats, not {kind}")
    if pa.types.is_fixed_size_list(kind) and kind.value_type != pa.float32():
        vector = vector.cast(pa.list_(pa.float32(), kind.list_size))
    columns: dict[str, Any] = {}
    if id_column in names:
        columns["id"] = table.column(id_column)
    else:
        columns["id"] = pa.array([f"{id_prefix}{n}" for n in range(first_row, first_row + table.num_rows)])
    columns["vector"] = vector
    rest = [n for n in names if n not in (id_column, vector_column, timestamp_column)]
    if rest == ["metadata"] and (pa.types.is_struct(table.column("metadata").type)
                                 or pa.types.is_string(table.column("metadata").type)):
        columns["metadata"] = table.column("metadata")
    elif rest:
        columns["metadata"] = pa.StructArray.from_arrays(
            [table.column(n).combine_chunks() for n in rest], names=rest)
    if timestamp_column in names:
        columns["timestamp"] = table.column(timestamp_column)
    return pa.table(columns)


def file_chunks(path: Path, fmt: str, rows: int = CHUNK_ROWS, *, id_column: str = "id",
                vector_column: str = "vector", timestamp_column: str = "timestamp", id_prefix: str = "",
                sidecar: Path | None = None) -> tuple[int, Iterator[Any]]:
    """``(row count, tables of at most ``rows`` rows in the bulk layout)`` read from a
    Parquet (``parquet``), Arrow IPC file or stream (``arrow``) or ``.npy`` file (``npy``:
    rows of vectors; ids, metadata and timestamps from the NDJSON ``sidecar``, one
    ``{id?, metadata?, timestamp?}`` line per row, or ids ``id_prefix`` + row number).
    Raises BulkInputError, OSError."""
    where = str(path)
    if fmt == "npy":
        return _npy_chunks(path, rows, id_prefix, sidecar)
    import pyarrow as pa
    import pyarrow.ipc as ipc
    import pyarrow.parquet as pq

    options = {"id_column": id_column, "vector_column": vector_column, "timestamp_column": timestamp_column,
               "id_prefix": id_prefix}
    try:
        if fmt == "parquet":
            parquet = pq.ParquetFile(path)
            total = parquet.metadata.num_rows
            batches: Iterator[Any] = parquet.iter_batches(batch_size=rows)
        else:
            try:
                reader: Any = ipc.open_file(path)
                total = sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
                batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
            except pa.ArrowInvalid:
                table = ipc.open_stream(path).read_all()
                total, batches = table.num_rows, iter(table.to_batches(max_chunksize=rows))
    except pa.ArrowInvalid as exc:
        raise BulkInputError(f"{where}: not a {fmt} file ({exc})") from None

    def tables() -> Iterator[Any]:
        done = 0
        for batch in batches:
            for start in range(0, batch.num_rows, rows):
                part = pa.Table.from_batches([batch.slice(start, rows)])
                yield to_bulk_layout(part, where, first_row=done, **options)
                done += part.num_rows
    return total, tables()


def _npy_chunks(path: Path, rows: int, id_prefix: str, sidecar: Path | None) -> tuple[int, Iterator[Any]]:
    import numpy as np

    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise BulkInputError(f"{path}: not a .npy array ({exc})") from None
    if array.ndim != 2:
        raise BulkInputError(f"{path} holds a {array.ndim}-d array; expected rows of vectors (2-d)")
    total = int(array.shape[0])
    if sidecar is not None:
        with open(sidecar, "rb") as f:
            count = sum(1 for _ in f)
        if count != total:
            raise BulkInputError(f"{sidecar} has {count} lines for {total} rows in {path}")
    decode = msgspec.json.Decoder().decode

    def tables() -> Iterator[Any]:
        lines = open(sidecar, "rb") if sidecar is not None else None  # noqa: SIM115 - closed below
        try:
            for start in range(0, total, rows):
                stop = min(total, start + rows)
                ids: list[Any] = [f"{id_prefix}{n}" for n in range(start, stop)]
                metadata: list[Any] | None = None
                stamps: list[Any] | None = None
                if lines is not None:
                    metadata, stamps = [], []
                    for n in range(start, stop):
                        raw = lines.readline()
                        try:
                            fields = decode(raw) if raw.strip() else {}
                        except msgspec.DecodeError:
                            fields = None
                        if not isinstance(fields, dict):
                            raise BulkInputError(f"{sidecar}: line {n + 1} is not a JSON object")
                        if "id" in fields:
                            value = fields["id"]
                            ids[n - start] = str(value) if isinstance(value, int) and value is not True \
                                and value is not False else value
                        metadata.append(fields.get("metadata"))
                        stamps.append(fields.get("timestamp"))
                    if all(s is None for s in stamps):
                        stamps = None
                    elif any(isinstance(s, str) for s in stamps):
                        stamps = [None if s is None else str(s) for s in stamps]
                yield arrow_table(ids, np.asarray(array[start:stop]), metadata, stamps)
        finally:
            if lines is not None:
                lines.close()
    return total, tables()
