"""What a new user meets in the first hour: the command's version and help, answers that end
their line, a quiet default log."""

from __future__ import annotations

import logging
import subprocess
import sys
from typing import Any

from s5vec.daemon import logs


def s5vec(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "s5vec.daemon.cli", *args], capture_output=True, text=True,
                          timeout=60, check=False)


def test_version_flag_prints_the_installed_version() -> None:
    from importlib.metadata import version
    result = s5vec("--version")
    assert result.returncode == 0 and result.stdout == f"s5vec {version('s5vec')}\n"
    assert s5vec("version").stdout == result.stdout


def test_help_shows_the_options_the_client_commands_share() -> None:
    out = s5vec("--help").stdout
    for option in ("--url URL", "--api-key KEY", "--json", "--timeout S", "--version"):
        assert option in out, option


async def test_json_answers_and_errors_end_with_a_newline(client: Any) -> None:
    ok = await client.get("/api/v1/collections")
    assert ok.status == 200 and (await ok.read()).endswith(b"}\n")
    missing = await client.get("/api/v1/collections/nope")
    assert missing.status == 404 and (await missing.read()).endswith(b"}\n")


def test_scheduler_bookkeeping_stays_out_of_the_info_log() -> None:
    handler = logs.configure("info")
    try:
        assert not logging.getLogger("apscheduler.scheduler").isEnabledFor(logging.INFO)
        assert logging.getLogger("apscheduler.scheduler").isEnabledFor(logging.WARNING)
        assert logging.getLogger("s5vec").isEnabledFor(logging.INFO)
        logs.set_level("debug")
        assert logging.getLogger("apscheduler.scheduler").isEnabledFor(logging.DEBUG)
    finally:
        logging.getLogger().removeHandler(handler)
        logs.set_level("warning")
