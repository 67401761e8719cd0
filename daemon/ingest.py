"""Streamed ingest: ``POST /api/v1/collections/{c}/ingest`` with NDJSON of any length.

The body is read as it arrives (never buffered whole), one record per line (the fields
of a single upsert), and applied in durable batches of up to ``BATCH_LINES`` lines or
``BATCH_BYTES`` bytes. While one batch commits, the next is read and decoded. A bad line
is reported with its line number and does not stop the others; batches already
acknowledged stay written if the client goes away midway. Blank lines are skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import StreamReader, web

from s5vec.engine import Database

from .operations import decode_items
from .params import reply
from .services import SERVICES

BATCH_LINES: Final = 1_000
BATCH_BYTES: Final = 4 << 20
MAX_LINE_BYTES: Final = 4 << 20
MAX_REPORTED_ERRORS: Final = 1_000
_CHUNK: Final = 256 << 10
routes = web.RouteTableDef()


@dataclass(slots=True)
class IngestReport:
    lines: int = 0
    successful: int = 0
    failed: int = 0
    batches: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def fail(self, line: int, record_id: str | None, code: str, message: str) -> None:
        self.failed += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append({"line": line, "id": record_id, "error": {"code": code, "message": message}})

    def out(self) -> dict[str, Any]:
        return {"lines": self.lines, "successful": self.successful, "failed": self.failed,
                "batches": self.batches, "errors": sorted(self.errors, key=lambda e: e["line"]),
                "errors_truncated": self.failed > len(self.errors)}


async def ndjson_lines(stream: StreamReader, max_line: int | None = None) -> AsyncIterator[tuple[int, bytes | None]]:
    """``(line number, bytes)`` for each non-blank line as it arrives; ``None`` for a line
    longer than ``max_line`` (default MAX_LINE_BYTES; skipped without holding it in memory)."""
    max_line = max_line or MAX_LINE_BYTES
    buffer = bytearray()
    number = 0
    skipping = False
    async for chunk in stream.iter_chunked(_CHUNK):
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                if not skipping:
                    buffer += chunk[start:]
                    if len(buffer) > max_line:
                        buffer.clear()
                        skipping = True
                break
            number += 1
            if skipping:
                skipping = False
                yield number, None
            else:
                buffer += chunk[start:end]
                if len(buffer) > max_line:
                    yield number, None
                elif buffer.strip():
                    yield number, bytes(buffer)
                buffer.clear()
            start = end + 1
    if skipping:
        yield number + 1, None
    elif buffer.strip():
        yield number + 1, bytes(buffer)


async def _apply(db: Database, name: str, lines: list[bytes], numbers: list[int], report: IngestReport) -> None:
    items, positions, errors = await asyncio.to_thread(decode_items, lines)
    failures = [(numbers[e.index], e.id, e.error["code"], e.error["message"]) for e in errors]
    if items:
        written, item_errors = await db.upsert(name, items)
        report.successful += len(written)
        failures.extend((numbers[positions[e.index]], e.id, e.code, e.message) for e in item_errors)
    for failure in sorted(failures, key=lambda f: f[0]):
        report.fail(*failure)
    report.batches += 1


@routes.post("/api/v1/collections/{c}/ingest")
async def ingest(request: web.Request) -> web.Response:
    """NDJSON upserts, streamed; answers totals and per-line errors."""
    db, name = request.app[SERVICES].db, request.match_info["c"]
    db.collection(name)
    report = IngestReport()
    lines: list[bytes] = []
    numbers: list[int] = []
    size = 0
    committing: asyncio.Task[None] | None = None
    try:
        async for number, line in ndjson_lines(request.content):
            report.lines += 1
            if line is None:
                report.fail(number, None, "invalid_request", f"line is longer than {MAX_LINE_BYTES} bytes")
                continue
            lines.append(line)
            numbers.append(number)
            size += len(line)
            if len(lines) >= BATCH_LINES or size >= BATCH_BYTES:
                if committing is not None:
                    await committing
                committing = asyncio.create_task(_apply(db, name, lines, numbers, report))
                lines, numbers, size = [], [], 0
        if committing is not None:
            await committing
            committing = None
        if lines:
            await _apply(db, name, lines, numbers, report)
    finally:
        if committing is not None and not committing.done():
            committing.cancel()
            await asyncio.gather(committing, return_exceptions=True)
    return reply(report.out())
