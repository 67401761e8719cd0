"""systemd integration: the sd_notify protocol against a real NOTIFY_SOCKET, SIGHUP reload,
SIGTERM, JSON logs and the unit file (``systemd-analyze verify``)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import REPO, free_port
from prometheus_client.parser import text_string_to_metric_families
from s5vec.daemon.systemd import Notifier

UNIT = REPO / "systemd" / "s5vec.service"
OLD_KEY = "old-admin-key-0123456789"
NEW_KEY = "new-admin-key-0123456789"


class NotifySocket:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, address: str) -> None:
        self.address = address  # as put in $NOTIFY_SOCKET ('@' = abstract namespace)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.messages: list[list[str]] = []

    def receive(self, timeout: float) -> list[str] | None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return None
        fields = data.decode().split("\n")
        self.messages.append(fields)
        return fields

    def expect(self, predicate: Callable[[list[str]], bool], timeout: float = 60.0) -> list[str]:
        """Read messages until one satisfies ``predicate``; fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            fields = self.receive(left)
            if fields is not None and predicate(fields):
                return fields
        raise AssertionError(f"no matching notification in {timeout}s; got {self.messages}")

    def fields(self) -> list[str]:
        return [field for message in self.messages for field in message]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    sock = NotifySocket(f"@s5vec-test-{uuid.uuid4().hex}")
    yield sock
    sock.close()


class Service:
    """``s5vec serve`` started as systemd would: NOTIFY_SOCKET, WATCHDOG_USEC, a config file."""

    def __init__(self, tmp_path: Path, env: dict[str, str], config: Path | None = None,
                 wrapper: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / "service.log"
        args = [*wrapper, sys.executable, "-m", "s5vec.daemon.cli", "serve", "--data-dir", str(tmp_path / "data"),
                "--port", str(self.port)]
        if config is not None:
            args += ["--config", str(config)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, **env})

    def status(self, path: str, key: str | None = None) -> int:
        request = urllib.request.Request(self.url + path)
        if key is not None:
            request.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def ready(fields: list[str]) -> bool:
    return "READY=1" in fields


# ---------------------------------------------------------------------------- the protocol
def test_notifier_sends_one_datagram_per_message_to_a_path_socket() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as directory:  # sun_path holds 108 bytes: keep it short
        listener = NotifySocket(os.path.join(directory, "notify"))
        notifier = Notifier.from_env({"NOTIFY_SOCKET": listener.address})
        assert notifier.ready("serving 2 collections")
        assert listener.receive(5) == ["READY=1", "STATUS=serving 2 collections", f"MAINPID={os.getpid()}"]
        assert notifier.status("checkpointing\nnow")
        assert listener.receive(5) == ["STATUS=checkpointing now"]
        assert notifier.stopping()
        assert listener.receive(5) == ["STOPPING=1", "STATUS=stopping"]
        assert notifier.reloading()
        reloading = listener.receive(5)
        assert reloading is not None and reloading[0] == "RELOADING=1" and reloading[2].startswith("MONOTONIC_USEC=")
        notifier.close()
        listener.close()


def test_notifier_reaches_an_abstract_namespace_socket(notify_socket: NotifySocket) -> None:
    notifier = Notifier(notify_socket.address)
    assert notifier.watchdog()
    assert notify_socket.receive(5) == ["WATCHDOG=1"]
    notifier.close()


def test_without_notify_socket_nothing_is_sent_and_nothing_fails() -> None:
    notifier = Notifier.from_env({})
    assert not notifier.enabled and not notifier.ready("x") and notifier.watchdog_interval_s is None


