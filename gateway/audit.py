"""The audit trail: who changed what, when and from where, kept in the directory.

Every change made through the API, the JSON sync or the command line, every
failed authentication and every lockout is an event. Events live in LDAP,
the only state mailgate has, so every gateway instance writes to and reads
the same trail, and it survives restarts and upgrades::

    ou=audit,ou=gateway,<base>
      ou=2026-12-01                       one container a day (UTC)
        cn=20261201T004512.123456Z-1a2b   mailgateStateObject; mailgateState holds
                                          the event as JSON

An event says who (``admin``, ``token <id>``, ``sync run <id>``, ``cli
<user>``), what (an operation such as ``account.create``, the address, the
names of the fields that changed and the new values of those that are not
secret: never a password or a hash), when, from where (the client's address)
and the request id. The sync writes one entry per 500 changes of a run, not
one per change, so a 100 000-entry import costs 200 writes more, not 100 000.

Why entries the gateway writes rather than OpenLDAP's accesslog overlay: the
overlay knows only the bind DN (every gateway change is ``cn=gateway``), not
the token, the sync run or the client address behind it, and it records the
new ``userPassword`` hash of every password change, which the trail must not
hold. Changes made with LDAP tools directly are not in this trail; enable
slapo-accesslog for those (docs/operations.md).

Retention (``MAILGATE_AUDIT_RETENTION_DAYS``, default 90): when a day's
container is made, the containers of days older than that are deleted.
Audit writes never fail the change they describe (that change is done): a
failure is logged.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import datetime as dt
import getpass
import json
import logging
import secrets
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .directory import Directory, eq, rdn
from .entries import A_CN, A_STATE, OC_STATE, Layout
from .errors import Conflict, MailgateError, NotFound

log = logging.getLogger(__name__)

SYNC_CHUNK = 500
OC_OU = "organizationalUnit"
# Field values that are recorded; everything else is recorded by name only.
SHOWN_FIELDS = frozenset({"spoofing_whitelist", "submission_disabled", "to", "domains",
                          "read_only", "subaddress_extension", "quota", "max_accounts",
                          "max_aliases", "default_quota", "max_quota"})


@dataclass(frozen=True)
class Actor:
    """Who acts, from where, in which request."""

    who: str
    client: str | None = None
    request_id: str | None = None


def cli_actor() -> Actor:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return Actor(f"cli {user}@{socket.gethostname()}")


actor: contextvars.ContextVar[Actor | None] = contextvars.ContextVar("mailgate_actor",
                                                                     default=None)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _stamp(when: dt.datetime) -> str:
    return when.strftime("%Y%m%dT%H%M%S.%fZ")


def _iso(when: dt.datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def shown(fields: Mapping[str, object]) -> dict[str, object]:
    """The changed fields as recorded: names always, values only if not secret."""
    return {name: (value if name in SHOWN_FIELDS else None) for name, value in fields.items()}


@dataclass
class AuditLog:
    directory: Directory
    retention_days: int = 90
    _days_made: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.base = f"ou=audit,{Layout(self.directory.base_dn).gateway}"

    # -- writing -----------------------------------------------------------------

    def record(self, operation: str, target: str = "", fields: Mapping[str, object] | None
               = None, who: Actor | None = None, **detail: object) -> None:
        """One event; ``who`` defaults to the actor of this context (the request's)."""
        event: dict[str, Any] = {"operation": operation}
        if target:
            event["target"] = target
        if fields:
            event["fields"] = shown(fields)
        event.update({k: v for k, v in detail.items() if v is not None})
        self._write(event, who)

    def record_changes(self, changes: Iterable[Mapping[str, object]],
                       who: Actor | None = None) -> None:
        """Many changes of one actor (a sync run), in entries of SYNC_CHUNK each."""
        chunk: list[Mapping[str, object]] = []
        for change in changes:
            chunk.append(change)
            if len(chunk) >= SYNC_CHUNK:
                self._write({"operation": "sync.changes", "changes": chunk}, who)
                chunk = []
        if chunk:
            self._write({"operation": "sync.changes", "changes": chunk}, who)

    def claim(self, slot: str, day: dt.datetime, operation: str, who: Actor,
              **detail: object) -> bool:
        """One event as the entry named ``slot`` in ``day``'s container, unless
        that entry exists: False then (someone holds the slot), nothing written.

        The directory's refusal to add a DN twice makes the slot a
        deployment-wide claim that costs no write when it fails (:class:`Budget`).
        """
        event: dict[str, Any] = {"operation": operation,
                                 **{k: v for k, v in detail.items() if v is not None}}
        try:
            self._add(event, who, slot, day.strftime("%Y-%m-%d"))
        except Conflict:
            return False
        except MailgateError as exc:
            log.error("audit event %s not recorded: %s", operation, exc.message)
        return True

    def _write(self, event: dict[str, Any], who: Actor | None) -> None:
        try:
            self._add(event, who)
        except MailgateError as exc:
            log.error("audit event %s not recorded: %s", event.get("operation"), exc.message)

    def _add(self, event: dict[str, Any], who: Actor | None, name: str | None = None,
             day: str | None = None) -> None:
        who = who or actor.get() or cli_actor()
        when = _now()
        event = {"time": _iso(when), "who": who.who, **event}
        if who.client:
            event["client"] = who.client
        if who.request_id:
            event["request_id"] = who.request_id
        day = day or when.strftime("%Y-%m-%d")
        name = name or f"{_stamp(when)}-{secrets.token_hex(3)}"
        value = json.dumps(event, separators=(",", ":"), default=str).encode("utf-8")
        self._ensure_day(day)
        dn = f"{rdn(A_CN, name)},{self._day_dn(day)}"
        attrs: dict[str, list[str | bytes]] = {A_CN: [name], A_STATE: [value]}
        try:
            self.directory.add(dn, OC_STATE, attrs)
        except NotFound:   # the day's container (or ou=audit) was deleted meanwhile
            self._days_made.discard(day)
            self._ensure_day(day)
            self.directory.add(dn, OC_STATE, attrs)

    def _day_dn(self, day: str) -> str:
        return f"{rdn('ou', day)},{self.base}"

    def _ensure_day(self, day: str) -> None:
        if day in self._days_made:
            return
        for dn, ou in ((self.base, "audit"), (self._day_dn(day), day)):
            with contextlib.suppress(Conflict):
                self.directory.add(dn, OC_OU, {"ou": [ou]})
        self._days_made.add(day)
        self.prune()

    def prune(self, today: dt.date | None = None) -> int:
        """Delete the days older than the retention; how many days were deleted."""
        today = today or _now().date()
        oldest = today - dt.timedelta(days=self.retention_days)
        deleted = 0
        for day in self.days():
            try:
                expired = dt.date.fromisoformat(day) < oldest
            except ValueError:
                continue
            if expired:
                for entry in self.directory.find(self._day_dn(day), eq("objectClass", OC_STATE),
                                                 ["1.1"]):
                    self.directory.delete_if_leaf(entry.dn)
                self.directory.delete_if_leaf(self._day_dn(day))
                deleted += 1
        if deleted:
            log.info("audit: deleted %d day(s) older than %d days", deleted,
                     self.retention_days)
        return deleted

    # -- reading -----------------------------------------------------------------

    def days(self) -> list[str]:
        found = self.directory.find(self.base, eq("objectClass", OC_OU), ["ou"])
        return sorted(d for e in found if e.dn.lower() != self.base.lower()
                      for d in e.all("ou") if d != "audit")

    def read(self, since: dt.datetime | None = None,
             domains: frozenset[str] | None = None) -> Iterator[dict[str, Any]]:
        """Events from ``since`` on, oldest first; with ``domains``, only those that
        touch them (a sync entry is cut down to its changes in those domains)."""
        first = since.date().isoformat() if since else ""
        for day in self.days():
            if day < first:
                continue
            try:
                entries = self.directory.find(self._day_dn(day), eq("objectClass", OC_STATE),
                                              [A_STATE])
            except NotFound:
                continue
            events = []
            for entry in entries:
                raw = entry.attrs.get(A_STATE)
                if not raw:
                    continue
                try:
                    events.append(json.loads(raw[0]))
                except ValueError:
                    continue
            for event in sorted(events, key=lambda e: str(e.get("time", ""))):
                if since and str(event.get("time", "")) < _iso(since):
                    continue
                if domains is not None:
                    event = _within(event, domains)
                    if event is None:
                        continue
                yield event


# -- what strangers and probing tokens may cost the trail ------------------------

def interval_start(interval: int, now: float | None = None) -> float:
    """The start of the ``interval``-second period ``now`` falls in (the same on every host)."""
    now = time.time() if now is None else now
    return now - now % interval


class Budget:
    """At most ``size`` audit events of one ``kind`` per interval, for the whole deployment.

    The events are entries with fixed names (``<interval start>-<kind>-<n>``,
    n < size): every process of every gateway claims the same names, and the
    directory adds each DN once, so ``size`` entries per interval is a bound
    whatever the number of processes. A process that found a name taken goes
    on to the next one, and knows the budget is spent once it has tried them
    all: a spent budget costs no LDAP operation at all.
    """

    def __init__(self, audit: AuditLog, kind: str, size: int, interval: int) -> None:
        self.audit, self.kind, self.size, self.interval = audit, kind, size, interval
        self._lock = threading.Lock()
        self._period = 0.0
        self._next = 0

    def record(self, operation: str, who: Actor, **detail: object) -> bool:
        """The event in the trail if the budget allows (True); False: spent, nothing written."""
        start = interval_start(self.interval)
        day = dt.datetime.fromtimestamp(start, dt.UTC)
        while True:
            with self._lock:
                if start != self._period:
                    self._period, self._next = start, 0
                slot = self._next
                if slot >= self.size:
                    return False
                self._next += 1
            if self.audit.claim(f"{_stamp(day)}-{self.kind}-{slot:05d}", day, operation, who,
                                **detail):
                return True


@dataclass
class _Count:
    count: int = 0
    clients: set[str] = field(default_factory=set)
    groups: collections.Counter[str] = field(default_factory=collections.Counter)


class Tally:
    """Events counted in memory and written as one audit event per key and interval.

    ``add`` costs no LDAP operation; at the end of each interval (a timer, or
    the first ``add`` of the next interval) each key's count is written as one
    ``operation`` event: how many, from how many client addresses, and the
    groups (prefixes, paths) seen most. Memory is bounded: at most
    ``MAX_CLIENTS`` addresses and ``MAX_GROUPS`` groups are told apart per key.
    """

    MAX_CLIENTS = 100_000
    MAX_GROUPS = 10_000
    TOP = 10

    def __init__(self, audit: AuditLog, operation: str, interval: int, counted: str,
                 grouped_by: str) -> None:
        self.audit, self.operation, self.interval = audit, operation, interval
        self.counted, self.grouped_by = counted, grouped_by
        self._lock = threading.Lock()
        self._period = 0.0
        self._counts: dict[str, _Count] = {}
        self._timer: threading.Timer | None = None

    def add(self, who: str, group: str, client: str | None) -> None:
        start = interval_start(self.interval)
        with self._lock:
            done = self._take() if self._counts and start != self._period else None
            self._period = start
            count = self._counts.setdefault(who, _Count())
            count.count += 1
            if client and len(count.clients) < self.MAX_CLIENTS:
                count.clients.add(client)
            if group in count.groups or len(count.groups) < self.MAX_GROUPS:
                count.groups[group] += 1
            else:
                count.groups["(others)"] += 1
            if self._timer is None:
                self._timer = threading.Timer(start + self.interval - time.time() + 0.05,
                                              self.flush)
                self._timer.daemon = True
                self._timer.start()
        if done is not None:
            self._write(*done)

    def flush(self) -> None:
        """Write what was counted (the timer calls this at the end of the interval)."""
        with self._lock:
            self._timer = None
            done = self._take() if self._counts else None
        if done is not None:
            self._write(*done)

    def _take(self) -> tuple[float, dict[str, _Count]]:
        counts, self._counts = self._counts, {}
        return self._period, counts

    def _write(self, start: float, counts: dict[str, _Count]) -> None:
        since = dt.datetime.fromtimestamp(start, dt.UTC)
        until = dt.datetime.fromtimestamp(start + self.interval, dt.UTC)
        for who, count in counts.items():
            top = [{self.grouped_by: group, self.counted: n}
                   for group, n in count.groups.most_common(self.TOP)]
            detail: dict[str, object] = {self.counted: count.count, "top": top}
            self.audit.record(self.operation, "", None, Actor(who), since=_iso(since),
                              until=_iso(until), addresses=len(count.clients), **detail)


def _domain_of(target: object) -> str:
    return str(target).rpartition("@")[2].lower()


def _within(event: dict[str, Any], domains: frozenset[str]) -> dict[str, Any] | None:
    if "changes" in event:
        changes = [c for c in event["changes"] if _domain_of(c.get("target", "")) in domains]
        return {**event, "changes": changes} if changes else None
    target = event.get("target")
    # An account's or alias's address, or a domain itself (domain.* events).
    names = "@" in str(target) or str(event.get("operation", "")).startswith("domain.")
    if target and names and _domain_of(target) in domains:
        return event
    return None
