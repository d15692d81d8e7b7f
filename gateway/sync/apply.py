"""Applying a :class:`~gateway.sync.plan.Plan` to LDAP.

Idempotent and safe to interrupt: every change is one LDAP operation (a
replace is a delete then an add), each writes only the attributes the plan
says differ, and a run killed half-way leaves a directory from which the
next run's plan finishes the job. The directory's one-entry-per-address RDN
rules out duplicates whatever happens.

Creates, updates and deletes touch one entry each, so they are sent
pipelined (:meth:`gateway.directory.Directory.write_many`): slapd syncs each
write to disk, and keeping several in flight makes the sync faster than
``ldapadd``. With ``MAILGATE_LDAP_TRANSACTION_SIZE`` set (off by default:
slapd 2.5.13 crashes under them) they go in LDAP transactions, each applied
whole or not at all; a refused one is replayed write by write, so every
outcome below is the same as without. Domain entries go first and replaces last, one by one (a
replace's delete must be done before its add).

* Entry-level failures (an entry made or removed meanwhile, a value slapd
  refuses) are collected and reported; the run goes on.
* LDAP going away or the lock being lost stops the run at once (``aborted``);
  the next run converges.
* Deletes carry an assertion that the entry is still sync-owned, so an entry
  an operator adopted (``mailgateOrigin: api``) meanwhile is never deleted.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ..audit import shown
from ..directory import Write, eq
from ..entries import (
    A_ORIGIN,
    A_TARGET,
    OC_ACCOUNT,
    OC_ALIAS,
    OC_FORWARDING,
    ORIGIN_SYNC,
    account_attrs,
    alias_attrs,
    field_changes,
)
from ..errors import (
    AssertionFailed,
    Conflict,
    DirectoryUnavailable,
    LockLost,
    MailgateError,
    NotFound,
)
from ..mail import MailDirectory
from .lock import LdapLock
from .plan import Create, Delete, Plan, Replace, Update
from .records import Want, WantAccount, WantBoth

log = logging.getLogger(__name__)

WINDOW = 16
MAX_ERRORS_KEPT = 1000
Progress = Callable[[str, int, int], None]


@dataclass
class ApplyResult:
    done: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    aborted: str | None = None


def entry_attrs(want: Want) -> tuple[str, dict[str, list[str]]]:
    """Object class and attributes of a new entry for ``want``."""
    if isinstance(want, WantBoth):
        _oc, attrs = entry_attrs(want.account)
        attrs["objectClass"] = [OC_FORWARDING]
        attrs[A_TARGET] = list(want.alias.targets)
        return OC_ACCOUNT, attrs
    if isinstance(want, WantAccount):
        return OC_ACCOUNT, account_attrs(want.address, want.password, want.whitelist or (),
                                         want.submission_disabled, ORIGIN_SYNC,
                                         want.subaddress_extension, want.quota or 0)
    return OC_ALIAS, alias_attrs(want.address, want.targets, ORIGIN_SYNC)


class Applier:
    def __init__(self, mail: MailDirectory, lock: LdapLock | None = None,
                 window: int = WINDOW, progress: Progress | None = None) -> None:
        self.mail = mail
        self.dir = mail.dir
        self.lock = lock
        self.window = window
        self.progress = progress
        self._done = self._total = self._progress_due = 0
        # What was changed, for the audit trail (gateway/audit.py): no values
        # of secret fields, only their names.
        self.done_changes: list[dict[str, object]] = []

    def apply(self, plan: Plan) -> ApplyResult:
        result = ApplyResult()
        self._done = 0
        self._total = (len(plan.domains) + len(plan.creates) + len(plan.updates)
                       + len(plan.deletes) + len(plan.replaces))
        try:
            for domain in plan.domains:
                self._check()
                self.mail.domains.ensure(domain)
                self._count(result, "domains_created")
            self._pipelined(plan, result)
            for replace in plan.replaces:
                self._check()
                self._outcome(result, functools.partial(self._replace, replace))
        except (DirectoryUnavailable, LockLost) as exc:
            result.aborted = exc.message
        return result

    def _audited(self, operation: str, address: str,
                 fields: dict[str, object] | None) -> None:
        change: dict[str, object] = {"operation": operation, "target": address}
        if fields:
            change["fields"] = shown(fields)
        self.done_changes.append(change)

    def _check(self) -> None:
        if self.lock is not None:
            self.lock.check()

    def _count(self, result: ApplyResult, *counters: str) -> None:
        result.done.update(counters)
        self._done += 1
        if self.progress is not None:
            self._progress_due -= 1
            if self._progress_due <= 0 or self._done >= self._total:
                self._progress_due = 500
                self.progress("applying", self._done, self._total)

    def _error(self, result: ApplyResult, message: str) -> None:
        result.error_count += 1
        if len(result.errors) < MAX_ERRORS_KEPT:
            result.errors.append(message)

    def _outcome(self, result: ApplyResult, change: Callable[[], tuple[str, ...]]) -> None:
        try:
            counters = change()
        except (DirectoryUnavailable, LockLost):
            raise
        except MailgateError as exc:
            self._error(result, exc.message)
            self._count(result)
            return
        self._count(result, *counters)

    # -- creates, updates, deletes: pipelined ------------------------------------

    def _writes(self, plan: Plan) -> Iterator[Write]:
        for create in plan.creates:
            self._check()
            object_class, attrs = entry_attrs(create.want)
            dn = self.mail.layout.address(create.want.address)
            yield _Tagged("add", dn, attrs, object_class, change=create)
        for update in plan.updates:
            self._check()
            # A role change may change the structural class: Relax Rules control.
            yield _Tagged("modify", update.existing.dn, field_changes(update.changes),
                          relax="kind" in update.changes, change=update)
        for delete in plan.deletes:
            self._check()
            yield _Tagged("delete", delete.existing.dn, assertion=eq(A_ORIGIN, ORIGIN_SYNC),
                          change=delete)

    def _pipelined(self, plan: Plan, result: ApplyResult) -> None:
        for write, error in self.dir.write_many(self._writes(plan), self.window):
            assert isinstance(write, _Tagged)
            change = write.change
            if isinstance(error, DirectoryUnavailable):
                raise error
            if isinstance(change, Create):
                self._outcome(result, functools.partial(self._created, change, error))
            elif isinstance(change, Update):
                self._outcome(result, functools.partial(self._updated, change, error))
            elif isinstance(change, Delete):
                self._outcome(result, functools.partial(self._deleted, change, error))

    def _created(self, create: Create, error: MailgateError | None) -> tuple[str, ...]:
        if isinstance(error, NotFound):
            # The domain entry went away since the plan was made: make it again.
            self.mail.domains.ensure(create.want.domain)
            try:
                self._add(create.want)
            except Conflict as exc:
                error = exc
            else:
                error = None
        if isinstance(error, Conflict):
            raise Conflict(f"{create.want.address}: created by someone else meanwhile; "
                           "the next run reconciles it")
        if error is not None:
            raise MailgateError(f"{create.want.address}: not created: {error.message}")
        log.debug("created %s %s", create.want.kind, create.want.address)
        self._audited(f"{create.want.kind}.create", create.want.address, _fields(create.want))
        return ("created",)

    def _updated(self, update: Update, error: MailgateError | None) -> tuple[str, ...]:
        old = update.existing
        if isinstance(error, NotFound):
            raise NotFound(f"{old.address}: deleted meanwhile; the next run recreates it")
        if error is not None:
            raise MailgateError(f"{old.address}: not updated: {error.message}")
        self._audited(f"{old.kind}.update", old.address, dict(update.changes))
        if update.takeover:
            log.info("took over %s %s (origin was %s): the JSON sync manages it now",
                     old.kind, old.address, old.origin or "none, made by hand")
            return ("updated", "taken_over")
        log.debug("updated %s %s: %s", old.kind, old.address, ", ".join(update.changes))
        return ("updated",)

    def _deleted(self, delete: Delete, error: MailgateError | None) -> tuple[str, ...]:
        old = delete.existing
        if error is None:
            log.info("deleted %s %s (no longer listed)", old.kind, old.address)
            self._audited(f"{old.kind}.delete", old.address, None)
            return ("deleted",)
        if isinstance(error, AssertionFailed | NotFound):
            log.info("did not delete %s: gone or no longer sync-owned", old.address)
            return ()
        raise MailgateError(f"{old.address}: not deleted: {error.message}")

    # -- replaces: one by one --------------------------------------------------------

    def _add(self, want: Want) -> None:
        object_class, attrs = entry_attrs(want)
        self.dir.add(self.mail.layout.address(want.address), object_class, attrs)

    def _replace(self, replace: Replace) -> tuple[str, ...]:
        old = replace.existing
        if not self.dir.delete_if(old.dn, eq(A_ORIGIN, ORIGIN_SYNC)):
            log.info("not replacing %s: no longer sync-owned or gone", old.address)
        try:
            self._add(replace.want)
        except NotFound:
            self.mail.domains.ensure(replace.want.domain)
            self._add(replace.want)
        except Conflict:
            raise Conflict(f"{old.address}: could not replace the {old.kind} with an "
                           f"{replace.want.kind} (it exists again)") from None
        log.info("replaced %s %s by an %s", old.kind, old.address, replace.want.kind)
        self._audited(f"{old.kind}.replace", old.address, _fields(replace.want))
        return ("replaced",)


@dataclass(frozen=True)
class _Tagged(Write):
    """A Write that remembers the plan change it carries out."""

    change: Create | Update | Delete | None = None


def _fields(want: Want) -> dict[str, object]:
    if isinstance(want, WantBoth):
        return {**_fields(want.account), **_fields(want.alias)}
    if isinstance(want, WantAccount):
        fields: dict[str, object] = {"password": None}
        if want.whitelist is not None:
            fields["spoofing_whitelist"] = ",".join(want.whitelist)
        if want.submission_disabled is not None:
            fields["submission_disabled"] = want.submission_disabled
        if want.subaddress_extension is not None:
            fields["subaddress_extension"] = want.subaddress_extension
        if want.quota is not None:
            fields["quota"] = want.quota
        return fields
    return {"to": ",".join(want.targets)}
