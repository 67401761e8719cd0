"""Keeps a writer lease alive while the daemon runs itself again as the writer (promotion):
from the moment the old process asks to restart until the new one has loaded its modules
and resumed the lease. Standard library only, so ``s5vec serve`` starts it before the
engine is imported (that import alone can take longer than a short lease's TTL)."""

from __future__ import annotations

import json
import logging
import threading
import urllib.request
from typing import Final

log = logging.getLogger(__name__)
_lock: Final = threading.Lock()
_current: list[threading.Event] = []


def keep_alive_once(endpoints: list[str], lease_id: str, timeout: float = 1.0) -> bool:
    """One keep-alive through etcd's JSON gateway; True when the lease still lives."""
    body = json.dumps({"ID": lease_id}).encode()
    for endpoint in endpoints:
        request = urllib.request.Request(endpoint.rstrip("/") + "/v3/lease/keepalive", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                line = resp.read().decode().strip().splitlines()[0]
            return int(json.loads(line).get("result", {}).get("TTL", 0)) > 0
        except (OSError, ValueError, IndexError):
            continue
    return False


def start(endpoints: list[str], lease_id: str, ttl_s: float) -> None:
    """Renew ``lease_id`` every third of its TTL on a daemon thread until :func:`stop`
    (or the process is replaced)."""
    stop()
    done = threading.Event()

    def renew() -> None:
        while not done.is_set():
            if not keep_alive_once(endpoints, lease_id):
                log.warning("keeping the writer lease alive across the restart failed")
            done.wait(ttl_s / 3)

    with _lock:
        _current.append(done)
    keep_alive_once(endpoints, lease_id)
    threading.Thread(target=renew, name="s5vec-lease-bridge", daemon=True).start()


def stop() -> None:
    with _lock:
        while _current:
            _current.pop().set()
