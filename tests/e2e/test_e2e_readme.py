"""The README's quick start, followed word by word: the daemon is started with `make run`'s
own command (read from the Makefile), every shell block is run as written (only the port
differs, so the test does not collide with a daemon on 7533) and its output must match the
output block shown after it, where ``...`` stands for any text."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, free_port

pytestmark = pytest.mark.e2e
# words only the team understands: the project it grew from, its issue numbers, its own machine
TEAM_WORDS = (r"\bthe seed(?! phrase)", r"\bseed(-compatible|'s| project)", r"\bissue \d", r"\b2-core machine",
              r"\bthis machine\b", r"\bthis host\b")
README_URL = "http://127.0.0.1:7533"


def quickstart_steps() -> list[tuple[str, str]]:
    """(shell block, expected output block) pairs of the Quick start, in order."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```\n```text\n(.*?)```", section, re.S)


def make_run_command() -> list[str]:
    """The recipe of the Makefile's ``run`` target, with ``$(VENV)`` expanded."""
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^run:.*\n\t(.+)$", makefile, re.M).group(1)  # type: ignore[union-attr]
    return shlex.split(recipe.replace("$(VENV)", sys.prefix))


def output_pattern(expected: str) -> re.Pattern[str]:
    return re.compile(".*?".join(re.escape(part) for part in expected.strip().split("...")), re.S)


def test_readme_first_lines_give_run_and_test_commands() -> None:
    head = (REPO / "README.md").read_text().splitlines()[:6]
    assert any(line.startswith("make run") for line in head)
    assert any(line.startswith("make test") for line in head)
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_readme_is_a_guide_of_at_most_12_kb_without_team_words() -> None:
    text = (REPO / "README.md").read_text()
    assert len(text.encode()) <= 12_500
    for word in TEAM_WORDS:
        assert not re.search(word, text, re.I), word
    for link in re.findall(r"\]\(((?:docs/)?[\w./-]+\.(?:md|png))\)", text):
        assert (REPO / link).is_file(), link


def test_readme_quickstart_word_by_word_against_make_runs_daemon(tmp_path: Path) -> None:
    steps = quickstart_steps()
    assert steps[0][0].strip() == "make run" and len(steps) >= 7
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "daemon.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("S5VEC_")}
    with open(log, "wb") as out:
        proc = subprocess.Popen(make_run_command(), cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                                env={**env, "S5VEC_PORT": str(port)})
    try:
        deadline = time.monotonic() + 60
        while f"listening on {url}" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert output_pattern(steps[0][1].replace(README_URL, url)).search(log.read_text()), log.read_text()
        # `. .venv/bin/activate` as written, from a directory whose .venv is this interpreter's
        (tmp_path / ".venv").symlink_to(sys.prefix)
        # s5vec comes from the activated venv only; its default URL is the README port, here another one
        shell_env = {**env, "PATH": "/usr/bin:/bin", "S5VEC_URL": url}
        assignments = ""  # one terminal: variables set by an earlier block hold in the later ones
        for script, expected in steps[1:]:
            result = subprocess.run(["bash", "-e", "-c", (assignments + script).replace(README_URL, url)], cwd=tmp_path,
                                    capture_output=True, text=True, timeout=60, env=shell_env)
            assert result.returncode == 0, (script, result.stdout, result.stderr)
            actual = result.stdout.strip()
            assert output_pattern(expected.replace(README_URL, url)).fullmatch(actual), (script, expected, actual)
            # what a user sees: every JSON answer ends its line
            assert not result.stdout or result.stdout.endswith("\n"), script
            assignments += "".join(line + "\n" for line in script.splitlines() if re.match(r"\w+=\S+$", line))
        assert not (tmp_path / "data").exists() or (tmp_path / "data" / "wal").is_dir()
        with urllib.request.urlopen(f"{url}/ui/", timeout=10) as resp:
            assert resp.status == 200 and b"s5vec" in resp.read()
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(30) == 0
    assert log.read_text().rstrip().endswith("INFO s5vec: stopped"), log.read_text()[-2000:]
