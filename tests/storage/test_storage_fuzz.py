"""Arbitrary and damaged bytes into every storage decoder: only the documented error comes
out (WalCorrupt, BlobCorrupt, ValueError, InvalidSeedPhrase), never an IndexError, a
struct.error or a hang; and a damaged WAL directory recovers to a log that keeps working.

The properties live in :mod:`s5vec_tools.fuzz` so ``make fuzz`` runs them for longer."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given

from s5vec_tools.fuzz import TARGETS, Target, fuzz_settings
from s5vec.storage.wal import WriteAheadLog

STORAGE = {t.name: t for t in TARGETS if t.name.startswith("storage.")}
EXAMPLES = {"storage.wal.recover": 40}


@pytest.mark.parametrize("name", sorted(STORAGE))
def test_storage_decoder_raises_only_its_documented_error_on_damaged_input(name: str) -> None:
    target: Target = STORAGE[name]

    @fuzz_settings(EXAMPLES.get(name, 150))
    @given(value=target.inputs)
    def run(value: object) -> None:
        target.check(value)
    run()


def recovered(directory: Path, after: int) -> list[tuple[int, bytes]]:
    wal = WriteAheadLog(directory)
    try:
        return list(wal.recover(after))
    finally:
        wal.close()


def test_wal_record_appended_after_a_checkpoint_past_the_log_end_survives_the_next_recovery(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    list(wal.recover(0))
    wal.append([b"one", b"two", b"three"])
    wal.close()
    wal = WriteAheadLog(tmp_path)
    assert list(wal.recover(10)) == []
    assert wal.append([b"eleven"]) == 11
    wal.close()
    assert recovered(tmp_path, 10) == [(11, b"eleven")]


@pytest.mark.parametrize("stray", ["-3.wal", " 0.wal", "0_1.wal", "junk.wal"])
def test_wal_recovery_ignores_stray_files_whose_names_are_not_segment_numbers(tmp_path: Path, stray: str) -> None:
    wal = WriteAheadLog(tmp_path)
    list(wal.recover(0))
    wal.append([b"a", b"b"])
    wal.close()
    (tmp_path / stray).write_bytes(b"\xff garbage")
    assert recovered(tmp_path, 0) == [(1, b"a"), (2, b"b")]
    assert (tmp_path / stray).exists()
