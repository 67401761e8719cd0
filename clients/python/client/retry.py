"""When and how long the client waits before trying a call again."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

RETRY_STATUSES: Final = frozenset({429, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter: before retry ``n`` (0-based) wait a random
    time in ``[0, min(max_delay, base_delay * 2**n)]``, or what the server's
    ``Retry-After`` asks for (capped at ``max_delay``). ``retries`` is how many retries
    follow the first attempt (0 = never retry)."""

    retries: int = 3
    base_delay: float = 0.1
    max_delay: float = 5.0

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        if retry_after is not None:
            try:
                return min(self.max_delay, max(0.0, float(retry_after)))
            except ValueError:
                pass  # an HTTP date: fall back to our own backoff
        return random.uniform(0.0, min(self.max_delay, self.base_delay * (2 ** attempt)))
