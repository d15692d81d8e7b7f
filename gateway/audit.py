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

import contextlib
import contextvars
import datetime as dt
import getpass
import json
import logging
import secrets
import socket
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

    def _write(self, event: dict[str, Any], who: Actor | None) -> None:
        who = who or actor.get() or cli_actor()
        when = _now()
        event = {"time": _iso(when), "who": who.who, **event}
        if who.client:
            event["client"] = who.client
        if who.request_id:
            event["request_id"] = who.request_id
        day = when.strftime("%Y-%m-%d")
        name = f"{_stamp(when)}-{secrets.token_hex(3)}"
        value = json.dumps(event, separators=(",", ":"), default=str).encode("utf-8")
        try:
            self._ensure_day(day)
            self.directory.add(f"{rdn(A_CN, name)},{self._day_dn(day)}", OC_STATE,
                               {A_CN: [name], A_STATE: [value]})
        except MailgateError as exc:
            log.error("audit event %s not recorded: %s", event.get("operation"), exc.message)

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
