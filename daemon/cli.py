"""The ``s5vec`` command line: ``serve``, ``bench``, ``keys``, ``backup``, ``mcp``, ``version``,
and the client commands of :mod:`s5vec.client.cli` (``collections``, ``import``, ``search`` ...)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from s5vec.client import cli as client_cli

log = logging.getLogger("s5vec")
EX_DATAERR = 65  # the write-ahead log is damaged: restarting cannot help (s5vec wal inspect|salvage)


def _promote(args: argparse.Namespace) -> int:
    """POST /api/v1/admin/promote to a follower; prints its answer. 0 when it is promoting."""
    import json
    import urllib.error
    import urllib.request

    url = args.url.rstrip("/") + "/api/v1/admin/promote" + ("?force=true" if args.force else "")
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    request = urllib.request.Request(url, method="POST", data=b"", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            print(json.dumps(json.load(resp)))
            return 0
    except urllib.error.HTTPError as err:
        body = err.read().decode("utf-8", "replace")
        print(f"s5vec promote: HTTP {err.code}: {body}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"s5vec promote: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1


def _serve(args: argparse.Namespace) -> int:
    lease_id = os.environ.get("S5VEC_REPLICATION__LEASE_ID")
    if lease_id:  # run again as the writer after a promotion: keep its lease before the slow imports
        from . import lease_bridge
        endpoints = [e for e in os.environ.get("S5VEC_REPLICATION__ETCD_ENDPOINTS", "").split(",") if e]
        lease_bridge.start(endpoints, lease_id, float(os.environ.get("S5VEC_REPLICATION__LEASE_TTL_S", "5")))
    from . import logs
    from .config import EX_CONFIG, Config, ConfigError, load_config

    overrides: dict[str, Any] = {}
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir
    if args.host is not None:
        overrides.setdefault("http", {})["host"] = args.host
    if args.port is not None:
        overrides.setdefault("http", {})["port"] = args.port
    if args.log_level is not None:
        overrides["log_level"] = args.log_level
    if args.follow:
        overrides.setdefault("replication", {})["role"] = "follower"
    try:
        config = load_config(Path(args.config) if args.config else None, os.environ, overrides)
    except ConfigError as exc:
        print(f"s5vec: configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG
    sys.setswitchinterval(float(os.environ.get("S5VEC_SWITCH", "0.005")))
    _raise_open_files()
    logs.configure(config.log_level, config.log_format)
    log.info("%s", config.summary())

    from s5vec.storage import StorageError, WalCorrupt

    from .service import ListenError, run

    def reload() -> Config:
        return load_config(Path(args.config) if args.config else None, os.environ, overrides)

    try:
        run(config, reload)
    except WalCorrupt as exc:
        log.critical("cannot start: %s", exc)
        return EX_DATAERR
    except StorageError as exc:
        log.error("cannot open the data directory: %s", exc)
        return 1
    except ListenError as exc:
        log.error("%s", exc)
        return 1
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return 1
    return 0


def _raise_open_files() -> None:
    """Every WebSocket / SSE client holds a socket: lift the soft descriptor limit to the hard one."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 1 << 20, hard))
    except (ImportError, OSError, ValueError):  # pragma: no cover - platform without rlimits
        pass


def _bench(argv: list[str]) -> int:
    """Run the benchmarks of the s5vec-tools distribution (tools/), which the s5vec wheel
    does not ship; exit 2 with how to install them when they are missing."""
    try:
        from s5vec_tools.run import main as bench_main
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] != "s5vec_tools":
            raise  # the tools are there but one of their own dependencies is not
        print("s5vec bench: the benchmark tools (the s5vec-tools distribution in the repository's tools/ "
              "folder) are not installed; install them with `make install`, or `pip install -e ./tools` "
              "in a checkout", file=sys.stderr)
        return 2
    return int(bench_main(argv))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        return _bench(argv[1:])
    if client_cli.is_client_command(argv):  # fast path: the client commands never load the engine
        return client_cli.main(argv)
    from . import backup_commands, keys, mcp_stdio, wal_commands

    parser = argparse.ArgumentParser(
        prog="s5vec", description="Vector database daemon on S5-style storage",
        epilog=client_cli.GLOBAL_OPTIONS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"s5vec {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the daemon")
    serve.add_argument("--config", help="TOML config file")
    serve.add_argument("--data-dir", help="data directory (default ./data)")
    serve.add_argument("--host", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default 7533)")
    serve.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    serve.add_argument("--follow", action="store_true",
                       help="run as a read-only follower of the writer whose storage and seed phrase are configured "
                            "(replication.role = follower)")
    promote = sub.add_parser("promote", help="make a running follower the writer (POST /api/v1/admin/promote)")
    promote.add_argument("--url", default=os.environ.get("S5VEC_URL", "http://127.0.0.1:7533"),
                         help="the follower's URL (default $S5VEC_URL or http://127.0.0.1:7533)")
    promote.add_argument("--api-key", default=os.environ.get("S5VEC_API_KEY"), help="an admin key ($S5VEC_API_KEY)")
    promote.add_argument("--force", action="store_true",
                         help="without leader election (etcd): promote anyway; safe only while the old writer is "
                              "known dead")
    sub.add_parser("bench", help="benchmark on the shared data set (see s5vec bench --help)")
    keys.add_commands(sub)
    backup_commands.add_commands(sub)
    wal_commands.add_commands(sub)
    mcp_stdio.add_commands(sub)
    client_cli.add_commands(sub)  # collections, upsert, import, export, search, get, delete, storage
    sub.add_parser("version", help="print the version")
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "promote":
        return _promote(args)
    if args.command == "keys":
        return keys.run(args)
    if args.command == "backup":
        return backup_commands.run(args)
    if args.command == "wal":
        return wal_commands.run(args)
    if args.command == "mcp":
        return mcp_stdio.run(args)
    if args.command in client_cli.COMMANDS:
        return client_cli.run(args)
    print(f"s5vec {_version()}")
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("s5vec")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree without installing
        return "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
