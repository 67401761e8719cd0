"""``schemathesis run --checks all`` against a real daemon (API keys on, its collections
prepared) reports no failure: every check, including positive data acceptance (what the
document calls valid is accepted) and negative data rejection, in the examples, coverage,
fuzzing and stateful phases, with a fixed seed.

Configuration, each for a reason the document cannot carry:
- positive data acceptance also expects 422 (a vector of another dimension than the
  collection's, text for a collection without an embedding model: both depend on the
  collection, not on the request) and 414 (a request line over 8,190 bytes: a JSON filter
  in the query string has no length JSON Schema can bound);
- tests/daemon/schemathesis_hooks.py sends NDJSON bodies and leaves out positive cases whose
  filter is over the limits for a whole filter (sums over the tree);
- the SSE feed is an endless stream (tests/daemon/test_sse.py covers it)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon

pytestmark = pytest.mark.e2e
KEY = "schemathesis-admin-key-0123456789"
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
CONFIG = f"""\
hooks = "{HOOKS}"

[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "414", "422"]
"""
CANARY = {"id": "keep", "vector": [0.6, 0.8, 0.0], "metadata": {"kind": "canary"}}


def call(daemon: Daemon, method: str, path: str, body: Any = None) -> Any:
    request = urllib.request.Request(daemon.url + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read())


@pytest.mark.timeout(600)
def test_schemathesis_run_with_every_check_reports_no_failure(tmp_path: Path) -> None:
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    daemon = Daemon(tmp_path / "data", env={"S5VEC_API_KEYS": f"{KEY}:admin"}).start()
    try:
        # a collection the generated calls reach by name ("0" is the first name drawn), and a
        # canary which the seeded run never names: its record must come through unchanged
        for name in ("0", "canary"):
            call(daemon, "POST", "/api/v1/collections", {"name": name, "dimension": 3})
            call(daemon, "POST", f"/api/v1/collections/{name}/vectors", CANARY)
        done = subprocess.run(
            [str(SCHEMATHESIS), "--config-file", "schemathesis.toml", "run", f"{daemon.url}/openapi.json",
             "--checks", "all", "--max-examples", "5", "--seed", "1", "--workers", "1",
             "--header", f"Authorization: Bearer {KEY}", "--exclude-path", "/api/v1/stream/updates",
             "--request-timeout", "60", "--output-truncate", "false", "--no-color"],
            cwd=tmp_path, capture_output=True, text=True, timeout=540)
        output = done.stdout + done.stderr
        assert done.returncode == 0, output[-20_000:]
        assert "No issues found" in output or " passed" in output, output[-20_000:]
        record = call(daemon, "GET", "/api/v1/collections/canary/vectors/keep")
        assert record["metadata"] == CANARY["metadata"]
    finally:
        daemon.stop()
