"""The pages of docs/: every curl and client example is executed by a test (here, or by the
tests named in ``TESTED_ELSEWHERE``), and the examples run here print what the page shows."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, Daemon

pytestmark = pytest.mark.e2e
# words only the team understands: the project it grew from, its issue numbers, its own machine
TEAM_WORDS = (r"\bthe seed(?! phrase)", r"\bseed(-compatible|'s| project)", r"\bissue \d", r"\b2-core machine",
              r"\bthis machine\b", r"\bthis host\b")
DOCS = REPO / "docs"
PAGE_URL = "http://127.0.0.1:7533"
# title → the test that runs the block
TESTED_ELSEWHERE = {
    "client-example": "tests/client/test_readme_clients.py",
    "cli-example": "tests/client/test_readme_clients.py",
    "js-client-example": "clients/js/test/client.test.mjs (via tests/test_js_client.py)",
    "live-feeds-example": "tests/e2e/test_e2e_feeds.py",
    "mcp-example": "tests/daemon/test_mcp.py",
}
TESTED_HERE = ("api-example", "text-search-example", "keys-example")
BLOCK = re.compile(r'```(\w*)(?: title="([\w-]+)")?\n(.*?)```', re.S)


def pages() -> list[Path]:
    return [REPO / "README.md", *sorted(DOCS.glob("*.md"))]


def example(title: str) -> tuple[str, str]:
    """The block titled ``title`` and the ```text block right after it (its output)."""
    for page in pages():
        found = re.search(rf'```\w+ title="{title}"\n(.*?)```\n(?:```text\n(.*?)```)?', page.read_text(), re.S)
        if found:
            return found.group(1), found.group(2) or ""
    raise AssertionError(f"no block titled {title}")


def output_pattern(expected: str) -> re.Pattern[str]:
    return re.compile(".*?".join(re.escape(part) for part in expected.strip().split("...")), re.S)


def run_shell(script: str, url: str, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("S5VEC_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(["bash", "-e", "-c", script.replace(PAGE_URL, url)], capture_output=True, text=True,
                            timeout=120, env=env, cwd=cwd, check=False)
    assert result.returncode == 0, (script, result.stdout, result.stderr)
    return result.stdout


def test_every_curl_and_client_example_in_the_docs_is_run_by_a_test() -> None:
    seen = set()
    for page in pages():
        text = page.read_text()
        if page.name == "README.md":  # its Quick start is run block by block by test_e2e_readme.py
            before, _, rest = text.partition("\n## Quick start\n")
            text = before + "\n## " + rest.split("\n## ", 1)[1]
        for language, title, code in BLOCK.findall(text):
            runnable = "curl " in code or "s5vec.client" in code or "S5vecClient" in code or "ClientSession" in code
            if runnable and language in ("sh", "python", "js"):
                assert title in TESTED_ELSEWHERE or title in TESTED_HERE, (page.name, code[:200])
            if title:
                seen.add(title)
    assert seen >= set(TESTED_ELSEWHERE) | set(TESTED_HERE), set(TESTED_ELSEWHERE) | set(TESTED_HERE) - seen


def test_docs_pages_link_to_files_that_exist_and_use_no_team_words() -> None:
    for page in pages():
        text = page.read_text()
        for word in TEAM_WORDS:
            assert not re.search(word, text, re.I), (page.name, word)
        for link in re.findall(r"\]\(([\w./-]+\.(?:md|png|json|toml))(?:#[\w-]+)?\)", text):
            assert (page.parent / link).resolve().is_file(), (page.name, link)


def test_the_default_collection_example_prints_what_the_api_page_shows(daemon: Daemon, tmp_path: Path) -> None:
    daemon.start()
    script, expected = example("api-example")
    assert output_pattern(expected).fullmatch(run_shell(script, daemon.url, tmp_path).strip())


def test_the_text_search_example_finds_the_cat_by_meaning(daemon: Daemon, tmp_path: Path) -> None:
    daemon.start()
    script, expected = example("text-search-example")
    assert output_pattern(expected).fullmatch(run_shell(script, daemon.url, tmp_path).strip())


def test_the_api_keys_example_starts_a_daemon_that_wants_its_keys(tmp_path: Path) -> None:
    from conftest import free_port
    script, expected = example("keys-example")
    port = free_port()
    script = script.replace("7533", str(port))
    env = {k: v for k, v in os.environ.items() if not k.startswith("S5VEC_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(["bash", "-e", "-c", script], capture_output=True, text=True, timeout=120, env=env,
                            cwd=tmp_path, check=False)
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert output_pattern(expected).fullmatch(result.stdout.strip()), result.stdout
