"""``s5vec keys new`` and ``s5vec keys check``: make and validate S5 seed phrases."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Final

from s5vec.storage.s5 import generate_phrase

from .config import ConfigError, StorageConfig, phrase_problem, read_seed_phrase

HINT: Final = ("Keep this phrase secret: it encrypts every blob and signs the root pointer, and without it\n"
               "the database on the portal cannot be read. Store it in a file only you can read and point\n"
               "the daemon at it, for example:\n"
               "  s5vec keys new --output /etc/s5vec/seed-phrase   # created with mode 0600\n"
               "  S5_SEED_PHRASE_FILE=/etc/s5vec/seed-phrase S5_MODE=portal S5_PORTAL_URL=https://... s5vec serve")


def add_commands(sub: Any) -> None:
    """Register ``keys new`` and ``keys check`` on the top-level subparsers ``sub``."""
    keys = sub.add_parser("keys", help="S5 seed phrases: make a new one, check one")
    actions = keys.add_subparsers(dest="keys_command", required=True)
    new = actions.add_parser("new", help="print a fresh 15-word seed phrase")
    new.add_argument("--output", help="write it to this new file (mode 0600) instead of standard output")
    check = actions.add_parser("check", help="validate a seed phrase from standard input or --file "
                                             "(exit 0 if valid, 1 if not)")
    check.add_argument("--file", help="read the phrase from this file, which must have mode 0600")


def run(args: argparse.Namespace) -> int:
    """Run a ``keys`` subcommand; returns the exit code."""
    if args.keys_command == "new":
        return _new(args.output)
    return _check(args.file)


def _new(output: str | None) -> int:
    phrase = generate_phrase()
    if output is None:
        print(phrase)
        print(HINT, file=sys.stderr)
        return 0
    path = Path(output)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"s5vec: {path} exists; refusing to overwrite a seed phrase", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"s5vec: cannot create {path}: {exc.strerror}", file=sys.stderr)
        return 1
    with os.fdopen(fd, "w") as out:
        out.write(phrase + "\n")
    print(f"wrote a new seed phrase to {path} (mode 0600); set S5_SEED_PHRASE_FILE={path}", file=sys.stderr)
    return 0


def _check(file: str | None) -> int:
    if file is not None:
        try:
            read_seed_phrase(StorageConfig(seed_phrase_file=Path(file)))
        except ConfigError as exc:
            print(f"s5vec: {exc}", file=sys.stderr)
            return 1
        print(f"{file}: a valid S5 seed phrase")
        return 0
    problem = phrase_problem(sys.stdin.read())
    if problem is not None:
        print(f"s5vec: not a valid S5 seed phrase: {problem}", file=sys.stderr)
        return 1
    print("a valid S5 seed phrase")
    return 0
