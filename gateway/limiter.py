"""Failed authentications counted per client network, one count per deployment.

Clients are grouped by prefix (:meth:`FailureLimiter.key`): an IPv4 address
counts on its own (``MAILGATE_AUTH_FAIL_PREFIX_V4``, default 32), an IPv6
address with the rest of its /64 (``MAILGATE_AUTH_FAIL_PREFIX_V6``), because a
client given a /64 can send from any of its 2^64 addresses. The address is the
one :mod:`gateway.proxies` found behind the trusted proxies.

Every gateway process and host shares the count, because it lives in the
directory (the only state mailgate has): each failure adds one value to the
entry ``cn=auth-failures <key>,ou=gateway,<base>`` (``mailgateStateObject``,
one ``description`` value per failure: its time and a nonce). Adding a value
is atomic on the server, so concurrent workers never lose a count, and no
read comes before the write. Values older than the window are removed when
the entry is next read, and entries whose last failure is older than the
window are deleted (:meth:`sweep`, run a window after each write).

What a stranger may make the directory write is bounded
(:mod:`gateway.api.auth`): a failure is written here only within the
deployment's budget (:class:`gateway.audit.Budget`); beyond it, it is counted
in this process's memory (:meth:`count_here`), which the check adds to the
directory's count. Only failures cost LDAP operations: a request with a valid
token never reaches the limiter. An operator locked out by a mistake waits
for the window (``MAILGATE_AUTH_FAIL_WINDOW``) or deletes the entry
(``ldapdelete "cn=auth-failures 192.0.2.1,ou=gateway,<base>"``).
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import threading
import time

from .directory import Directory, Filter, all_of, at_most, eq, starts_with
from .entries import A_CN, A_DESCRIPTION, OC_STATE, Layout
from .errors import Conflict, MailgateError, NotFound

PREFIX = "auth-failures "
# Networks this process counts in memory at most; the oldest are forgotten first.
MAX_LOCAL = 65_536
log = logging.getLogger(__name__)


class FailureLimiter:
    """Sliding-window count of failed authentications per client network, in LDAP."""

    def __init__(self, directory: Directory, limit: int, window: float,
                 prefix_v4: int = 32, prefix_v6: int = 64) -> None:
        self.dir = directory
        self.layout = Layout(directory.base_dn)
        self.limit = limit
        self.window = window
        self.prefix_v4, self.prefix_v6 = prefix_v4, prefix_v6
        self._lock = threading.Lock()
        self._here: dict[str, list[float]] = {}
        self._sweeper: threading.Timer | None = None

    def key(self, client: str) -> str:
        """What ``client`` is counted as: its address, or its network (``2001:db8::/64``)."""
        try:
            ip = ipaddress.ip_address(client.strip().strip("[]"))
        except ValueError:
            return client[:100] or "unknown"
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        length = self.prefix_v4 if ip.version == 4 else self.prefix_v6
        if length >= ip.max_prefixlen:
            return str(ip)
        return str(ipaddress.ip_network(f"{ip}/{length}", strict=False))

    def _dn(self, key: str) -> str:
        return self.layout.state(PREFIX + key[:100])

    def retry_after(self, key: str) -> int | None:
        """Seconds until ``key`` may try again, or None if it may now."""
        return self.check(key)[0]

    def check(self, key: str) -> tuple[int | None, int]:
        """(seconds until ``key`` may try again or None, failures in the window)."""
        now = time.time()
        recent = self._counted_here(key, now)
        dn = self._dn(key)
        entry = self.dir.read(dn, eq("objectClass", OC_STATE), [A_DESCRIPTION])
        stale: list[str] = []
        for value in entry.all(A_DESCRIPTION) if entry is not None else ():
            try:
                when = float(value.partition(" ")[0])
            except ValueError:
                when = 0.0
            if when > now - self.window:
                recent.append(when)
            else:
                stale.append(value)
        if stale:
            self.dir.delete_values(dn, {A_DESCRIPTION: stale})
        if len(recent) < self.limit:
            return None, len(recent)
        # The window frees a slot when the limit-th newest failure ages out.
        recent.sort(reverse=True)
        oldest_counted = recent[self.limit - 1]
        return max(1, int(oldest_counted + self.window - now) + 1), len(recent)

    def record_failure(self, key: str) -> None:
        """One failure of ``key`` in the directory (within the budget)."""
        dn = self._dn(key)
        value = [f"{time.time():.3f} {secrets.token_hex(4)}"]
        try:
            self.dir.add_values(dn, {A_DESCRIPTION: value})
        except NotFound:
            try:
                self.dir.add(dn, OC_STATE, {A_CN: [PREFIX + key[:100]],
                                            A_DESCRIPTION: value})
            except Conflict:   # another worker made it meanwhile
                self.dir.add_values(dn, {A_DESCRIPTION: value})
        self._sweep_later()

    def count_here(self, key: str) -> None:
        """One failure of ``key`` counted in this process only (the budget is spent)."""
        now = time.time()
        with self._lock:
            times = self._here.pop(key, [])
            times = [t for t in times if t > now - self.window]
            times.append(now)
            self._here[key] = times   # re-inserted: the dict's order is the age
            if len(self._here) > MAX_LOCAL:
                for old in list(self._here)[:len(self._here) - MAX_LOCAL]:
                    del self._here[old]

    def _counted_here(self, key: str, now: float) -> list[float]:
        with self._lock:
            times = [t for t in self._here.get(key, ()) if t > now - self.window]
            if not times:
                self._here.pop(key, None)
            return times

    # -- expiry ----------------------------------------------------------------------

    def _expired(self, now: float) -> Filter:
        """Counter entries whose last change (so their last failure) is a window old."""
        stamp = time.strftime("%Y%m%d%H%M%SZ", time.gmtime(now - self.window))
        return all_of(eq("objectClass", OC_STATE), starts_with(A_CN, PREFIX),
                      at_most("modifyTimestamp", stamp))

    def sweep(self) -> tuple[int, int]:
        """Delete the expired counter entries: (deleted, counter entries left)."""
        now = time.time()
        expired = self._expired(now)
        counters = all_of(eq("objectClass", OC_STATE), starts_with(A_CN, PREFIX))
        deleted = 0
        for entry in self.dir.children(self.layout.gateway, expired, ["1.1"]):
            # Only if still expired: a failure added meanwhile keeps it.
            deleted += self.dir.delete_if(entry.dn, expired)
        left = len(self.dir.children(self.layout.gateway, counters, ["1.1"]))
        return deleted, left

    def _sweep_later(self) -> None:
        with self._lock:
            if self._sweeper is not None:
                return
            self._sweeper = threading.Timer(self.window + 1.0, self._sweep_now)
            self._sweeper.daemon = True
            self._sweeper.start()

    def _sweep_now(self) -> None:
        with self._lock:
            self._sweeper = None
        try:
            _deleted, left = self.sweep()
        except MailgateError as exc:
            log.warning("expired failure counts not deleted: %s", exc.message)
            return
        if left:
            self._sweep_later()
