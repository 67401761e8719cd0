"""``--set SECTION.KEY=VALUE`` for the benchmark daemons (feeds, soak)."""

from __future__ import annotations

import pytest

from s5vec_tools.daemon_proc import Daemon, parse_settings


def test_settings_become_the_daemons_environment(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = parse_settings(["engine.graph_chunk=16", "events.flush_ms=5"])
    env = Daemon(tmp_path / "d", tmp_path / "log", settings=settings).env()
    assert env["S5VEC_ENGINE__GRAPH_CHUNK"] == "16" and env["S5VEC_EVENTS__FLUSH_MS"] == "5"


@pytest.mark.parametrize("item", ["graph_chunk=16", "engine.graph_chunk", "nope"])
def test_a_malformed_setting_is_named(item: str) -> None:
    with pytest.raises(ValueError, match=item):
        parse_settings(["engine.index_threads=1", item])
