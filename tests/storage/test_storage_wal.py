"""WriteAheadLog: framing, group commit, segment rollover, recovery up to the first bad record."""

from __future__ import annotations

import random
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import crc32c
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s5vec.storage import StorageError, WalCorrupt, WalDamaged, WriteAheadLog
from s5vec.storage.wal import HEADER, find_frame, frame, parse_frames, salvage, scan

BIG_SEGMENT = 64 << 20
FRAME_OVERHEAD = 16


@contextmanager
def opened(directory: Path, after_lsn: int = 0, segment_bytes: int = BIG_SEGMENT) -> Iterator[tuple[WriteAheadLog, list[tuple[int, bytes]]]]:
    """A recovered WAL (ready to append) and the records its recovery yielded."""
    wal = WriteAheadLog(directory, segment_bytes)
    try:
        records = list(wal.recover(after_lsn))
        yield wal, records
    finally:
        wal.close()


def write_log(directory: Path, groups: list[list[bytes]], segment_bytes: int = BIG_SEGMENT) -> None:
    with opened(directory, segment_bytes=segment_bytes) as (wal, records):
        assert records == []
        for group in groups:
            wal.append(group)


def recovered(directory: Path, after_lsn: int = 0, segment_bytes: int = BIG_SEGMENT) -> list[tuple[int, bytes]]:
    with opened(directory, after_lsn, segment_bytes) as (_, records):
        return records


def segments(directory: Path) -> list[tuple[int, Path]]:
    return sorted((int(p.stem), p) for p in directory.glob("*.wal"))


def numbered(payloads: list[bytes], first: int = 1) -> list[tuple[int, bytes]]:
    return [(first + i, p) for i, p in enumerate(payloads)]


PAYLOADS = [b"alpha", b"", b"gamma" * 10, bytes(range(256)), b"epsilon"]


def test_wal_frame_layout_is_length_crc_lsn_payload():
    payload = b"hello wal"
    raw = frame(7, payload)
    length, crc, lsn = struct.unpack_from("<IIQ", raw)
    assert (length, lsn) == (len(payload), 7)
    assert crc == crc32c.crc32c(struct.pack("<IQ", len(payload), 7) + payload)
    assert raw[HEADER.size:] == payload
    assert HEADER.size == FRAME_OVERHEAD


def test_wal_append_then_recover_returns_every_payload_with_lsns_from_one(tmp_path):
    with opened(tmp_path) as (wal, _):
        for i, payload in enumerate(PAYLOADS, start=1):
            assert wal.append([payload]) == i
        assert wal.next_lsn == len(PAYLOADS) + 1
    assert recovered(tmp_path) == numbered(PAYLOADS)


def test_wal_group_append_returns_the_last_lsn_of_the_group(tmp_path):
    with opened(tmp_path) as (wal, _):
        assert wal.append(PAYLOADS[:3]) == 3
        assert wal.append(PAYLOADS[3:]) == len(PAYLOADS)
        assert wal.append([b"one more"]) == len(PAYLOADS) + 1
    assert recovered(tmp_path) == numbered(PAYLOADS + [b"one more"])


def test_wal_recovery_after_reopening_continues_lsn_numbering(tmp_path):
    write_log(tmp_path, [PAYLOADS[:2], PAYLOADS[2:]])
    with opened(tmp_path) as (wal, records):
        assert records == numbered(PAYLOADS)
        assert wal.next_lsn == len(PAYLOADS) + 1
        assert wal.append([b"after restart"]) == len(PAYLOADS) + 1
    assert recovered(tmp_path) == numbered(PAYLOADS + [b"after restart"])


def test_wal_append_before_recover_raises_storage_error(tmp_path):
    wal = WriteAheadLog(tmp_path)
    try:
        with pytest.raises(StorageError):
            wal.append([b"too early"])
    finally:
        wal.close()
    assert recovered(tmp_path) == []


def test_wal_append_before_the_recover_iterator_is_exhausted_raises_storage_error(tmp_path):
    write_log(tmp_path, [PAYLOADS])
    wal = WriteAheadLog(tmp_path)
    try:
        records = wal.recover(0)
        next(records)
        with pytest.raises(StorageError):
            wal.append([b"too early"])
        records.close()
    finally:
        wal.close()


