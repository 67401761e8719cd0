"""``s5vec backup create|list|verify|restore|export|import``: backups of a data directory.

Every command reads the same configuration as ``s5vec serve`` (``--config``, the
environment, ``--data-dir``), so it finds the same storage backend. ``create`` works on a
stopped daemon's directory, or through the running daemon's admin API when the directory
is in use. ``restore`` and ``import`` need the directory to themselves: stop the daemon
first (its lock says so: exit 75). ``list``, ``verify`` and ``export`` only read and may run
beside a daemon. Progress bars go to standard error on a terminal; ``--json`` prints one
JSON document on standard output instead of text.

Exit codes: 0 done; 1 failed (a damaged backup, a failed restore: nothing was replaced);
2 usage; 3 no such backup; 4 refused (restoring over data without ``--force``, a target
that is not empty); 75 the data directory is in use; 78 configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shlex
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

from s5vec.index import InvalidRecord, parse_timestamp
from s5vec.engine import Database, DataDirLocked
from s5vec.ops.backup import (
    BackupCatalog,
    BackupNotFound,
    Progress,
    RestoreRefused,
    create_backup,
    export_backup,
    import_backup,
    lock_directory,
    restore_in_place,
    restore_raw,
    restore_to_directory,
    unlock_directory,
)
from s5vec.storage import BlobStore, LocalBlobStore, StorageError

from .backend import open_store
from . import offline
from .config import Config

EXIT_FAILED: Final = 1
EXIT_NOT_FOUND: Final = 3
EXIT_REFUSED: Final = 4
EXIT_LOCKED: Final = 75  # EX_TEMPFAIL
API_KEY_ENV: Final = "S5VEC_API_KEY"
log = logging.getLogger("s5vec.backup")


class CommandFailed(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def add_commands(sub: Any) -> None:
    """Register ``backup`` and its actions on the top-level subparsers ``sub``."""
    common = offline.common_options()
    backup = sub.add_parser("backup", help="create, list, verify, restore, export and import backups")
    actions = backup.add_subparsers(dest="backup_command", required=True)
    create = actions.add_parser("create", parents=[common], help="checkpoint and keep the state as a backup")
    create.add_argument("--label", default="", help="a note stored with the backup")
    create.add_argument("--url", help="ask this running daemon (default: only when the directory is in use, "
                                      "the configured address)")
    create.add_argument("--api-key", help=f"admin API key for --url (default ${API_KEY_ENV})")
    actions.add_parser("list", parents=[common], help="list retained backups, newest first")
    verify = actions.add_parser("verify", parents=[common], help="re-hash every blob of a backup (exit 1 if damaged)")
    verify.add_argument("backup", help="backup id, unique id prefix, or 'latest'")
    restore = actions.add_parser("restore", parents=[common],
                                 help="make a backup the current state (daemon stopped), or a new directory")
    restore.add_argument("backup", nargs="?", help="backup id, unique id prefix, or 'latest'")
    restore.add_argument("--at", help="the newest backup made at or before this time (ISO 8601 or Unix seconds)")
    restore.add_argument("--target", help="restore into this new (or empty) directory instead of in place")
    restore.add_argument("--force", action="store_true",
                         help="replace the current data (it is kept as a 'pre-restore' backup when readable)")
    export = actions.add_parser("export", parents=[common], help="write a backup to one portable file")
    export.add_argument("backup", help="backup id, unique id prefix, or 'latest'")
    export.add_argument("--output", "-o", required=True, help="file to write (replaced atomically)")
    imp = actions.add_parser("import", parents=[common], help="load an exported backup into this directory")
    imp.add_argument("file", help="a file written by s5vec backup export")


def run(args: argparse.Namespace) -> int:
    """Run a ``backup`` action; returns the exit code."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="s5vec: %(levelname)s %(message)s")
    config = offline.load(args)
    if isinstance(config, int):
        return config
    action: Callable[[argparse.Namespace, Config], Any] = {
        "create": _create, "list": _list, "verify": _verify, "restore": _restore, "export": _export,
        "import": _import}[args.backup_command]
    try:
        result = asyncio.run(action(args, config))
    except CommandFailed as exc:
        print(f"s5vec: {exc}", file=sys.stderr)
        return exc.code
    except BackupNotFound as exc:
        print(f"s5vec: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except RestoreRefused as exc:
        print(f"s5vec: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except DataDirLocked as exc:
        print(f"s5vec: {exc}: stop the daemon first", file=sys.stderr)
        return EXIT_LOCKED
    except (StorageError, OSError) as exc:
        print(f"s5vec: {exc}", file=sys.stderr)
        return EXIT_FAILED
    code, document, text = result
    offline.print_result(args, document, text)
    return int(code)


# ----------------------------------------------------------------- helpers
@asynccontextmanager
async def _store(config: Config) -> AsyncIterator[BlobStore]:
    async with open_store(config) as store:
        yield store if store is not None else LocalBlobStore(config.data_dir)


@asynccontextmanager
async def _progress(args: argparse.Namespace, what: str) -> AsyncIterator[Progress | None]:
    """A tqdm bar on a terminal (standard error), nothing otherwise."""
    if args.json or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024, desc=what, file=sys.stderr, leave=False)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        bar.close()


async def _open(config: Config, store: BlobStore) -> Database:
    return await Database.open(config.data_dir, config.engine, store if not isinstance(store, LocalBlobStore) else None,
                               storage_mode=config.storage.mode)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


Result = tuple[int, Any, str]


# ---------------------------------------------------------------- actions
async def _create(args: argparse.Namespace, config: Config) -> Result:
    if args.url:
        return _create_remote(args, config, args.url)
    async with _store(config) as store:
        try:
            db = await _open(config, store)
        except DataDirLocked:
            host = config.http.host if config.http.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
            return _create_remote(args, config, f"http://{host}:{config.http.port}")
        try:
            backup = await create_backup(db, args.label)
            pruned = await db.backups.prune(config.backup)
            size = await db.backups.size_of(backup)
        finally:
            await db.close(checkpoint=False)
    document = {"backup": backup.as_dict(), "bytes": size, "pruned": [str(b.id) for b in pruned]}
    return 0, document, f"created backup {backup.id} (LSN {backup.lsn}, {_size(size)}); {len(pruned)} pruned"


def _create_remote(args: argparse.Namespace, config: Config, url: str) -> Result:
    key = args.api_key or os.environ.get(API_KEY_ENV)
    request = urllib.request.Request(url.rstrip("/") + "/api/v1/admin/backup",
                                     data=json.dumps({"label": args.label}).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {key}"} if key else {})})
    try:
        with urllib.request.urlopen(request, timeout=3600) as response:
            document = json.load(response)
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        raise CommandFailed(EXIT_FAILED, f"the daemon at {url} answered {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise CommandFailed(EXIT_LOCKED, f"data directory {config.data_dir} is in use and the daemon at {url} "
                                         f"cannot be reached ({exc}); pass --url") from None
    backup = document["backup"]
    return 0, document, f"created backup {backup['id']} (LSN {backup['lsn']}, {_size(document['bytes'])}) via {url}"


def _existing(config: Config) -> None:
    """Reading commands look at a data directory, never create one: a mistyped or default
    ``--data-dir`` is named instead of turning into an empty ``./data/blobs``."""
    if not Path(config.data_dir).is_dir():
        raise CommandFailed(EXIT_NOT_FOUND, f"no data directory at {config.data_dir}: give the daemon's "
                                            f"--data-dir (or --config)")


async def _list(args: argparse.Namespace, config: Config) -> Result:
    _existing(config)
    async with _store(config) as store:
        catalog = BackupCatalog(config.data_dir, store)
        backups = await catalog.backups()
        rows = [{**b.as_dict(), "bytes": await catalog.size_of(b)} for b in backups]
    lines = [f"{r['id']}  {r['created_at']}  LSN {r['lsn']:<8} {_size(r['bytes']):>10}  {r['label']}" for r in rows]
    return 0, {"backups": rows}, "\n".join(lines) if lines else "no backups"


async def _verify(args: argparse.Namespace, config: Config) -> Result:
    _existing(config)
    async with _store(config) as store:
        catalog = BackupCatalog(config.data_dir, store)
        backup = await catalog.find(args.backup)
        async with _progress(args, "verify") as progress:
            report = await catalog.verify(backup, progress)
    if report["ok"]:
        return 0, report, f"backup {backup.id}: {report['blobs']} blobs, {_size(report['bytes'])}, all intact"
    text = (f"backup {backup.id} is damaged: {len(report['missing'])} missing, {len(report['corrupt'])} corrupt\n"
            + "\n".join([f"  missing {b}" for b in report["missing"]] + [f"  corrupt {b}" for b in report["corrupt"]]))
    return EXIT_FAILED, report, text


async def _restore(args: argparse.Namespace, config: Config) -> Result:
    if (args.backup is None) == (args.at is None):
        raise CommandFailed(2, "name a backup (id, prefix or 'latest') or --at TIME, not both")
    async with _store(config) as store:
        if args.target:
            catalog = BackupCatalog(config.data_dir, store)
            backup = await _choose(catalog, args)
            async with _progress(args, "restore") as progress:
                report = await restore_to_directory(store, catalog, backup, Path(args.target), progress)
            return 0, report, f"restored backup {backup.id} (LSN {backup.lsn}) into {report['directory']}"
        try:
            db = await _open(config, store)
        except DataDirLocked:
            raise
        except StorageError as exc:
            return await _restore_unreadable(args, config, store, exc)
        try:
            backup = await _choose(db.backups, args)
            report = await restore_in_place(db, backup, args.force)
        finally:
            await db.close(checkpoint=False)  # a restore checkpointed what it keeps; the rest is the WAL's
    safety = report["safety_backup"]
    text = f"restored backup {backup.id} (LSN {backup.lsn}) into {config.data_dir}"
    if safety:
        text += f"; the previous state is backup {safety['id']} ({safety['label']})"
    return 0, report, text


async def _restore_unreadable(args: argparse.Namespace, config: Config, store: BlobStore, exc: Exception) -> Result:
    if not args.force:
        raise CommandFailed(EXIT_FAILED, f"the current state cannot be opened ({exc}); pass --force to replace it "
                                         "(it cannot be kept as a backup), or restore with --target")
    fd = lock_directory(config.data_dir)
    try:
        catalog = BackupCatalog(config.data_dir, store)
        backup = await _choose(catalog, args)
        report = await restore_raw(config.data_dir, store, catalog, backup)
    finally:
        unlock_directory(fd)
    return 0, report, f"restored backup {backup.id} (LSN {backup.lsn}) over an unreadable state in {config.data_dir}"


async def _choose(catalog: BackupCatalog, args: argparse.Namespace) -> Any:
    if args.at is None:
        return await catalog.find(args.backup)
    try:
        when = parse_timestamp(float(args.at) if _is_number(args.at) else args.at, 0.0)
    except InvalidRecord:
        raise CommandFailed(2, f"--at: {args.at!r} is neither ISO 8601 nor Unix seconds") from None
    return await catalog.at(when)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


async def _export(args: argparse.Namespace, config: Config) -> Result:
    _existing(config)
    async with _store(config) as store:
        catalog = BackupCatalog(config.data_dir, store)
        backup = await catalog.find(args.backup)
        async with _progress(args, "export") as progress:
            report = await export_backup(store, catalog, backup, Path(args.output), progress)
    return 0, report, f"exported backup {backup.id} to {report['file']} ({_size(report['file_bytes'])})"


async def _import(args: argparse.Namespace, config: Config) -> Result:
    fd = lock_directory(config.data_dir)
    try:
        async with _store(config) as store:
            catalog = BackupCatalog(config.data_dir, store)
            async with _progress(args, "import") as progress:
                backup = await import_backup(Path(args.file), store, catalog, progress)
    finally:
        unlock_directory(fd)
    where = (f" --config {shlex.quote(args.config)}" if args.config else "") + \
        f" --data-dir {shlex.quote(str(config.data_dir))}"
    return 0, {"backup": backup.as_dict()}, (f"imported backup {backup.id} (LSN {backup.lsn}); "
                                             f"make it current with: s5vec backup restore {backup.id}{where}")
