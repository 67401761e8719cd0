"""Logging to standard output for journald: plain text or one JSON object a line.

Under systemd (``$JOURNAL_STREAM`` names our stdout) every line starts with its syslog
priority (``<3>`` error ... ``<7>`` debug), which journald strips and stores, so
``journalctl -p warning`` works; elsewhere lines are left as they are.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import Any, Final, TextIO

FORMATS: Final = ("text", "json")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_PRIORITY: Final = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}
_HANDLER_NAME: Final = "s5vec-stdout"


def _priority(levelno: int) -> int:
    for level, priority in sorted(_PRIORITY.items(), reverse=True):
        if levelno >= level:
            return priority
    return 7


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message"[, "exception"]}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class _Prefixed(logging.Formatter):
    """Puts the syslog priority in front of another formatter's (possibly multi-line) output."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self._inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in self._inner.format(record).split("\n"))


def journald_stream(stream: TextIO, env: Mapping[str, str]) -> bool:
    """Whether ``stream`` is connected to journald (``$JOURNAL_STREAM`` is its ``dev:inode``)."""
    try:
        dev, _, inode = env.get("JOURNAL_STREAM", "").partition(":")
        info = os.fstat(stream.fileno())
        return bool(dev) and (info.st_dev, info.st_ino) == (int(dev), int(inode))
    except (OSError, ValueError, AttributeError):
        return False


def configure(level: str, fmt: str = "text", stream: TextIO | None = None,
              env: Mapping[str, str] | None = None) -> logging.Handler:
    """Route every log record to ``stream`` (stdout) in ``fmt``; replaces an earlier call's handler."""
    stream = sys.stdout if stream is None else stream
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)
    if journald_stream(stream, os.environ if env is None else env):
        formatter = _Prefixed(formatter)
    handler = logging.StreamHandler(stream)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    set_level(level)
    return handler


# Libraries whose INFO lines narrate their own bookkeeping ("Adding job tentatively"): shown
# at debug level only; their warnings and errors always.
_CHATTY: Final = ("apscheduler",)


def set_level(level: str) -> None:
    """Change the level of every logger that follows the root (SIGHUP reload)."""
    logging.getLogger().setLevel(level.upper())
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.DEBUG if level.upper() == "DEBUG" else logging.WARNING)