@pytest.mark.parametrize("cut", [1, 3, FRAME_OVERHEAD, FRAME_OVERHEAD + len(PAYLOADS[-1]) - 1])
def test_wal_recovery_stops_at_a_torn_last_frame_and_truncates_it(tmp_path, cut):
    write_log(tmp_path, [[p] for p in PAYLOADS])
    ((_, path),) = segments(tmp_path)
    full = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(full - cut)
    with opened(tmp_path) as (wal, records):
        assert records == numbered(PAYLOADS[:-1])
        assert path.stat().st_size == full - FRAME_OVERHEAD - len(PAYLOADS[-1])
        assert wal.append([b"new"]) == len(PAYLOADS)
    assert recovered(tmp_path) == numbered(PAYLOADS[:-1] + [b"new"])


@pytest.mark.parametrize(
    "garbage",
    [b"\x00", b"\xff" * 7, b"\x00" * FRAME_OVERHEAD, random.Random(7).randbytes(40), struct.pack("<IIQ", 3, 0, 6) + b"abc",
     frame(5, b"replayed lsn")],
    ids=["one-zero", "short-ff", "zero-header", "random", "bad-crc-frame", "lsn-repeat"],
)
def test_wal_recovery_ignores_garbage_after_the_last_frame_and_truncates_it(tmp_path, garbage):
    write_log(tmp_path, [PAYLOADS])
    ((_, path),) = segments(tmp_path)
    full = path.stat().st_size
    with open(path, "ab") as fh:
        fh.write(garbage)
    with opened(tmp_path) as (wal, records):
        assert records == numbered(PAYLOADS)
        assert path.stat().st_size == full
        assert wal.append([b"new"]) == len(PAYLOADS) + 1
    assert recovered(tmp_path) == numbered(PAYLOADS + [b"new"])


def test_wal_recovery_refuses_an_intact_frame_after_a_gap_in_lsns_and_changes_nothing(tmp_path):
    write_log(tmp_path, [PAYLOADS])
    ((_, path),) = segments(tmp_path)
    with open(path, "ab") as fh:
        fh.write(frame(99, b"intact frame with an out-of-sequence lsn"))
    before = path.read_bytes()
    with pytest.raises(WalDamaged, match=r"LSNs 6\.\.98 missing") as caught:
        recovered(tmp_path)
    assert caught.value.damage.resume_lsn == 99
    assert path.read_bytes() == before


def flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("field", ["length", "crc", "lsn", "payload"])
def test_wal_recovery_refuses_a_flipped_byte_with_records_after_it_and_keeps_every_byte(tmp_path, field):
    write_log(tmp_path, [[p] for p in PAYLOADS])
    ((_, path),) = segments(tmp_path)
    middle = 2
    start = sum(FRAME_OVERHEAD + len(p) for p in PAYLOADS[:middle])
    flip(path, start + {"length": 0, "crc": 4, "lsn": 8, "payload": FRAME_OVERHEAD + 3}[field])
    damaged = path.read_bytes()
    with pytest.raises(WalDamaged) as caught:
        recovered(tmp_path)
    damage = caught.value.damage
    assert (damage.segment, damage.start) == (path, start)
    assert list(damage.lost) == [middle + 1]
    assert damage.resume_lsn == middle + 2
    assert str(path) in str(caught.value) and f"bytes {start}.." in str(caught.value)
    assert path.read_bytes() == damaged  # nothing cut, nothing deleted
    assert "wal salvage" in str(caught.value)


def test_wal_recovery_still_cuts_a_flipped_byte_in_the_last_frame(tmp_path):
    write_log(tmp_path, [[p] for p in PAYLOADS])
    ((_, path),) = segments(tmp_path)
    start = sum(FRAME_OVERHEAD + len(p) for p in PAYLOADS[:-1])
    flip(path, start + FRAME_OVERHEAD + 2)
    assert recovered(tmp_path) == numbered(PAYLOADS[:-1])
    assert path.stat().st_size == start


def test_wal_recovery_refuses_damage_at_a_segment_end_when_a_later_segment_holds_records(tmp_path):
    with opened(tmp_path) as (wal, _):
        wal.append([b"1", b"2", b"3"])
        wal.rotate()
        wal.append([b"4", b"5"])
    (_, first), (_, second) = segments(tmp_path)
    flip(first, first.stat().st_size - 1)  # the payload of LSN 3, the first segment's last record
    with pytest.raises(WalDamaged) as caught:
        recovered(tmp_path)
    assert list(caught.value.damage.lost) == [3]
    assert caught.value.damage.resume_segment == second
    assert [p for _, p in segments(tmp_path)] == [first, second]


