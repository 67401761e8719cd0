"""The console at /ui/ in a real headless Chromium (Debian's ``chromium``, driven by Playwright
for Python through ``executable_path``) against a daemon subprocess with API keys: the key
field, the collections and their statistics, searches by vector, by stored record and by
text, the live change feed, health and jobs. It also takes docs/console.png when
``S5VEC_SCREENSHOT=1`` (the screenshot of docs/console.md)."""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, Daemon

pytestmark = pytest.mark.e2e
ADMIN = "console-admin-key-0123456789"
READ = "console-read-key-0123456789"
KEYS_ENV = {"S5VEC_API_KEYS": f"{ADMIN}:admin;{READ}:read"}
TIMEOUT_MS = 20_000


def call(url: str, method: str, path: str, body: Any = None, key: str = ADMIN) -> Any:
    request = urllib.request.Request(url + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read())


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "Debian's chromium is needed for the console test (make tools installs it)"
    return found


@pytest.fixture
def console_daemon(tmp_path: Path) -> Iterator[Daemon]:
    daemon = Daemon(tmp_path / "data", env=KEYS_ENV).start()
    url = daemon.url
    call(url, "POST", "/api/v1/collections", {"name": "videos", "dimension": 4, "metric": "cosine"})
    call(url, "POST", "/api/v1/collections/videos/vectors/batch", {"vectors": [
        {"id": "trailer-1", "vector": [0.1, 0.9, 0.0, 0.2], "metadata": {"genre": ["sci-fi"], "views": 1200}},
        {"id": "trailer-2", "vector": [0.8, 0.1, 0.1, 0.0], "metadata": {"genre": ["drama"], "views": 90}},
        {"id": "trailer-3", "vector": [0.2, 0.8, 0.1, 0.1], "metadata": {"genre": ["sci-fi", "drama"], "views": 15}}]})
    call(url, "POST", "/api/v1/collections", {"name": "notes", "dimension": 384,
                                              "embedding_model": "sentence-transformers/all-MiniLM-L6-v2"})
    call(url, "POST", "/api/v1/collections/notes/vectors/batch", {"vectors": [
        {"id": "cat", "text": "The cat sleeps on the sofa.", "metadata": {"lang": "en"}},
        {"id": "tax", "text": "File your tax return before April.", "metadata": {"lang": "en"}}]})
    yield daemon
    assert daemon.stop() == 0


@pytest.mark.timeout(240)
def test_console_in_headless_chromium_lists_searches_follows_and_shows_jobs(console_daemon: Daemon,
                                                                            tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    url = console_daemon.url
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        external: list[str] = []
        page.on("request", lambda req: None if req.url.startswith(url) else external.append(req.url))

        page.goto(f"{url}/ui")  # redirected to /ui/
        expect(page.locator("#message")).to_contain_text("needs an API key")  # keys on: nothing without one

        page.fill("#api-key", READ)
        page.click("#key-form button")
        row = page.locator("#collections tbody tr", has_text="videos")
        expect(row).to_contain_text("cosine")
        expect(row.locator("td").nth(3)).to_have_text("3")  # records
        expect(page.locator("#collections tbody tr", has_text="notes")).to_contain_text("all-MiniLM-L6-v2")
        expect(page.locator("#health-badge")).to_have_text("ok")
        expect(page.locator("#jobs-note")).to_contain_text("admin scope")  # a read key sees no jobs

        page.fill("#api-key", ADMIN)
        page.click("#key-form button")
        expect(page.locator("#jobs tbody tr", has_text="checkpoint")).to_be_visible()

        # by vector, with a filter: the quick start's search
        row.click()
        page.fill("#search-query", "[0.1, 0.8, 0.1, 0.1]")
        page.fill("#search-k", "2")
        page.fill("#search-filter", '{"genre": "sci-fi", "views": {"$gte": 10}}')
        page.click("#search-form button[type=submit]")
        results = page.locator("#results tbody tr")
        expect(results).to_have_count(2)
        expect(results.nth(0).locator("td").nth(1)).to_have_text("trailer-3")
        expect(results.nth(1).locator("td").nth(1)).to_have_text("trailer-1")
        expect(results.nth(0).locator("td").nth(4)).to_contain_text('"views":15')

        # by a stored record: its neighbours, itself left out
        page.check('input[name="by"][value="id"]')
        page.fill("#search-filter", "")
        page.fill("#search-query", "trailer-1")
        page.click("#search-form button[type=submit]")
        expect(results.nth(0).locator("td").nth(1)).to_have_text("trailer-3")
        expect(page.locator("#results")).not_to_contain_text("trailer-1")

        # a bad filter is reported, not thrown away
        page.fill("#search-filter", '{"views": {"$bogus": 1}}')
        page.click("#search-form button[type=submit]")
        expect(page.locator("#message")).to_contain_text("invalid")

        # live changes of the selected collection, as they are written
        page.fill("#search-filter", "")
        page.click("#feed-toggle")
        expect(page.locator("#feed-status")).to_contain_text("Following videos")
        page.wait_for_timeout(300)  # the stream's request is on its way; events before it are not shown
        call(url, "POST", "/api/v1/collections/videos/vectors",
             {"id": "trailer-4", "vector": [0.3, 0.7, 0.0, 0.1], "metadata": {"genre": ["sci-fi"]}})
        expect(page.locator("#feed li", has_text="videos/trailer-4")).to_contain_text("vector_added")

        # by text, on the collection with an embedding model
        page.locator("#collections tbody tr", has_text="notes").click()
        page.check('input[name="by"][value="text"]')
        page.fill("#search-query", "a kitten napping on the couch")
        page.fill("#search-k", "1")
        page.click("#search-form button[type=submit]")
        expect(results).to_have_count(1)
        expect(results.nth(0).locator("td").nth(1)).to_have_text("cat")

        page.locator("#collections tbody tr", has_text="videos").click()
        page.check('input[name="by"][value="vector"]')
        page.fill("#search-query", "[0.1, 0.8, 0.1, 0.1]")
        page.fill("#search-k", "3")
        page.fill("#search-filter", '{"genre": "sci-fi"}')
        page.click("#search-form button[type=submit]")
        expect(results).to_have_count(3)
        shot = tmp_path / "console.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert errors == [], errors
    assert external == [], external  # nothing from the internet
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("S5VEC_SCREENSHOT") == "1":
        shutil.copyfile(shot, REPO / "docs" / "console.png")


def test_console_files_are_public_with_a_strict_policy_and_nothing_else_is(console_daemon: Daemon) -> None:
    with urllib.request.urlopen(f"{console_daemon.url}/ui/", timeout=10) as resp:
        policy = resp.headers["Content-Security-Policy"]
        assert resp.status == 200 and "default-src 'none'" in policy and "connect-src 'self'" in policy
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{console_daemon.url}/api/v1/collections", timeout=10)
    refused.value.close()
    assert refused.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{console_daemon.url}/ui/../pyproject.toml", timeout=10)
    missing.value.close()
    assert missing.value.code == 404
