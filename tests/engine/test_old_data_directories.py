"""A data directory written by an earlier release opens and answers exactly as it did.

``tests/fixtures/datadir-v1`` was written by the previous release itself (b7d1fa1, run from
its own checkout; see ``tests/fixtures/make_datadir.py``): a checkpoint with a sealed
segment, then WAL records only (creates, upserts, metadata edits, deletes, a dropped
collection). Formats may change; this directory may not."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from s5vec.engine import Database

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def load_maker():
    import importlib.util
    spec = importlib.util.spec_from_file_location("make_datadir", FIXTURES / "make_datadir.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


async def test_a_data_directory_of_the_2026_12_07_release_opens_and_answers_identically(tmp_path: Path) -> None:
    maker = load_maker()
    expected = json.loads((FIXTURES / "datadir-v1.json").read_text())
    data = tmp_path / "data"
    shutil.copytree(FIXTURES / "datadir-v1", data)
    db = await Database.open(data, maker.ENGINE)
    try:
        got = await maker.answers(db, np.asarray(expected["queries"], np.float32))
    finally:
        await db.close(checkpoint=False)
    assert set(got) == set(expected["answers"]) == {"videos", "audio"}
    for name, want in expected["answers"].items():
        assert got[name]["count"] == want["count"]
        assert got[name]["records"] == want["records"], name
        assert got[name]["searches"] == want["searches"], name
        assert got[name]["filtered"] == want["filtered"], name
        # settings added since take their defaults; the old ones are unchanged
        added = {key: value for key, value in got[name]["config"].items() if key not in want["config"]}
        assert added == {"target_recall": 0.95}, name
        assert {key: value for key, value in got[name]["config"].items() if key in want["config"]} == want["config"]