def test_wal_recovery_refuses_a_missing_segment_in_the_middle(tmp_path):
    with opened(tmp_path) as (wal, _):
        for group in ([b"1", b"2"], [b"3", b"4"], [b"5"]):
            wal.append(group)
            wal.rotate()
    (_, _), (_, middle), (_, last) = segments(tmp_path)[:3]
    middle.unlink()
    with pytest.raises(WalDamaged, match=r"LSNs 3\.\.4 missing") as caught:
        recovered(tmp_path)
    assert caught.value.damage.resume_segment == last
    assert last.exists()


def test_scan_reports_each_damage_and_the_torn_tail_without_changing_the_log(tmp_path):
    write_log(tmp_path, [[p] for p in PAYLOADS * 3])
    ((_, path),) = segments(tmp_path)
    sizes = [FRAME_OVERHEAD + len(p) for p in PAYLOADS * 3]
    flip(path, sum(sizes[:2]) + 4)
    flip(path, sum(sizes[:9]) + 4)
    with open(path, "ab") as fh:
        fh.write(b"\x07" * 9)
    before = path.read_bytes()
    report = scan(tmp_path)
    assert [list(d.lost) for d in report.damages] == [[3], [10]]
    assert report.torn_tail == (path, len(before) - 9, len(before))
    assert report.segments[0].records == len(sizes) - 2
    assert path.read_bytes() == before


def test_salvage_keeps_the_damaged_bytes_aside_and_replays_every_record_after_them(tmp_path):
    wal_dir, aside = tmp_path / "wal", tmp_path / "aside"
    payloads = [bytes([i]) * (10 + i) for i in range(12)]
    with opened(wal_dir) as (wal, _):
        for payload in payloads[:6]:
            wal.append([payload])
        wal.rotate()
        wal.append(payloads[6:])
    first_segment = segments(wal_dir)[0][1]
    flip(first_segment, FRAME_OVERHEAD + 10 + FRAME_OVERHEAD + 5)  # inside LSN 2's payload
    group_segment = dict(segments(wal_dir))[7]  # the six-record group starts a segment
    flip(group_segment, 4)  # the CRC of its first frame
    with pytest.raises(WalDamaged):
        recovered(wal_dir, )
    handled = salvage(wal_dir, lambda lsn, damage, saved: b"LOST:%d" % lsn, aside)
    assert len(handled) == 2
    lost = {lsn for damage in handled for lsn in damage.lost}
    assert lost == {2, 7}
    kept = sorted(p for p in aside.iterdir() if p.suffix == ".bin")
    assert [len(p.read_bytes()) for p in kept] == [FRAME_OVERHEAD + 11, FRAME_OVERHEAD + 16]
    expected = [(i + 1, b"LOST:%d" % (i + 1) if i + 1 in lost else p) for i, p in enumerate(payloads)]
    assert recovered(wal_dir, ) == expected
    assert scan(wal_dir).damages == []
    with opened(wal_dir, ) as (wal, _):
        assert wal.append([b"after salvage"]) == len(payloads) + 1


def test_wal_recover_after_lsn_yields_only_later_records(tmp_path):
    write_log(tmp_path, [PAYLOADS])
    for k in range(len(PAYLOADS) + 1):
        assert recovered(tmp_path, after_lsn=k) == numbered(PAYLOADS, 1)[k:]


def test_wal_recover_after_lsn_past_the_end_continues_numbering_after_it(tmp_path):
    with opened(tmp_path, after_lsn=41) as (wal, records):
        assert records == []
        assert wal.append([b"first after checkpoint"]) == 42
    assert recovered(tmp_path, after_lsn=41) == [(42, b"first after checkpoint")]


def test_wal_recover_raises_wal_corrupt_when_records_after_the_checkpoint_are_missing(tmp_path):
    with opened(tmp_path, after_lsn=5) as (wal, _):
        wal.append([b"six", b"seven"])
    with pytest.raises(WalCorrupt):
        recovered(tmp_path, after_lsn=3)
    assert recovered(tmp_path, after_lsn=5) == [(6, b"six"), (7, b"seven")]


