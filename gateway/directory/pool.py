"""Bound python-ldap connections, pooled per process, and error mapping.

python-ldap drives libldap, which encodes and decodes in C: on this machine
it read one entry in 0.11 ms where ldap3 took 0.64 ms, and 100 000 entries
in 1.1 s where ldap3 took 6.2 s (ldapsearch: 0.6 s).

Bounds and outages (docs/reliability.md):

* every wait on the server is bounded by ``MAILGATE_LDAP_TIMEOUT``: the TCP
  connect (``OPT_NETWORK_TIMEOUT``) and every answer (``result3`` timeout,
  the connection's ``timeout``), so a frozen slapd (SIGSTOP: connects still
  succeed, nothing answers) costs a request at most that long per operation;
  an operation that timed out is not retried (it may have been applied);
* an outage is a state of the pool: the first failure logs one line
  ("directory unavailable: <reason>"), the first success after it one more
  ("directory available again"); no line per request. While the directory
  is down one operation at a time (the probe) tries the server, every other
  one gets DirectoryUnavailable at once, so a dead or frozen directory never
  ties up every request thread of a worker.

Failover: ``MAILGATE_LDAP_URL`` may list several servers (providers that
replicate each other). The pool uses one at a time, the *current* one; when a
new connection to it cannot be made, the next ones are tried in order and the
first that binds becomes current, and idle connections to the old one are
dropped. It is sticky: a server that comes back is not used again until the
current one fails in turn, so the gateway never flaps between providers and
never reads from one what it just wrote to the other (docs/scaling.md).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import ldap as _pl

from .. import metrics
from ..errors import (
    AssertionFailed,
    Conflict,
    DirectoryUnavailable,
    Invalid,
    MailgateError,
    NotFound,
)
from ..settings import Settings

log = logging.getLogger("gateway.directory")
T = TypeVar("T")

# The server is gone or cannot serve now: the operation may be retried.
DOWN = (_pl.SERVER_DOWN, _pl.TIMEOUT, _pl.CONNECT_ERROR, _pl.UNAVAILABLE, _pl.BUSY)


class _Stale(Exception):
    """A pooled connection was dead; retry on a new one."""


REFUSED = "the directory refused the gateway's credentials"


class Outage:
    """Whether the directory is down, for one pool; logs the transitions only."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reason: str | None = None
        self.since = 0.0
        self._probing = False

    def enter(self) -> bool:
        """May an operation try the server now? True: it is the outage's probe.

        DirectoryUnavailable while another operation probes a down directory.
        """
        if self.reason is None:
            return False
        with self._lock:
            if self.reason is None:
                return False
            if self._probing:
                raise DirectoryUnavailable(f"LDAP server unreachable ({self.reason})",
                                           outage=self.reason)
            self._probing = True
            return True

    def leave(self, probe: bool) -> None:
        if probe:
            with self._lock:
                self._probing = False

    def down(self, reason: str) -> None:
        with self._lock:
            if self.reason is not None:
                return
            self.reason, self.since = reason, time.monotonic()
        log.error("directory unavailable: %s", reason)

    def up(self) -> None:
        if self.reason is None:
            return
        with self._lock:
            if self.reason is None:
                return
            took = time.monotonic() - self.since
            self.reason = None
        log.warning("directory available again (after %.1f s)", took)


def close(conn: Any) -> None:
    with contextlib.suppress(Exception):
        conn.unbind_s()


def result_code(exc: Exception) -> int | None:
    info = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
    code = info.get("result")
    return code if isinstance(code, int) else None


def unavailable(exc: Exception) -> DirectoryUnavailable:
    if isinstance(exc, DOWN):
        metrics.get().ldap_errors.labels("down").inc()
        return DirectoryUnavailable(f"LDAP server unreachable ({exc.__class__.__name__})",
                                    outage=exc.__class__.__name__)
    metrics.get().ldap_errors.labels("unexpected").inc()
    log.error("unexpected LDAP error: %s", exc.__class__.__name__)
    return DirectoryUnavailable(f"unexpected LDAP error ({exc.__class__.__name__})")


def _is_outage(exc: BaseException) -> str | None:
    """The reason, if ``exc`` says the server is down or not answering."""
    if isinstance(exc, DOWN):
        return str(exc.__class__.__name__)
    if isinstance(exc, DirectoryUnavailable):
        return exc.outage
    return None


def write_error(exc: Exception) -> MailgateError:
    """The server's refusal of a write as a gateway error."""
    if isinstance(exc, _pl.ALREADY_EXISTS):
        return Conflict("the entry already exists")
    if isinstance(exc, _pl.TYPE_OR_VALUE_EXISTS):
        return Conflict("the value exists already")
    if isinstance(exc, _pl.NO_SUCH_OBJECT):
        return NotFound("no such entry")
    if isinstance(exc, _pl.NO_SUCH_ATTRIBUTE):
        return NotFound("no such value")
    if isinstance(exc, _pl.ASSERTION_FAILED):
        return AssertionFailed("the entry no longer matches")
    if isinstance(exc, _pl.INVALID_DN_SYNTAX | _pl.INVALID_SYNTAX | _pl.CONSTRAINT_VIOLATION
                  | _pl.OBJECT_CLASS_VIOLATION | _pl.UNDEFINED_TYPE):
        return Invalid(f"the directory refused the value ({exc.__class__.__name__})")
    return unavailable(exc)


