"""The ``s5vec`` command line: ``serve``, ``bench``, ``version``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

from .config import EX_CONFIG, ConfigError, load_config

log = logging.getLogger("s5vec")


def _serve(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir
    if args.host is not None:
        overrides.setdefault("http", {})["host"] = args.host
    if args.port is not None:
        overrides.setdefault("http", {})["port"] = args.port
    if args.log_level is not None:
        overrides["log_level"] = args.log_level
    try:
        config = load_config(Path(args.config) if args.config else None, os.environ, overrides)
    except ConfigError as exc:
        print(f"s5vec: configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG
    sys.setswitchinterval(float(os.environ.get("S5VEC_SWITCH", "0.005")))
    logging.basicConfig(level=config.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.info("%s", config.summary())

    from aiohttp import web

    from s5vec.storage import StorageError

    from .app import create_app

    try:
        import uvloop
        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - non-Linux
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        web.run_app(create_app(config), host=config.http.host, port=config.http.port, loop=loop,
                    print=lambda _: log.info("listening on http://%s:%d", config.http.host, config.http.port),
                    access_log=logging.getLogger("aiohttp.access") if config.http.access_log else None,
                    shutdown_timeout=10.0)
    except StorageError as exc:
        log.error("cannot open the data directory: %s", exc)
        return 1
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", config.http.host, config.http.port, exc.strerror or exc)
        return 1
    return 0


def _bench(argv: list[str]) -> int:
    from s5vec.bench.run import main as bench_main
    return int(bench_main(argv))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        return _bench(argv[1:])
    parser = argparse.ArgumentParser(prog="s5vec", description="Vector database daemon on S5-style storage")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the daemon")
    serve.add_argument("--config", help="TOML config file")
    serve.add_argument("--data-dir", help="data directory (default ./data)")
    serve.add_argument("--host", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default 7533)")
    serve.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    sub.add_parser("bench", help="benchmark on the shared data set (see s5vec bench --help)")
    sub.add_parser("version", help="print the version")
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    from .rest import VERSION
    print(VERSION)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
