"""The Python client examples of docs/clients.md and the command-line example of docs/cli.md,
run against a real daemon."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, Daemon

pytestmark = pytest.mark.e2e
README_URL = "http://127.0.0.1:7533"


def blocks(language: str, title: str) -> list[str]:
    text = "".join((REPO / "docs" / page).read_text() for page in ("clients.md", "cli.md"))
    return re.findall(rf'```{language} title="{title}"\n(.*?)```', text, re.DOTALL)


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("S5VEC_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # s5vec and python
    return env


def test_docs_have_client_and_cli_examples() -> None:
    assert len(blocks("python", "client-example")) >= 3
    assert len(blocks("sh", "cli-example")) >= 1


def test_python_client_examples_run_in_order_against_a_daemon(daemon: Daemon, tmp_path: Path) -> None:
    daemon.start()
    for number, code in enumerate(blocks("python", "client-example"), 1):
        assert README_URL in code
        script = tmp_path / f"example_{number}.py"
        script.write_text(code.replace(README_URL, daemon.url))
        result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=90,
                                env=environment(), cwd=tmp_path, check=False)
        assert result.returncode == 0, f"example {number}:\n{code}\n{result.stdout}\n{result.stderr}"
    assert daemon.stop() == 0


def test_cli_examples_run_against_a_daemon(daemon: Daemon, tmp_path: Path) -> None:
    daemon.start()
    for code in blocks("sh", "cli-example"):
        assert README_URL in code
        result = subprocess.run(["bash", "-e", "-c", code.replace(README_URL, daemon.url)], capture_output=True,
                                text=True, timeout=110, env=environment(), cwd=tmp_path, check=False)
        assert result.returncode == 0, f"{code}\n{result.stdout}\n{result.stderr}"
        assert "s3" in result.stdout and "imported 3 of 3 records" in result.stdout
    exported = (tmp_path / "shows-export.ndjson").read_text().splitlines()
    assert [line.split('"')[3] for line in exported] == ["b1", "e1", "e2", "e3", "p1", "p2", "s1", "s2", "s3", "s5"]
