"""Running the daemon as a service: listen, tell systemd, reload on SIGHUP, stop on SIGTERM.

Start: open the database (cleanup_ctx), start listening, then ``READY=1``.
SIGTERM / SIGINT: ``STOPPING=1``; stop accepting connections; WebSocket and SSE feeds
end; in-flight requests finish (at most ``SHUTDOWN_TIMEOUT_S``, then they are
cancelled unacknowledged); the database writes a final checkpoint; exit 0.
SIGHUP: re-read the configuration and apply the log level and the API keys; every
other setting takes effect at the next start.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import signal
from collections.abc import Callable
from typing import Final

from aiohttp import web

from s5vec.engine.memory import tune_malloc

from . import logs
from .app import create_app
from .config import Config, ConfigError
from .leadership import RESTART, reexec
from .runner import DaemonRunner
from .services import SERVICES
from .systemd import Notifier

log = logging.getLogger("s5vec")
SHUTDOWN_TIMEOUT_S: Final = 10.0  # in-flight requests get this long after SIGTERM (TimeoutStopSec is 120)


def serving_status(app: web.Application, host: str, port: int) -> str:
    services = app[SERVICES]
    if not services.is_open:
        return "loading data"
    return f"serving {len(services.db.collections)} collections on {host}:{port}"


def apply_reload(app: web.Application, current: Config, new: Config) -> Config:
    """Apply what a reload may change (log level and format, API keys); returns the config now in force."""
    logs.configure(new.log_level, new.log_format)
    app[SERVICES].keys.replace(new.auth.keys)
    applied = dataclasses.replace(current, log_level=new.log_level, log_format=new.log_format, auth=new.auth)
    if applied != new:
        log.warning("reload: only log_level, log_format and auth.keys change while running; "
                    "restart the daemon for the other changed settings")
    log.info("reloaded configuration: log_level=%s, %d API keys", new.log_level, len(new.auth.keys))
    log.debug("running with %s", applied.summary())
    return applied


class ListenError(Exception):
    """The HTTP socket could not be opened (address in use, permission denied)."""


async def serve(config: Config, reload: Callable[[], Config], notifier: Notifier) -> dict[str, str] | None:
    """Run until SIGTERM or SIGINT, or until the daemon must run again as another role
    (returns the environment for that, see :mod:`.leadership`); raises what opening the
    database or the socket raises."""
    loop = asyncio.get_running_loop()
    app = create_app(config, notifier=notifier)
    runner = DaemonRunner(app, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_S,
                          access_log=logging.getLogger("aiohttp.access") if config.http.access_log else None)
    stop = asyncio.Event()
    state: dict[str, Config] = {"config": config}
    listening = False

    def on_hup() -> None:
        if stop.is_set():
            log.info("SIGHUP while stopping: ignored")
            return
        notifier.reloading()
        try:
            state["config"] = apply_reload(app, state["config"], reload())
        except ConfigError as exc:
            log.error("reload failed, keeping the running configuration: %s", exc)
        except Exception:
            log.exception("reload failed, keeping the running configuration")
        if listening:
            notifier.ready(serving_status(app, config.http.host, config.http.port))
        else:
            notifier.status("loading data")

    def on_stop(signame: str) -> None:
        if not stop.is_set():
            log.info("%s: stopping (in-flight requests finish, then a final checkpoint)", signame)
            notifier.stopping("stopping: finishing in-flight requests")
        stop.set()

    async with notifier.watchdog_pings():
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_stop, signal.Signals(signum).name)
        loop.add_signal_handler(signal.SIGHUP, on_hup)  # a reload while loading must not kill us
        try:
            await runner.setup()  # opens the database
            # Everything loaded so far lives as long as the daemon: move it out of the
            # collector's generations, so a full collection no longer walks it (the stalls
            # behind the live-feed p99), and collect young objects less often.
            gc.collect()
            gc.freeze()
            gc.set_threshold(50_000, 20, 20)
            if not stop.is_set():  # a SIGTERM while loading: close again without ever listening
                site = web.TCPSite(runner, config.http.host, config.http.port)
                try:
                    await site.start()
                except OSError as exc:
                    raise ListenError(f"cannot listen on {config.http.host}:{config.http.port}: "
                                      f"{exc.strerror or exc}") from exc
                listening = True
                log.info("listening on http://%s:%d", config.http.host, config.http.port)
                notifier.ready(serving_status(app, config.http.host, config.http.port))
                restart = asyncio.ensure_future(app[RESTART].event.wait())
                stopping = asyncio.ensure_future(stop.wait())
                await asyncio.wait((restart, stopping), return_when=asyncio.FIRST_COMPLETED)
                for waiter in (restart, stopping):
                    waiter.cancel()
                if app[RESTART].env is not None:
                    notifier.stopping(f"restarting: {app[RESTART].why}")
                    stop.set()
        finally:
            if not stop.is_set():
                notifier.stopping("stopping after an error")
            try:
                await runner.cleanup()  # stop accepting, end feeds, drain requests, checkpoint, close
            finally:
                for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    loop.remove_signal_handler(signum)
                notifier.status("stopped")
                if listening:
                    log.info("stopped")
    return app[RESTART].env


def run(config: Config, reload: Callable[[], Config]) -> None:
    """Run :func:`serve` on a fresh (uv)loop with the notifier of ``$NOTIFY_SOCKET``."""
    tune_malloc()  # before any thread pool exists
    try:
        import uvloop
        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - non-Linux
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    notifier = Notifier.from_env()
    restart = None
    try:
        restart = loop.run_until_complete(serve(config, reload, notifier))
    finally:
        notifier.close()
        leftovers = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in leftovers:
            task.cancel()
        if leftovers:
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        asyncio.set_event_loop(None)
        loop.close()
    if restart is not None:
        reexec(restart)
