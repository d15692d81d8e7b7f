"""Failed authentications counted per client address, one count per deployment.

Every gateway process and host shares the count, because it lives in the
directory (the only state mailgate has): each failure adds one value to the
entry ``cn=auth-failures <address>,ou=gateway,<base>`` (``mailgateStateObject``,
one ``description`` value per failure: its time and a nonce). Adding a value
is atomic on the server, so concurrent workers never lose a count, and no
read comes before the write. Values older than the window are removed when
the entry is next read.

Only failures cost LDAP operations: a request with a valid token never reaches
the limiter (:func:`gateway.api.auth.authenticate`). An operator locked out by
a mistake waits for the window (``MAILGATE_AUTH_FAIL_WINDOW``) or deletes the
entry (``ldapdelete "cn=auth-failures 192.0.2.1,ou=gateway,<base>"``).
"""

from __future__ import annotations

import secrets
import time

from .directory import Directory, eq
from .entries import A_CN, A_DESCRIPTION, OC_STATE, Layout
from .errors import Conflict, NotFound

PREFIX = "auth-failures "


class FailureLimiter:
    """Sliding-window count of failed authentications per client address, in LDAP."""

    def __init__(self, directory: Directory, limit: int, window: float) -> None:
        self.dir = directory
        self.layout = Layout(directory.base_dn)
        self.limit = limit
        self.window = window

    def _dn(self, client: str) -> str:
        return self.layout.state(PREFIX + client[:100])

    def retry_after(self, client: str) -> int | None:
        """Seconds until ``client`` may try again, or None if it may now."""
        return self.check(client)[0]

    def check(self, client: str) -> tuple[int | None, int]:
        """(seconds until ``client`` may try again or None, failures in the window)."""
        dn = self._dn(client)
        entry = self.dir.read(dn, eq("objectClass", OC_STATE), [A_DESCRIPTION])
        if entry is None:
            return None, 0
        now = time.time()
        recent: list[tuple[float, str]] = []
        stale: list[tuple[float, str]] = []
        for value in entry.all(A_DESCRIPTION):
            try:
                when = float(value.partition(" ")[0])
            except ValueError:
                when = 0.0
            (recent if when > now - self.window else stale).append((when, value))
        if stale:
            self.dir.delete_values(dn, {A_DESCRIPTION: [v for _w, v in stale]})
        if len(recent) < self.limit:
            return None, len(recent)
        # The window frees a slot when the limit-th newest failure ages out.
        recent.sort(reverse=True)
        oldest_counted = recent[self.limit - 1][0]
        return max(1, int(oldest_counted + self.window - now) + 1), len(recent)

    def record_failure(self, client: str) -> None:
        dn = self._dn(client)
        value = [f"{time.time():.3f} {secrets.token_hex(4)}"]
        try:
            self.dir.add_values(dn, {A_DESCRIPTION: value})
        except NotFound:
            try:
                self.dir.add(dn, OC_STATE, {A_CN: [PREFIX + client[:100]],
                                            A_DESCRIPTION: value})
            except Conflict:   # another worker made it meanwhile
                self.dir.add_values(dn, {A_DESCRIPTION: value})