def test_wal_rotate_and_truncate_through_delete_only_fully_covered_segments(tmp_path):
    with opened(tmp_path) as (wal, _):
        wal.append([b"1", b"2", b"3"])
        wal.rotate()
        wal.append([b"4", b"5", b"6"])
        wal.rotate()
        wal.append([b"7", b"8", b"9"])
        assert [first for first, _ in segments(tmp_path)] == [1, 4, 7]
        wal.truncate_through(2)
        assert [first for first, _ in segments(tmp_path)] == [1, 4, 7]
        wal.truncate_through(5)
        assert [first for first, _ in segments(tmp_path)] == [4, 7]
        wal.truncate_through(9)
        assert [first for first, _ in segments(tmp_path)] == [7]
        assert wal.append([b"10"]) == 10
    assert recovered(tmp_path, after_lsn=6) == numbered([b"7", b"8", b"9", b"10"], 7)


def test_wal_truncate_through_after_rotate_leaves_only_the_new_empty_segment(tmp_path):
    with opened(tmp_path) as (wal, _):
        wal.append([b"1", b"2", b"3"])
        wal.rotate()
        wal.append([b"4", b"5", b"6"])
        wal.rotate()
        wal.truncate_through(6)
        assert [first for first, _ in segments(tmp_path)] == [7]
    with opened(tmp_path, after_lsn=6) as (wal, records):
        assert records == []
        assert wal.append([b"7"]) == 7


def test_wal_rotate_without_appends_in_between_creates_no_extra_segment(tmp_path):
    with opened(tmp_path) as (wal, _):
        wal.append([b"1"])
        wal.rotate()
        wal.rotate()
        assert [first for first, _ in segments(tmp_path)] == [1, 2]


def test_wal_segment_rollover_with_small_segments_recovers_everything_in_order(tmp_path):
    groups = [[bytes([i]) * (i % 23) for i in range(n, n + 1 + n % 3)] for n in range(0, 120, 3)]
    flat = [p for g in groups for p in g]
    write_log(tmp_path, groups, segment_bytes=200)
    found = segments(tmp_path)
    assert len(found) > 5
    assert found[0][0] == 1
    assert recovered(tmp_path, segment_bytes=200) == numbered(flat)
    with opened(tmp_path, segment_bytes=200) as (wal, _):
        assert wal.append([b"tail"]) == len(flat) + 1
    assert recovered(tmp_path, segment_bytes=200) == numbered(flat + [b"tail"])
    with opened(tmp_path, after_lsn=found[1][0] - 1, segment_bytes=200) as (_, records):
        assert records == numbered(flat + [b"tail"])[found[1][0] - 1:]


def test_wal_corruption_in_a_middle_segment_keeps_later_segments_and_salvage_replays_them(tmp_path):
    wal_dir = tmp_path / "wal"
    with opened(wal_dir) as (wal, _):
        wal.append([b"1", b"2"])
        wal.rotate()
        wal.append([b"3", b"4"])
        wal.rotate()
        wal.append([b"5", b"6"])
    (_, middle) = segments(wal_dir)[1]
    flip(middle, middle.stat().st_size - 1)  # payload of LSN 4
    with pytest.raises(WalDamaged):
        recovered(wal_dir)
    assert [first for first, _ in segments(wal_dir)] == [1, 3, 5]
    salvage(wal_dir, lambda lsn, damage, saved: b"lost", tmp_path / "aside")
    with opened(wal_dir) as (wal, records):
        assert records == numbered([b"1", b"2", b"3", b"lost", b"5", b"6"])
        assert wal.append([b"7"]) == 7


@pytest.mark.parametrize("after_lsn", [3, 4, 5, 7])
def test_wal_recover_after_a_checkpoint_past_the_first_segment_keeps_later_records(tmp_path, after_lsn):
    # A crash between swinging the root and truncate_through() leaves checkpointed segments behind.
    payloads = [str(i).encode() for i in range(1, 9)]
    with opened(tmp_path) as (wal, _):
        wal.append(payloads[0:2])
        wal.rotate()
        wal.append(payloads[2:4])
        wal.rotate()
        wal.append(payloads[4:8])
    assert [first for first, _ in segments(tmp_path)] == [1, 3, 5]
    assert recovered(tmp_path, after_lsn=after_lsn) == numbered(payloads)[after_lsn:]
    assert recovered(tmp_path) == numbered(payloads)


