"""schemathesis against the daemon's OpenAPI document: every operation, valid and invalid
inputs, API keys on and a real collection to aim at. No 5xx, and every status, content
type, header and body is the one the document promises (errors in the one error shape).

The daemon runs as a subprocess (schemathesis calls are blocking); the operations come
from the in-process document, and a test checks the served one is the same."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import pytest

from s5vec_tools.fuzz import (
    ADMIN_KEY, FuzzDaemon, api_schema, intact, operations, prepared_daemon, run_operation,
)
from s5vec.daemon.openapi import build_openapi
from s5vec.daemon.rest import VERSION

pytestmark = pytest.mark.e2e
EXAMPLES = 10
OPERATIONS = {f"{op.method.upper()} {op.path}": op for op in operations(api_schema(build_openapi(VERSION)))}


@pytest.fixture(scope="module")
def fuzz_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzDaemon]:
    with prepared_daemon(tmp_path_factory.mktemp("schemathesis")) as daemon:
        yield daemon


def test_served_openapi_document_is_the_one_under_test(fuzz_daemon: FuzzDaemon) -> None:
    with urllib.request.urlopen(fuzz_daemon.url + "/openapi.json", timeout=10) as resp:
        assert json.loads(resp.read()) == json.loads(json.dumps(build_openapi(VERSION)))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_operation_answers_as_documented_for_valid_and_invalid_input(fuzz_daemon: FuzzDaemon, name: str) -> None:
    calls, failures = run_operation(OPERATIONS[name], fuzz_daemon.url, ADMIN_KEY, EXAMPLES)
    assert calls > 0
    assert not failures, "\n\n".join(failures)


def test_stored_record_is_intact_after_the_generated_calls(fuzz_daemon: FuzzDaemon) -> None:
    intact(fuzz_daemon)
    fuzz_daemon.stop()
    fuzz_daemon.start()
    fuzz_daemon.wait_status("/ready")
    intact(fuzz_daemon)
