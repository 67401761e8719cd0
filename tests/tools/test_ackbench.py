"""The acknowledgement benchmark runs end to end on a tiny load and writes its report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_ackbench_reports_latencies_and_a_fresh_node_holding_every_replicated_write(tmp_path: Path) -> None:
    out = tmp_path / "replication.json"
    result = subprocess.run([sys.executable, "-m", "s5vec_tools.ackbench", "--writes", "5", "--clients", "2",
                             "--rate", "40", "--seconds", "0.5", "--latency-ms", "10", "--out", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["ok"] and report["name"] == "replication"
    runs = {run["durability"]: run for run in report["runs"]}
    assert set(runs) == {"local", "replicated"}
    replicated = runs["replicated"]
    assert replicated["fresh_node_records"] == 1 + 2 * 5 + 20
    assert replicated["shipped_lsn_before_close"] == replicated["writer_lsn"]  # nothing acknowledged unshipped
    # a replicated acknowledgement waits for at least the chunk upload and the registry write (10 ms each)
    assert replicated["one_writer"]["ack_p50_ms"] >= 20
    assert replicated["one_writer"]["chunks"] == 5
