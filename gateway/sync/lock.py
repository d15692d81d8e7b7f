"""A cluster-wide lock held in LDAP, so one sync runs at a time everywhere.

The lock is the entry ``cn=<name>,ou=gateway,<base>`` (``mailgateStateObject``)
with ``mailgateLockOwner`` (host, PID namespace, PID, process start time and a
random nonce) and ``mailgateLockExpires``:

* acquire = add the entry; slapd refuses a second add, so one process wins;
* a holder renews the expiry every ``ttl / 4`` while it works; renewal and
  release carry an LDAP assertion (RFC 4528) on the owner, so a process that
  lost the lock (it stalled past expiry and someone took over) can neither
  extend nor delete the new holder's lock;
* a lock past its expiry, or whose holder is a process of this host (same PID
  namespace) that no longer exists, is taken over by a modify asserting the
  old owner *and* the old expiry: of several processes racing for a stale
  lock exactly one modify succeeds, the others fail atomically.

Expiry compares times of different hosts: their clocks must agree to well
within the TTL (NTP).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import secrets
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..directory import Directory, all_of, eq
from ..entries import A_CN, A_LOCK_EXPIRES, A_LOCK_OWNER, OC_STATE, Layout
from ..errors import Conflict, DirectoryUnavailable, LockLost, MailgateError, NotFound

log = logging.getLogger(__name__)

DEFAULT_TTL = 120.0
_TIME = "%Y%m%d%H%M%SZ"


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as stored."""

    owner: str
    expires: dt.datetime
    raw_expires: str

    @property
    def host(self) -> str:
        return self.owner.split("|", 1)[0]

    @property
    def pid(self) -> int | None:
        parts = self.owner.split("|")
        return int(parts[2]) if len(parts) >= 5 and parts[2].isdigit() else None

    def as_json(self) -> dict[str, object]:
        return {"host": self.host, "pid": self.pid,
                "expires": self.expires.isoformat().replace("+00:00", "Z")}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _format(when: dt.datetime) -> str:
    """generalizedTime, rounded *up* to the second: others never see an expiry
    earlier than the one this process works with."""
    if when.microsecond:
        when = when.replace(microsecond=0) + dt.timedelta(seconds=1)
    return when.astimezone(dt.UTC).strftime(_TIME)


def _parse(value: str) -> dt.datetime:
    try:
        return dt.datetime.strptime(value, _TIME).replace(tzinfo=dt.UTC)
    except ValueError:
        return dt.datetime.min.replace(tzinfo=dt.UTC)  # unreadable: treat as expired


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid").removeprefix("pid:").strip("[]")
    except OSError:
        return "?"


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (tells a reused PID apart), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes().decode("ascii", "replace")
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else "?"


def _host() -> str:
    name = socket.gethostname().encode("ascii", "replace").decode("ascii")
    return name.replace("|", "_")[:100] or "?"


def owner_id() -> str:
    """``host|pidns|pid|start|nonce``: unique for this holder."""
    pid = os.getpid()
    return (f"{_host()}|{_pid_namespace()}|{pid}|{_start_time(pid) or '?'}|"
            f"{secrets.token_hex(8)}")


def holder_is_dead(owner: str) -> bool:
    """True only if ``owner`` is certainly a process of this host that is gone."""
    parts = owner.split("|")
    if len(parts) != 5 or not parts[2].isdigit():
        return False
    host, pidns, pid, start, _nonce = parts
    if host != _host() or pidns != _pid_namespace() or pidns == "?" or start == "?":
        return False
    return _start_time(int(pid)) != start


