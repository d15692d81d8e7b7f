"""Failed authentications counted per client address, in a sliding window."""

from __future__ import annotations

import threading
import time
from collections import deque

_MAX_TRACKED = 100_000


class FailureLimiter:
    """Sliding-window count of failed authentications per client address."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, client: str, now: float) -> deque[float] | None:
        times = self._failures.get(client)
        if times is not None:
            while times and times[0] <= now - self.window:
                times.popleft()
            if not times:
                del self._failures[client]
                return None
        return times

    def retry_after(self, client: str) -> int | None:
        """Seconds until ``client`` may try again, or None if it may now."""
        now = time.monotonic()
        with self._lock:
            times = self._recent(client, now)
            if times is None or len(times) < self.limit:
                return None
            return max(1, int(times[0] + self.window - now) + 1)

    def record_failure(self, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._failures) >= _MAX_TRACKED:
                for key in list(self._failures)[: _MAX_TRACKED // 10]:
                    self._recent(key, now)
            times = self._recent(client, now)
            if times is None:
                times = self._failures[client] = deque(maxlen=self.limit)
            times.append(now)
