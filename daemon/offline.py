"""What the offline commands (``s5vec backup ...``, ``s5vec wal ...``) share: their common
options and the configuration they read, the same as ``s5vec serve`` reads (``--config``,
the environment, ``--data-dir``), so they find the same data directory and backend."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from .config import EX_CONFIG, Config, ConfigError, load_config


def common_options() -> argparse.ArgumentParser:
    """A parent parser with ``--config``, ``--data-dir`` and ``--json``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="TOML config file (as for s5vec serve)")
    common.add_argument("--data-dir", help="data directory (default: from the config, ./data)")
    common.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    return common


def load(args: argparse.Namespace) -> Config | int:
    """The configuration for ``args``, or EX_CONFIG after printing what is wrong."""
    overrides: dict[str, Any] = {"data_dir": args.data_dir} if args.data_dir else {}
    try:
        return load_config(Path(args.config) if args.config else None, os.environ, overrides)
    except ConfigError as exc:
        print(f"s5vec: configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG


def print_result(args: argparse.Namespace, document: dict[str, Any], text: str) -> None:
    """One JSON document with ``--json``, else the text (if any), on standard output."""
    if args.json:
        print(json.dumps(document, indent=2))
    elif text:
        print(text)
