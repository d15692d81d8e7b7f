"""One way to wait in a test: poll a condition, bounded, and say what failed to happen."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], what: str, timeout: float = 10.0,
               interval: float = 0.05) -> T:
    """Call ``predicate`` every ``interval`` s until it returns something truthy; return that.

    After ``timeout`` s raise AssertionError naming ``what`` was awaited (and
    the last value seen). An exception from the predicate propagates at once:
    a predicate can ``assert`` that a process it waits on is still alive.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what} "
                                 f"(last seen: {value!r})")
        time.sleep(interval)
