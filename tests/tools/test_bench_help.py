"""`s5vec bench --hybrid --help` states its defaults as values."""

from __future__ import annotations

import subprocess
import sys


def test_hybrid_help_prints_the_segment_records_default_as_a_number() -> None:
    out = subprocess.run([sys.executable, "-m", "s5vec.daemon.cli", "bench", "--hybrid", "--help"], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    flat = " ".join(out.split())
    assert "the collection default, 1000000;" in flat and "<member" not in flat