class Pool:
    """Up to ``ldap_pool_size`` bound connections as the gateway's identity."""

    def __init__(self, settings: Settings) -> None:
        if settings.ldap_url is None or settings.ldap_password is None:
            raise ValueError("Directory needs a resolved LDAP URL and password")
        self._pool_wait = metrics.get().ldap_pool_wait   # observed on every operation
        self.urls = settings.ldap_urls
        self._current = 0
        self._switch = threading.Lock()
        self.base_dn = settings.ldap_base_dn
        self.bind_dn = settings.gateway_dn
        self._password = settings.ldap_password
        self.timeout = settings.ldap_timeout
        self.starttls = settings.ldap_starttls
        self.ca_file = settings.ldap_ca_file
        # A borrow takes a permit (at most ldap_pool_size connections in use),
        # then the most recently returned idle connection, if any: few
        # connections stay open. A C SimpleQueue and a list (whose pop and
        # append are atomic) instead of a BoundedSemaphore and a LifoQueue,
        # which were 6 % of a GET's CPU (docs/benchmarks.md, profiles).
        self._permits: queue.SimpleQueue[bool] = queue.SimpleQueue()
        for _ in range(settings.ldap_pool_size):
            self._permits.put(True)
        self._idle: list[Any] = []
        self.outage = Outage()

    @contextlib.contextmanager
    def guarded(self) -> Iterator[None]:
        """Around every use of the server: fail fast while another operation
        probes a down directory, and keep the outage state (one log line per
        transition)."""
        probe = self.outage.enter()
        try:
            yield
        except BaseException as exc:
            self._note(exc)
            raise
        else:
            self.outage.up()
        finally:
            self.outage.leave(probe)

    def _note(self, exc: BaseException) -> None:
        reason = _is_outage(exc)
        if reason is not None:
            self.outage.down(reason)
        elif isinstance(exc, _pl.LDAPError | MailgateError) and not isinstance(
                exc, DirectoryUnavailable):
            self.outage.up()   # the server answered (no such object, ...)

    @property
    def url(self) -> str:
        """The server in use now."""
        return self.urls[self._current]

    def open(self, timeout: float | None = None, url: str | None = None) -> Any:
        """An unbound connection (to ``url``, default the current server) with the
        gateway's options (TLS verified); every wait on it bounded by ``timeout``
        (default: the pool's)."""
        timeout = self.timeout if timeout is None else timeout
        url = url or self.url
        conn = _pl.initialize(url)
        conn.mailgate_url = url
        conn.set_option(_pl.OPT_PROTOCOL_VERSION, 3)
        conn.set_option(_pl.OPT_REFERRALS, 0)
        conn.set_option(_pl.OPT_NETWORK_TIMEOUT, timeout)
        conn.set_option(_pl.OPT_TIMEOUT, timeout)
        # python-ldap's default for every result3() and *_s() call: without it
        # they wait for ever on a server that accepted the connection and froze.
        conn.timeout = timeout
        if self.ca_file is not None:
            conn.set_option(_pl.OPT_X_TLS_CACERTFILE, str(self.ca_file))
        if url.startswith("ldaps:") or self.starttls:
            conn.set_option(_pl.OPT_X_TLS_REQUIRE_CERT, _pl.OPT_X_TLS_DEMAND)
            conn.set_option(_pl.OPT_X_TLS_NEWCTX, 0)
        if self.starttls:
            conn.start_tls_s()
        return conn

    def connect(self, timeout: float | None = None) -> Any:
        """A new connection bound as the gateway: to the current server, else to
        the next one that binds (which becomes current); DirectoryUnavailable if none."""
        start = self._current
        failure: _pl.LDAPError | None = None
        for step in range(len(self.urls)):
            index = (start + step) % len(self.urls)
            conn = None
            try:
                conn = self.open(timeout, self.urls[index])
                conn.simple_bind_s(self.bind_dn, self._password)
            except _pl.INVALID_CREDENTIALS:
                # An outage like any other (logged once by Outage, 503, not ready),
                # whose log line says what to check.
                metrics.get().ldap_errors.labels("credentials").inc()
                if conn is not None:
                    close(conn)
                refused = (f"{REFUSED} ({self.bind_dn}): check MAILGATE_LDAP_BIND_DN and "
                           "MAILGATE_LDAP_PASSWORD")
                raise DirectoryUnavailable(refused, outage=refused) from None
            except _pl.LDAPError as exc:
                if conn is not None:
                    close(conn)
                failure = exc
                continue
            if index != start:
                self._fail_over(start, index)
            return conn
        name = failure.__class__.__name__ if failure is not None else "no server"
        raise DirectoryUnavailable(f"LDAP server unreachable ({name})", outage=name)

    def _fail_over(self, old: int, new: int) -> None:
        with self._switch:
            if self._current != old:
                return  # another thread switched already
            self._current = new
        log.warning("LDAP server %s unreachable: now using %s", self.urls[old], self.urls[new])
        self.close()  # idle connections to the old server

    def probe(self, timeout: float) -> None:
        """Bind and read the base entry on a fresh connection, all within about
        ``timeout`` seconds (readiness); DirectoryUnavailable otherwise."""
        with self.guarded():
            deadline = time.monotonic() + timeout
            conn = self.connect(timeout)
            try:
                conn.timeout = max(0.1, deadline - time.monotonic())
                conn.search_ext_s(self.base_dn, _pl.SCOPE_BASE, "(objectClass=*)", ["1.1"],
                                  timeout=conn.timeout)
            except _pl.NO_SUCH_OBJECT:
                pass   # an answer all the same (the ACLs may hide the base entry)
            except _pl.LDAPError as exc:
                raise unavailable(exc) from None
            finally:
                close(conn)

    def read_base(self, attr: str, timeout: float, url: str) -> list[str]:
        """The values of ``attr`` (an operational one: contextCSN) of the base
        entry on ``url`` (the provider in use, or a replica), read on a fresh
        connection bound as the gateway, all within about ``timeout`` seconds;
        DirectoryUnavailable otherwise. Leaves the pool's outage state alone:
        a replica down is not the gateway's outage."""
        deadline = time.monotonic() + timeout
        conn = None
        try:
            conn = self.open(timeout, url)
            conn.simple_bind_s(self.bind_dn, self._password)
            conn.timeout = max(0.1, deadline - time.monotonic())
            found = conn.search_ext_s(self.base_dn, _pl.SCOPE_BASE, "(objectClass=*)", [attr],
                                      timeout=conn.timeout)
        except _pl.NO_SUCH_OBJECT:
            return []
        except _pl.LDAPError as exc:
            raise unavailable(exc) from None
        finally:
            if conn is not None:
                close(conn)
        values: list[str] = []
        for _dn, attrs in found:
            for name, raw in (attrs or {}).items():
                if name.lower() == attr.lower():
                    values += [v.decode("utf-8", "replace") for v in raw]
        return values

    @contextlib.contextmanager
    def borrow(self, pooled: bool = True) -> Iterator[tuple[Any, bool]]:
        """A connection and whether it was reused; ``pooled=False``: a fresh one,
        closed afterwards."""
        waiting = time.monotonic()
        try:
            self._permits.get(timeout=self.timeout)
        except queue.Empty:
            metrics.get().ldap_errors.labels("pool_exhausted").inc()
            raise DirectoryUnavailable("all LDAP connections are busy") from None
        self._pool_wait.observe(time.monotonic() - waiting)
        conn: Any = None
        probe = False
        try:
            probe = self.outage.enter()
            reused = False
            if pooled:
                with contextlib.suppress(IndexError):
                    conn, reused = self._idle.pop(), True
            if conn is None:
                conn = self.connect()
            yield conn, reused
        except BaseException as exc:
            self._note(exc)
            # A server's answer (no such object, already exists, ...) leaves the
            # connection usable; anything else may have broken it.
            if conn is not None and (not pooled or isinstance(exc, DOWN)
                                     or not isinstance(exc, _pl.LDAPError | MailgateError)):
                close(conn)
                conn = None
            raise
        else:
            self.outage.up()
        finally:
            self.outage.leave(probe)
            if conn is not None:
                if pooled and getattr(conn, "mailgate_url", None) == self.url:
                    self._idle.append(conn)
                else:
                    close(conn)
            self._permits.put(True)

    def run(self, operation: Callable[[Any], T], pooled: bool = True) -> T:
        """Run ``operation`` on a connection, mapping python-ldap errors.

        A pooled connection may have died while idle (slapd restarted): then
        every idle connection is dropped (they all died with that server) and
        the operation runs once more on a new connection, so no request after
        a restart fails. The first attempt never reached the server, so the
        retry cannot apply a write twice.
        ``operation`` handles the server answers it expects; any other LDAP
        error becomes DirectoryUnavailable.
        """
        for attempt in (1, 2):
            try:
                with self.borrow(pooled) as (conn, reused):
                    try:
                        return operation(conn)
                    except DOWN as exc:
                        # A timeout is no dead idle connection: the request
                        # reached the server, which did not answer in time.
                        if reused and attempt == 1 and not isinstance(exc, _pl.TIMEOUT):
                            raise _Stale() from None
                        raise
            except _Stale:
                metrics.get().ldap_reconnects.inc()
                self.close()
                continue
            except _pl.LDAPError as exc:
                raise unavailable(exc) from None
        raise DirectoryUnavailable("LDAP server unreachable", outage="down")  # pragma: no cover

    def idle_count(self) -> int:
        """How many open connections wait in the pool."""
        return len(self._idle)

    def close(self) -> None:
        while True:
            try:
                close(self._idle.pop())
            except IndexError:
                return
