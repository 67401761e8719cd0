"""``s5vec mcp``: the MCP tools over stdio, for an agent host to spawn.

It is a client of a running daemon (``S5VEC_URL``, default ``http://127.0.0.1:7533``, and
``S5VEC_API_KEY`` when the daemon has keys): the daemon owns its data directory (one
process per directory, by its lock), and a spawn per agent session costs no index load.
Standard output carries only MCP messages; logs go to standard error.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from . import logs


def add_commands(sub: Any) -> None:
    """Register ``mcp`` on the top-level subparsers ``sub``."""
    mcp = sub.add_parser("mcp", help="serve the MCP tools over stdio for an AI agent (needs a running daemon)",
                         description="MCP server over stdio for agent hosts. Talks to a running daemon at "
                                     "S5VEC_URL (default http://127.0.0.1:7533) with the API key in S5VEC_API_KEY.")
    mcp.add_argument("--url", help="the daemon's base URL (default $S5VEC_URL or http://127.0.0.1:7533)")
    mcp.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="warning",
                     help="log level on standard error (default warning)")


def run(args: argparse.Namespace) -> int:
    """Serve until the agent host closes standard input; returns the exit code."""
    from .mcp_server import (  # the SDK loads only for this command
        DEFAULT_URL,
        serve_stdio,
    )

    logs.configure(args.log_level, stream=sys.stderr)
    url = args.url or os.environ.get("S5VEC_URL") or DEFAULT_URL
    try:
        asyncio.run(serve_stdio(url, os.environ.get("S5VEC_API_KEY") or None))
    except KeyboardInterrupt:
        return 130
    return 0
