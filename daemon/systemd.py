"""The sd_notify protocol, spoken directly: one datagram per message to ``$NOTIFY_SOCKET``.

systemd (``Type=notify``) learns from it that the data is loaded (``READY=1``), what
the daemon is doing (``STATUS=...``), that the event loop still turns (``WATCHDOG=1``,
sent from the loop itself, so a stuck loop stops pinging and systemd restarts us), and
when the daemon stops or reloads (``STOPPING=1``, ``RELOADING=1``). Without
``$NOTIFY_SOCKET`` every call is a no-op, so the same code runs outside systemd.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Final

log = logging.getLogger(__name__)
STATUS_CHARS: Final = 200  # systemctl status shows one line


class Notifier:
    """Sends notifications to the service manager (from the event loop); never raises."""

    def __init__(self, address: str | None, watchdog_usec: int = 0) -> None:
        if address and address.startswith("@"):  # abstract namespace socket
            address = "\0" + address[1:]
        self.address = address or None
        self.watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        """From ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` (the watchdog is
        ours only when ``WATCHDOG_PID`` is unset or names this process)."""
        env = os.environ if env is None else env
        watchdog = 0
        pid = env.get("WATCHDOG_PID")
        if pid is None or pid.strip() == str(os.getpid()):
            try:
                watchdog = max(0, int(env.get("WATCHDOG_USEC", "0")))
            except ValueError:
                watchdog = 0
        return cls(env.get("NOTIFY_SOCKET"), watchdog)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """Seconds between ``WATCHDOG=1`` pings: half of ``WatchdogSec``; None when off."""
        if not self.enabled or self.watchdog_usec <= 0:
            return None
        return self.watchdog_usec / 2_000_000

    def notify(self, *fields: str) -> bool:
        """Send ``fields`` (``KEY=value``) as one message; True if it was sent."""
        if self.address is None or not fields:
            return False
        message = "\n".join(fields).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message, self.address)
            return True
        except OSError as exc:
            if not self._warned:  # once: the manager may be gone during shutdown
                log.warning("cannot notify systemd at %r: %s", self.address, exc)
                self._warned = True
            return False

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={' '.join(text.split())[:STATUS_CHARS]}")

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={status[:STATUS_CHARS]}", f"MAINPID={os.getpid()}")

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets systemd >= 253 (Type=notify-reload) match this to the signal
        return self.notify("RELOADING=1", "STATUS=reloading configuration",
                           f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self, status: str = "stopping") -> bool:
        return self.notify("STOPPING=1", f"STATUS={status[:STATUS_CHARS]}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    @asynccontextmanager
    async def watchdog_pings(self) -> AsyncIterator[None]:
        """While inside: ``WATCHDOG=1`` every half ``WatchdogSec`` from this event loop."""
        interval = self.watchdog_interval_s
        task = asyncio.create_task(self._ping(interval), name="s5vec-watchdog") if interval else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass

    async def _ping(self, interval: float) -> None:
        log.info("systemd watchdog: pinging every %.1fs", interval)
        while True:
            self.watchdog()
            await asyncio.sleep(interval)