def test_wal_parse_frames_stops_at_the_first_lsn_out_of_sequence():
    data = frame(1, b"a") + frame(2, b"b") + frame(4, b"d") + frame(5, b"e")
    records, offset = parse_frames(data, 1)
    assert records == [(1, b"a"), (2, b"b")]
    assert offset == len(frame(1, b"a") + frame(2, b"b"))
    assert parse_frames(data, 2) == ([], 0)
    assert parse_frames(frame(7, b"x") + frame(8, b"y"))[0] == [(7, b"x"), (8, b"y")]


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=512), first=st.none() | st.integers(min_value=0, max_value=2**64 - 1))
def test_wal_parse_frames_on_arbitrary_bytes_never_raises(data, first):
    records, offset = parse_frames(data, first)
    assert 0 <= offset <= len(data)
    assert offset == sum(FRAME_OVERHEAD + len(p) for _, p in records)
    lsns = [lsn for lsn, _ in records]
    assert all(b == a + 1 for a, b in zip(lsns, lsns[1:]))
    if first is not None and lsns:
        assert lsns[0] == first


@settings(max_examples=200, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=64), max_size=10),
    first=st.integers(min_value=0, max_value=2**40),
    garbage=st.binary(max_size=64),
)
def test_wal_parse_frames_returns_every_valid_frame_before_garbage(payloads, first, garbage):
    valid = b"".join(frame(first + i, p) for i, p in enumerate(payloads))
    records, offset = parse_frames(valid + garbage, first)
    assert records[:len(payloads)] == numbered(payloads, first)
    assert offset >= len(valid)


@settings(max_examples=60, deadline=None)
@given(
    groups=st.lists(st.lists(st.binary(max_size=48), min_size=1, max_size=4), min_size=1, max_size=10),
    segment_bytes=st.sampled_from([48, 120, 300, BIG_SEGMENT]),
    data=st.data(),
)
def test_wal_recovery_after_a_cut_returns_exactly_the_complete_prefix(groups, segment_bytes, data):
    flat = [p for g in groups for p in g]
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        write_log(directory, groups, segment_bytes)
        files = segments(directory)
        sizes = [path.stat().st_size for _, path in files]
        total = sum(sizes)
        cut = data.draw(st.integers(min_value=0, max_value=total), label="cut")

        start = 0
        for (_, path), size in zip(files, sizes):
            if start <= cut < start + size:
                break
            start += size
        else:
            path, start = files[-1][1], total - sizes[-1]
        with open(path, "r+b") as fh:
            fh.truncate(cut - start)
        for _, later in files:  # a crash tears only the tail: segments after the cut were never written
            if later.name > path.name:
                later.unlink()

        ends, end = [], 0
        for payload in flat:
            end += FRAME_OVERHEAD + len(payload)
            ends.append(end)
        keep = sum(1 for e in ends if e <= cut)

        with opened(directory, segment_bytes=segment_bytes) as (wal, records):
            assert records == numbered(flat[:keep])
            assert wal.size_bytes == (ends[keep - 1] if keep else 0)
            assert wal.append([b"after crash"]) == keep + 1
        assert recovered(directory, segment_bytes=segment_bytes) == numbered(flat[:keep] + [b"after crash"])


@pytest.mark.parametrize("after_lsn", [-1, 0, (1 << 64) - 2, (1 << 64) + 5])
def test_find_frame_takes_any_python_lsn_bound_without_overflow(after_lsn):
    data = b"\x00" * 7 + frame(1, b"one") + frame((1 << 64) - 1, b"last")
    found = find_frame(data, 0, after_lsn)
    if after_lsn < 1:
        assert found == (7, 1)
    elif after_lsn < (1 << 64) - 1:
        assert found is not None and found[1] == (1 << 64) - 1
    else:
        assert found is None


def test_recovery_of_a_segment_named_zero_with_garbage_does_not_overflow(tmp_path):
    (tmp_path / f"{0:020d}.wal").write_bytes(b"\xff" * 40)
    assert recovered(tmp_path) == []