class LdapLock:
    """One named lock. Not re-entrant; one instance per attempt is simplest."""

    def __init__(self, directory: Directory, name: str, ttl: float = DEFAULT_TTL) -> None:
        self.dir = directory
        self.name = name
        self.dn = Layout(directory.base_dn).state(name)
        self.ttl = ttl
        self.owner = owner_id()
        self._expires: dt.datetime | None = None
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        # True while a release could not reach LDAP: the entry may still be
        # there in our name until retry_release() succeeds (or it expires).
        self.release_pending = False

    # -- state -------------------------------------------------------------

    @property
    def held(self) -> bool:
        return self._expires is not None and not self._lost.is_set()

    def check(self) -> None:
        """Raise LockLost unless this process still holds the lock."""
        if self._expires is None:
            raise LockLost("the sync lock is not held")
        if self._lost.is_set() or _now() >= self._expires:
            self._lost.set()
            raise LockLost("the sync lock was lost (taken over or not renewed in time); "
                           "stopping")

    def holder(self) -> Holder | None:
        """Who holds the lock now (None: nobody); DirectoryUnavailable."""
        entry = self.dir.read(self.dn, eq("objectClass", OC_STATE), [A_LOCK_OWNER, A_LOCK_EXPIRES])
        if entry is None:
            return None
        raw = entry.first(A_LOCK_EXPIRES) or ""
        return Holder(entry.first(A_LOCK_OWNER) or "", _parse(raw), raw)

    # -- acquire / renew / release ------------------------------------------

    def acquire(self) -> bool:
        """Take the lock if free or stale; False if someone else holds it."""
        for _attempt in range(3):
            expires = _now() + dt.timedelta(seconds=self.ttl)
            try:
                self.dir.add(self.dn, OC_STATE, {
                    A_CN: [self.name], A_LOCK_OWNER: [self.owner],
                    A_LOCK_EXPIRES: [_format(expires)]})
            except Conflict:
                pass
            else:
                self._held(expires)
                return True
            current = self.holder()
            if current is None:
                continue  # released meanwhile: try the add again
            stale = current.expires <= _now() or holder_is_dead(current.owner)
            if not stale:
                return False
            expires = _now() + dt.timedelta(seconds=self.ttl)
            try:
                taken = self.dir.modify_if(
                    self.dn, {A_LOCK_OWNER: [self.owner], A_LOCK_EXPIRES: [_format(expires)]},
                    all_of(eq(A_LOCK_OWNER, current.owner),
                           eq(A_LOCK_EXPIRES, current.raw_expires)))
            except NotFound:
                continue
            if taken:
                log.warning("took over the stale lock %s from %s", self.dn, current.owner)
                self._held(expires)
                return True
            return False  # another process took it over first
        return False

    def _held(self, expires: dt.datetime) -> None:
        self._expires = expires
        self._lost.clear()

    def renew(self) -> None:
        """Push the expiry out by a TTL; LockLost if the lock is no longer ours."""
        self.check()
        expires = _now() + dt.timedelta(seconds=self.ttl)
        try:
            ours = self.dir.modify_if(self.dn, {A_LOCK_EXPIRES: [_format(expires)]},
                                      eq(A_LOCK_OWNER, self.owner))
        except NotFound:
            ours = False
        if not ours:
            self._lost.set()
            raise LockLost("the sync lock was taken over by another process")
        self._expires = expires

    def release(self) -> None:
        """Give the lock up (only if still ours). Never raises.

        If LDAP cannot be reached, ``release_pending`` is set: call
        :meth:`retry_release` once it is back (else the lock only expires).
        """
        self._stop_renewing()
        if self._expires is None:
            return
        self._expires = None
        try:
            if not self.dir.delete_if(self.dn, eq(A_LOCK_OWNER, self.owner)):
                log.warning("the lock %s was no longer ours at release", self.dn)
        except MailgateError as exc:
            self.release_pending = True
            log.warning("could not release the lock %s (%s); retrying until LDAP is back",
                        self.dn, exc.message)

    def retry_release(self) -> bool:
        """A release that failed, again: True once the lock is no longer ours
        in LDAP (deleted now, or taken over meanwhile); False if LDAP is still
        unreachable. Never raises."""
        if not self.release_pending:
            return True
        try:
            self.dir.delete_if(self.dn, eq(A_LOCK_OWNER, self.owner))
        except MailgateError:
            return False
        self.release_pending = False
        log.info("released the lock %s left behind by an LDAP outage", self.dn)
        return True

    # -- keeping it while working -------------------------------------------------

    def start_renewing(self) -> None:
        """Renew in a background thread every ttl/4 until release()."""
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew_loop, name="mailgate-lock-renew",
                                         daemon=True)
        self._renewer.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                self.renew()
            except LockLost as exc:
                log.error("%s", exc.message)
                return
            except DirectoryUnavailable as exc:
                # Keep trying until the expiry passes; check() then says lost.
                log.warning("could not renew the sync lock: %s", exc.message)

    def _stop_renewing(self) -> None:
        self._stop.set()
        renewer, self._renewer = self._renewer, None
        if renewer is not None and renewer is not threading.current_thread():
            renewer.join(10)

    @contextlib.contextmanager
    def kept(self) -> Iterator[LdapLock]:
        """Hold an acquired lock for a block: renew meanwhile, release after."""
        self.start_renewing()
        try:
            yield self
        finally:
            self.release()
