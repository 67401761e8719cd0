"""Hooks for ``schemathesis run`` in tests/daemon/test_schemathesis_cli.py (loaded by file path).

The ingest body is NDJSON, sent as the generated text (cases with a non-text body are left
out: there is no such NDJSON request). Positive cases whose filter is over
the daemon's limits for a whole filter (engine.filter_max_nodes, filter_max_in_values: sums
over the tree, which JSON Schema cannot state; the document gives them in Filter's
description and bounds each list) are not generated: the daemon rightly refuses them (400)."""

from __future__ import annotations

import json
from typing import Any

import schemathesis

from s5vec.index.errors import InvalidFilter
from s5vec.index.filters import DEFAULT_FILTER_LIMITS, check_filter_size


@schemathesis.serializer("application/x-ndjson")
def ndjson(_: Any, value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _filters(case: Any) -> list[Any]:
    found = []
    if isinstance(case.body, dict) and "filter" in case.body:
        found.append(case.body["filter"])
    value = (case.query or {}).get("filter")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return found
    if value is not None:
        found.append(value)
    return found


@schemathesis.hook
def filter_case(_: Any, case: Any) -> bool:
    if case.media_type == "application/x-ndjson" and not isinstance(case.body, (str, bytes)):
        return False  # NDJSON is text: a body of "another type" is no request a client can send
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return True
    try:
        for spec in _filters(case):
            check_filter_size(spec, DEFAULT_FILTER_LIMITS)
    except InvalidFilter:
        return False
    return True
