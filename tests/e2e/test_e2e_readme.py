"""The README's quick start, pasted into a shell against a real daemon."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, Daemon

pytestmark = pytest.mark.e2e


def quickstart_block() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Quick start", 1)[1]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


def test_readme_first_lines_give_run_and_test_commands() -> None:
    head = (REPO / "README.md").read_text().splitlines()[:6]
    assert any(line.startswith("make run") for line in head)
    assert any(line.startswith("make test") for line in head)
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_readme_quickstart_commands_work_against_a_daemon(daemon: Daemon, tmp_path: Path) -> None:
    daemon.start()
    script = quickstart_block().replace("S5=http://127.0.0.1:7533", f"S5={daemon.url}")
    outputs = []
    for command in re.split(r"\n(?=curl )", script.split("\n", 1)[1].strip()):
        command = "\n".join(line for line in command.splitlines() if not line.startswith("#")).strip()
        if not command.strip():
            continue
        result = subprocess.run(["bash", "-c", f"S5={daemon.url}\n{command} -w '\\n%{{http_code}}'"],
                                capture_output=True, text=True, timeout=30)
        body, _, status = result.stdout.rpartition("\n")
        assert result.returncode == 0 and status.startswith("2"), (command, result.stdout, result.stderr)
        outputs.append(json.loads(body))
    search = next(o for o in outputs if "results" in o and o["results"] and o["results"][0]["id"].startswith("trailer"))
    assert [r["id"] for r in search["results"]] == ["trailer-3", "trailer-1"]
    assert outputs[-1]["status"] == "ok"
