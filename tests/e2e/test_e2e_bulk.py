"""End to end: bulk loads into ``s5vec serve`` as a subprocess, killed with SIGKILL right
after acknowledgements; every acknowledged row is back after the restart."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from conftest import Daemon
from s5vec.client import Client
from s5vec.client.bulk import arrow_table

pytestmark = pytest.mark.e2e
DAY = 86_400.0


def test_acknowledged_bulk_loads_survive_sigkill_and_old_rows_reach_segments(daemon: Daemon, minilm: Any) -> None:
    vectors = minilm.base[:3000]
    now = time.time()
    stamps = np.where(np.arange(3000) % 4 == 0, now, now - 30 * DAY)  # three in four already historical
    daemon.start()
    with Client(daemon.url, retries=0) as client:
        client.create_collection("bulk", 384)
        for start in range(0, 3000, 1000):
            ids = [f"b{i}" for i in range(start, start + 1000)]
            result = client.bulk_upsert("bulk", arrow_table(ids, vectors[start:start + 1000],
                                                            [{"n": i} for i in range(start, start + 1000)],
                                                            stamps[start:start + 1000]))
            assert result.records == 1000
    daemon.kill()  # SIGKILL at once after the last acknowledgement
    daemon.start()
    with Client(daemon.url) as client:
        assert client.get_collection("bulk").count == 3000
        got = client.get("bulk", "b2999")
        assert got.metadata == {"n": 2999} and got.timestamp == pytest.approx(stamps[2999])
        client.migrate()
        stats = client.get_collection("bulk").stats
        assert stats["historical"] == 2250 and stats["indexed"] == 750 and stats["recent"] == 750
        for row in (0, 1, 1234, 2999):
            assert client.search("bulk", vectors[row], k=1).hits[0].id == f"b{row}"
