"""The adversarial campaign (tools/hostile.py) on one round of each fault class."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from s5vec_tools import hostile

pytestmark = pytest.mark.e2e


def test_one_mid_wal_round_refuses_start_up_and_salvage_loses_only_the_damaged_batch(tmp_path: Path) -> None:
    result = hostile.wal_round(random.Random(4), tmp_path, tail=False)
    assert result["refused_start"] and result["exit_code"] == hostile.EX_DATAERR
    assert result["bytes_unchanged"] and result["log_names_file"]
    assert result["acknowledged"] == hostile.BATCHES * hostile.PER_BATCH
    assert (result["lost_batches"], result["lost_acknowledged"]) == (1, hostile.PER_BATCH)


def test_malformed_authorization_headers_leak_the_key_nowhere(tmp_path: Path) -> None:
    result = hostile.header_round(tmp_path, repeats=2)
    assert result["requests"] == 2 * len(hostile.HEADERS)
    assert (result["key_in_log"], result["key_in_responses"], result["tracebacks_in_log"]) == (0, 0, 0)
    assert result["non_json_answers"] == 0
    assert all(set(kind["statuses"]) <= {400, 431} for kind in result["by_header"].values())
