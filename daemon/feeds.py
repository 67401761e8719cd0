"""What WebSocket and SSE feeds share: the registry closed at shutdown, close codes and
the parsing of subscription options."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Final, Protocol

from s5vec.engine import EVENT_TYPES

from .errors import RequestInvalid

log = logging.getLogger(__name__)

GOING_AWAY: Final = 1001         # the daemon is shutting down
POLICY_VIOLATION: Final = 1008   # authentication failed or timed out; rate limit abused
MESSAGE_TOO_BIG: Final = 1009    # a frame larger than ws.max_message_bytes
TOO_SLOW: Final = 4008           # more than events.max_lag_events behind: resume with `since`
CLOSE_GRACE_S: Final = 5.0       # a peer that does not take our close frame in this time is cut off
FRAME_EVENTS: Final = 256        # events per pushed frame / SSE write (a frame holds more only if one batch does)
FRAME_BYTES: Final = 512 << 10   # ... and about this many bytes at most


class Stream(Protocol):
    async def shut_down(self) -> None:
        """End the stream because the daemon is stopping (WebSocket: close 1001)."""


class Feeds:
    """Every open WebSocket connection and SSE stream, so shutdown can end them all."""

    def __init__(self) -> None:
        self.open: set[Stream] = set()

    def __len__(self) -> int:
        return len(self.open)

    async def shut_down(self) -> None:
        streams = list(self.open)
        if streams:
            log.info("closing %d live feeds (going away)", len(streams))
        results = await asyncio.gather(*(s.shut_down() for s in streams), return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                log.warning("closing a feed failed: %s", result)


def parse_types(values: Iterable[str] | None, field: str = "types") -> frozenset[str] | None:
    """Event type names (None = all); unknown names are a 400 naming ``field``."""
    if values is None:
        return None
    wanted = frozenset(v for v in values if v)
    unknown = sorted(wanted - set(EVENT_TYPES))
    if unknown:
        raise RequestInvalid(f"unknown event type {unknown[0]!r}; known: {', '.join(EVENT_TYPES)}", field)
    return wanted or None
