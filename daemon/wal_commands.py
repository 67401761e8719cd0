"""``s5vec wal inspect|salvage``: look at and repair a damaged write-ahead log.

The daemon refuses to start (exit 65) when a WAL frame in the middle of the log is damaged
and valid records follow it: replaying past it would skip an acknowledged write, cutting
there would delete every later one. ``inspect`` lists each segment, each damaged byte
range with the LSNs it makes unreadable, and a torn tail (which the daemon cuts by itself).
``salvage`` (daemon stopped) copies each damaged range into ``<data-dir>/wal-damaged/``,
puts a "lost" marker in place of each unreadable LSN and keeps every record after it, so
the next start replays the rest.

Exit codes: 0 the log is readable (inspect) or was repaired (salvage); 65 inspect found
damage; 1 failed; 75 the data directory is in use; 78 configuration error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Final

from s5vec.engine.walrecords import lost_record
from s5vec.storage import StorageError
from s5vec.storage.datadir import DataDir, DataDirLocked, lock_directory, unlock_directory
from s5vec.storage.wal import WalReport, salvage, scan

from . import offline

EX_DATAERR: Final = 65
EXIT_FAILED: Final = 1
EXIT_LOCKED: Final = 75


def add_commands(sub: Any) -> None:
    """Register ``wal`` and its actions on the top-level subparsers ``sub``."""
    common = offline.common_options()
    wal = sub.add_parser("wal", help="inspect or salvage a damaged write-ahead log")
    actions = wal.add_subparsers(dest="wal_command", required=True)
    actions.add_parser("inspect", parents=[common], help="list segments, damaged ranges and a torn tail (read only)")
    actions.add_parser("salvage", parents=[common],
                       help="daemon stopped: keep damaged bytes in <data-dir>/wal-damaged/, replay every record after them")


def run(args: argparse.Namespace) -> int:
    """Run a ``wal`` action; returns the exit code."""
    config = offline.load(args)
    if isinstance(config, int):
        return config
    data_dir = Path(config.data_dir)
    layout = DataDir(data_dir)
    wal_dir = layout.wal
    if not wal_dir.is_dir():
        print(f"s5vec: {data_dir} has no write-ahead log (no {wal_dir})", file=sys.stderr)
        return EXIT_FAILED
    try:
        if args.wal_command == "inspect":
            report = scan(wal_dir)
            offline.print_result(args, report.as_dict(), _describe(report))
            return EX_DATAERR if report.damages else 0
        fd = lock_directory(data_dir)
        try:
            handled = salvage(wal_dir, lost_record, layout.wal_damaged)
        finally:
            unlock_directory(fd)
    except DataDirLocked as exc:
        print(f"s5vec: {exc}: stop the daemon first", file=sys.stderr)
        return EXIT_LOCKED
    except (StorageError, OSError) as exc:
        print(f"s5vec: {exc}", file=sys.stderr)
        return EXIT_FAILED
    lost = sum(len(d.lost) for d in handled)
    text = "\n".join([f"salvaged: {d.describe()}" for d in handled]
                     + [f"{len(handled)} damaged range(s), {lost} record(s) lost and marked; damaged bytes kept in "
                        f"{layout.wal_damaged}" if handled else "the write-ahead log is not damaged: nothing to do"])
    offline.print_result(args, {"salvaged": [d.as_dict() for d in handled], "lost_records": lost,
                  "aside": str(layout.wal_damaged)}, text)
    return 0


def _describe(report: WalReport) -> str:
    lines = [f"{s.path.name}: {s.size} bytes, {s.records} records"
             + (f", LSN {s.first}..{s.last_lsn}" if s.last_lsn is not None else "") for s in report.segments]
    lines += [f"DAMAGED: {d.describe()}" for d in report.damages]
    if report.torn_tail is not None:
        path, offset, size = report.torn_tail
        lines.append(f"torn tail: {path.name} bytes {offset}..{size} (an unfinished last write: "
                     "the daemon cuts it at start)")
    if report.damages:
        lines.append("the daemon will not start on this log; `s5vec wal salvage` (daemon stopped) keeps the "
                     "damaged bytes aside and replays every record after them")
    elif not lines:
        lines.append("the write-ahead log is empty")
    else:
        lines.append("no damage")
    return "\n".join(lines)