def test_notifier_warns_once_and_carries_on_when_the_socket_is_gone(caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier(f"@s5vec-nobody-{uuid.uuid4().hex}")
    assert not notifier.status("a") and not notifier.status("b")
    assert len([r for r in caplog.records if "cannot notify systemd" in r.getMessage()]) == 1
    notifier.close()


def test_watchdog_interval_is_half_of_watchdog_usec_and_only_for_this_process() -> None:
    env = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "30000000"}
    assert Notifier.from_env(env).watchdog_interval_s == 15.0
    assert Notifier.from_env({**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_interval_s == 15.0
    assert Notifier.from_env({**env, "WATCHDOG_PID": str(os.getpid() + 1)}).watchdog_interval_s is None


async def test_watchdog_pings_come_from_the_event_loop_and_stop_while_it_is_stuck(
        notify_socket: NotifySocket) -> None:
    notifier = Notifier(notify_socket.address, watchdog_usec=40_000)  # a ping every 20 ms
    notify_socket.sock.setblocking(False)

    def pings() -> int:
        count = 0
        while True:
            try:
                count += notify_socket.sock.recv(64) == b"WATCHDOG=1"
            except BlockingIOError:
                return count

    async with notifier.watchdog_pings():
        async with asyncio.timeout(5):
            seen = 0
            while seen < 3:
                await asyncio.sleep(0.01)
                seen += pings()
        time.sleep(0.3)  # noqa: ASYNC251 - the point: the event loop is stuck for 15 intervals
        assert pings() == 0
        async with asyncio.timeout(5):
            while not pings():
                await asyncio.sleep(0.01)
    notifier.close()


# ----------------------------------------------------------------------- the real daemon
@pytest.mark.e2e
def test_daemon_notifies_ready_status_watchdog_and_stopping(tmp_path: Path, notify_socket: NotifySocket) -> None:
    service = Service(tmp_path, {"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "200000"})
    try:
        message = notify_socket.expect(ready)
        assert service.status("/ready") == 200  # READY=1 comes once the port answers with the data loaded
        assert f"MAINPID={service.proc.pid}" in message
        assert f"STATUS=serving 0 collections on 127.0.0.1:{service.port}" in message
        assert any(f.startswith("STATUS=loading data from") for f in notify_socket.fields())
        for _ in range(3):  # every 100 ms (half of WATCHDOG_USEC)
            notify_socket.expect(lambda fields: fields == ["WATCHDOG=1"], timeout=5)
        service.proc.send_signal(signal.SIGTERM)
        notify_socket.expect(lambda fields: "STOPPING=1" in fields, timeout=30)
        notify_socket.expect(lambda fields: "STATUS=checkpointing and closing the database" in fields, timeout=30)
        notify_socket.expect(lambda fields: "STATUS=stopped" in fields, timeout=30)
        assert service.proc.wait(30) == 0
    finally:
        service.kill()
    assert "SIGTERM: stopping" in service.log.read_text()


PROCESS_FAMILIES = ("s5vec_process_cpu_seconds", "s5vec_process_resident_memory_bytes",
                    "s5vec_process_virtual_memory_bytes", "s5vec_process_start_time_seconds",
                    "s5vec_process_open_fds", "s5vec_process_max_fds")
# the /proc the unit's ProtectProc=invisible + ProcSubset=pid give the service: process directories only
PROC_SUBSET_PID = ("unshare", "--mount", "--pid", "--fork", "--propagation", "private", "--kill-child=SIGTERM",
                   "sh", "-ec", ("mount -t proc -o subset=pid,hidepid=invisible proc /proc; "
                                 "test ! -e /proc/stat; test -e /proc/self/stat; exec \"$@\""), "sh")


@pytest.mark.e2e
def test_process_metrics_are_exported_under_the_units_proc_subset(tmp_path: Path,
                                                                  notify_socket: NotifySocket) -> None:
    probe = subprocess.run([*PROC_SUBSET_PID, "true"], capture_output=True, text=True, timeout=30, check=False)
    if probe.returncode != 0:  # CI runs as root: this must work there, so say so rather than skip
        pytest.fail(f"cannot mount /proc with subset=pid in a new namespace: {probe.stderr.strip()}")
    launched = time.time()
    service = Service(tmp_path, {"NOTIFY_SOCKET": notify_socket.address}, wrapper=PROC_SUBSET_PID)
    try:
        notify_socket.expect(ready)
        with urllib.request.urlopen(service.url + "/metrics", timeout=10) as resp:
            text = resp.read().decode()
        # unshare ignores SIGTERM while it waits: stop the daemon itself, its only child
        pid = service.proc.pid
        (daemon_pid,) = map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
        os.kill(daemon_pid, signal.SIGTERM)
        assert service.proc.wait(60) == 0
    finally:
        service.kill()
    samples = {family.name: family.samples[0].value
               for family in text_string_to_metric_families(text) if family.name.startswith("s5vec_process_")}
    assert sorted(samples) == sorted(PROCESS_FAMILIES), text
    assert launched - 5 <= samples["s5vec_process_start_time_seconds"] <= time.time()
    assert samples["s5vec_process_resident_memory_bytes"] > 10 * 2**20
    assert samples["s5vec_process_cpu_seconds"] > 0 and samples["s5vec_process_open_fds"] > 3


def write_config(path: Path, key: str, log_level: str = "info") -> None:
    path.write_text(f'log_level = "{log_level}"\n\n[[auth.keys]]\nkey = "{key}"\nscopes = ["admin"]\n')


@pytest.mark.e2e
def test_sighup_swaps_the_api_keys_and_the_log_level(tmp_path: Path, notify_socket: NotifySocket) -> None:
    config = tmp_path / "s5vec.toml"
    write_config(config, OLD_KEY)
    service = Service(tmp_path, {"NOTIFY_SOCKET": notify_socket.address}, config)
    try:
        notify_socket.expect(ready)
        assert service.status("/api/v1/collections", OLD_KEY) == 200
        assert service.status("/api/v1/collections", NEW_KEY) == 401

        write_config(config, NEW_KEY, "debug")
        service.proc.send_signal(signal.SIGHUP)
        notify_socket.expect(lambda fields: "RELOADING=1" in fields, timeout=30)
        notify_socket.expect(ready, timeout=30)
        assert service.status("/api/v1/collections", OLD_KEY) == 401
        assert service.status("/api/v1/collections", NEW_KEY) == 200

        config.write_text('log_level = "loud"\n')  # a bad file: the running configuration stays
        service.proc.send_signal(signal.SIGHUP)
        notify_socket.expect(lambda fields: "RELOADING=1" in fields, timeout=30)
        notify_socket.expect(ready, timeout=30)
        assert service.status("/api/v1/collections", NEW_KEY) == 200
        assert service.stop() == 0
    finally:
        service.kill()
    log = service.log.read_text()
    assert "reloaded configuration: log_level=debug, 1 API keys" in log
    assert "DEBUG" in log.split("reloaded configuration: log_level=debug", 1)[1]  # debug lines follow
    assert "reload failed, keeping the running configuration: log_level" in log
    assert OLD_KEY not in log and NEW_KEY not in log


@pytest.mark.e2e
def test_json_log_format_writes_one_object_a_line_to_stdout(tmp_path: Path, notify_socket: NotifySocket) -> None:
    service = Service(tmp_path, {"NOTIFY_SOCKET": notify_socket.address, "S5VEC_LOG_FORMAT": "json"})
    try:
        notify_socket.expect(ready)
        assert service.stop() == 0
    finally:
        service.kill()
    entries = [json.loads(line) for line in service.log.read_text().splitlines() if line.strip()]
    assert {"ts", "level", "logger", "message"} <= set(entries[0])
    messages = [e["message"] for e in entries]
    assert any(m.startswith("listening on http://127.0.0.1:") for m in messages)
    assert any(m.startswith("checkpoint at LSN") or "SIGTERM" in m for m in messages)


def test_logs_carry_syslog_priorities_only_when_stdout_is_the_journal(tmp_path: Path) -> None:
    import logging

    from s5vec.daemon import logs
    level = logging.getLogger().level
    with open(tmp_path / "out.log", "w+") as stream:
        info = os.fstat(stream.fileno())
        handler = logs.configure("info", "json", stream, {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"})
        try:
            logging.getLogger("s5vec.test").warning("disk %s", "slow")
            try:
                raise ValueError("boom")
            except ValueError:
                logging.getLogger("s5vec.test").exception("failed")
            logging.getLogger("s5vec.test").debug("hidden at info")
            logs.configure("info", "text", stream, {})  # not the journal: no prefix; replaces the handler
            logging.getLogger("s5vec.test").info("plain")
        finally:
            logging.getLogger().setLevel(level)
            logging.getLogger().removeHandler(handler)
            for extra in [h for h in logging.getLogger().handlers if h.get_name() == "s5vec-stdout"]:
                logging.getLogger().removeHandler(extra)
        stream.seek(0)
        lines = stream.read().splitlines()
    assert lines[0].startswith("<4>{") and json.loads(lines[0][3:])["message"] == "disk slow"
    failed = [line for line in lines if line.startswith("<3>")]
    assert json.loads(failed[0][3:])["exception"].startswith("Traceback") and len(failed) == 1
    assert not any("hidden" in line for line in lines)
    assert lines[-1].endswith("INFO s5vec.test: plain") and not lines[-1].startswith("<")


# ------------------------------------------------------------------------------ unit file
def test_unit_file_declares_notify_watchdog_secrets_state_and_hardening() -> None:
    lines = {line.strip() for line in UNIT.read_text().splitlines()}
    for directive in ("Type=notify", "NotifyAccess=main", "WatchdogSec=30", "EnvironmentFile=-/etc/s5vec/s5vec.env",
                      "StateDirectory=s5vec", "KillSignal=SIGTERM", "TimeoutStopSec=120",
                      "ExecReload=/bin/kill -HUP $MAINPID", "NoNewPrivileges=yes", "ProtectSystem=strict",
                      "ProtectHome=yes", "PrivateTmp=yes", "RestartPreventExitStatus=65 78"):
        assert directive in lines, directive


def test_unit_file_keeps_its_systemd_analyze_security_exposure(tmp_path: Path) -> None:
    """The exposure ``systemd-analyze security`` rates (1.5, "OK") with /proc reduced to the
    service's own processes (the process metrics read only those: see the test above)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: `make tools` installs Debian's systemd package")
    unit = tmp_path / "s5vec.service"
    unit.write_text(UNIT.read_text().replace("/opt/s5vec/.venv/bin/s5vec", str(Path(sys.executable).with_name("s5vec"))))
    command = [analyze, "security", "--offline=yes", "--no-pager", str(unit)]
    rated = subprocess.run([*command, "--threshold=15"], capture_output=True, text=True, timeout=60, check=False)
    assert rated.returncode == 0, rated.stdout[-2000:] + rated.stderr  # exposure 1.5 or better
    checks = json.loads(subprocess.run([*command, "--json=short"], capture_output=True, text=True, timeout=60,
                                       check=True).stdout)
    assert {c["name"]: c["set"] for c in checks if c["name"] in ("ProcSubset=", "ProtectProc=")} == {
        "ProcSubset=": True, "ProtectProc=": True}


def test_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: `make tools` installs Debian's systemd package")
    executable = Path(sys.executable).with_name("s5vec")
    assert executable.exists(), "the s5vec console script is installed beside the interpreter"
    # verify checks that ExecStart's program exists: point it at this checkout's one
    unit = tmp_path / "s5vec.service"
    unit.write_text(UNIT.read_text().replace("/opt/s5vec/.venv/bin/s5vec", str(executable)))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0 and not result.stderr.strip(), result.stdout + result.stderr
