"""The follower benchmark runs end to end on a tiny load and writes its report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_followbench_measures_lag_and_a_new_follower_that_holds_every_record(tmp_path: Path) -> None:
    out = tmp_path / "followers.json"
    result = subprocess.run([sys.executable, "-m", "s5vec_tools.followbench", "--rate", "100", "--seconds", "1",
                             "--ship-interval-ms", "100", "--vectors", "2000", "--out", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(out.read_text())["summary"]
    assert summary["lag"]["follower_has_every_record"] and summary["lag"]["samples"] > 5
    assert 0 < summary["lag"]["lag_p50_s"] <= summary["lag"]["lag_p99_s"] <= summary["lag"]["lag_max_s"]
    ready = summary["ready"]
    assert ready["follower_records"] == ready["vectors"] == 2000 and ready["search_finds_a_shipped_record"]
