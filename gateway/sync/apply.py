"""Applying a :class:`~gateway.sync.plan.Plan` to LDAP.

Idempotent and safe to interrupt: every change is one LDAP operation (a
replace is a delete then an add), each writes only the attributes the plan
says differ, and a run killed half-way leaves a directory from which the
next run's plan finishes the job. The directory's one-entry-per-address RDN
rules out duplicates whatever happens.

Writes go out on several pooled connections at once: slapd syncs each write
to disk, and overlapping them (and ldap3's pure-Python encoding) roughly
doubles throughput. Domain entries are added first, one by one.

* Entry-level failures (an entry made or removed meanwhile, a value slapd
  refuses) are collected and reported; the run goes on.
* LDAP going away or the lock being lost stops the run at once (``aborted``);
  nothing half-written remains beyond whole operations.
* Deletes carry an assertion that the entry is still sync-owned, so an entry
  an operator adopted (``mailgateOrigin: api``) meanwhile is never deleted.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from .. import passwords
from ..addresses import Address
from ..directory import eq
from ..errors import Conflict, DirectoryUnavailable, MailgateError, NotFound
from ..mail import (
    A_DISABLED,
    A_MAIL,
    A_ORIGIN,
    A_PASSWORD,
    A_SENDER,
    A_TARGET,
    OC_ACCOUNT,
    OC_ALIAS,
    MailDirectory,
)
from .document import Want, WantAccount
from .lock import LdapLock, LockLost
from .plan import ORIGIN_SYNC, Create, Delete, Plan, Replace, Update

log = logging.getLogger(__name__)

WORKERS = 8
MAX_ERRORS_KEPT = 1000
Progress = Callable[[str, int, int], None]
Task = Callable[[], tuple[str, ...]]   # returns the counters to bump


@dataclass
class ApplyResult:
    done: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    aborted: str | None = None


def _bool_attr(value: bool | None) -> list[str]:
    return ["TRUE"] if value else []


def entry_attrs(want: Want) -> tuple[str, dict[str, list[str]]]:
    """Object class and attributes of a new entry for ``want``."""
    if isinstance(want, WantAccount):
        return OC_ACCOUNT, {
            A_MAIL: [want.address],
            A_PASSWORD: [passwords.to_ldap(want.password)],
            A_SENDER: list(want.whitelist or ()),
            A_DISABLED: _bool_attr(want.submission_disabled),
            A_ORIGIN: [ORIGIN_SYNC],
        }
    return OC_ALIAS, {A_MAIL: [want.address], A_TARGET: list(want.targets),
                      A_ORIGIN: [ORIGIN_SYNC]}


def change_attrs(changes: dict[str, object]) -> dict[str, list[str]]:
    """LDAP replacements for a plan's field changes."""
    attrs: dict[str, list[str]] = {}
    for name, value in changes.items():
        if name == "password":
            attrs[A_PASSWORD] = [passwords.to_ldap(str(value))]
        elif name == "spoofing_whitelist":
            attrs[A_SENDER] = [str(v) for v in value]  # type: ignore[attr-defined]
        elif name == "submission_disabled":
            attrs[A_DISABLED] = _bool_attr(bool(value))
        elif name == "to":
            attrs[A_TARGET] = [str(v) for v in value]  # type: ignore[attr-defined]
        elif name == "origin":
            attrs[A_ORIGIN] = [str(value)]
    return attrs


class Applier:
    def __init__(self, mail: MailDirectory, lock: LdapLock | None = None,
                 workers: int = WORKERS, progress: Progress | None = None) -> None:
        self.mail = mail
        self.dir = mail.dir
        self.lock = lock
        self.workers = max(1, min(workers, mail.dir.pool_size))
        self.progress = progress
        self._errors_lock = threading.Lock()

    def apply(self, plan: Plan) -> ApplyResult:
        result = ApplyResult()
        total = plan.writes
        try:
            for domain in plan.domains:
                self._check()
                self.mail._ensure_domain(domain)
                result.done["domains_created"] += 1
            self._run_parallel(self._tasks(plan), result, total)
        except (DirectoryUnavailable, LockLost) as exc:
            result.aborted = exc.message
        return result

    def _check(self) -> None:
        if self.lock is not None:
            self.lock.check()

    def _tasks(self, plan: Plan) -> Iterator[Task]:
        for create in plan.creates:
            yield functools.partial(self._create, create)
        for replace in plan.replaces:
            yield functools.partial(self._replace, replace)
        for update in plan.updates:
            yield functools.partial(self._update, update)
        for delete in plan.deletes:
            yield functools.partial(self._delete, delete)

    def _run_parallel(self, tasks: Iterator[Task], result: ApplyResult, total: int) -> None:
        done = result.done["domains_created"]
        fatal: MailgateError | None = None
        running: set[Future[tuple[str, ...]]] = set()

        def collect() -> None:
            nonlocal done, fatal
            finished, _pending = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                running.discard(future)
                done += 1
                try:
                    result.done.update(future.result())
                except (DirectoryUnavailable, LockLost) as exc:
                    fatal = fatal or exc
                except MailgateError as exc:
                    self._error(result, exc.message)
            if self.progress is not None:
                self.progress("applying", done, total)

        with ThreadPoolExecutor(self.workers, thread_name_prefix="mailgate-sync") as pool:
            # Bounded submission: 100 000 changes never sit in memory as futures.
            for task in tasks:
                if fatal is not None:
                    break
                self._check()
                running.add(pool.submit(task))
                if len(running) >= self.workers * 4:
                    collect()
            while running:
                collect()
        if fatal is not None:
            raise fatal

    def _error(self, result: ApplyResult, message: str) -> None:
        with self._errors_lock:
            result.error_count += 1
            if len(result.errors) < MAX_ERRORS_KEPT:
                result.errors.append(message)

    # -- one change each ------------------------------------------------------

    def _add(self, want: Want) -> None:
        object_class, attrs = entry_attrs(want)
        dn = self.mail.entry_dn(Address(want.name, want.domain))
        try:
            self.dir.add(dn, object_class, attrs)
        except NotFound:
            # The domain entry went away since the plan was made: make it again.
            self.mail._ensure_domain(want.domain)
            self.dir.add(dn, object_class, attrs)

    def _create(self, create: Create) -> tuple[str, ...]:
        try:
            self._add(create.want)
        except Conflict:
            raise Conflict(f"{create.want.address}: created by someone else meanwhile; "
                           "the next run reconciles it") from None
        log.debug("created %s %s", create.want.kind, create.want.address)
        return ("created",)

    def _replace(self, replace: Replace) -> tuple[str, ...]:
        old = replace.existing
        if not self.dir.delete_if(old.dn, eq(A_ORIGIN, ORIGIN_SYNC)):
            log.info("not replacing %s: no longer sync-owned or gone", old.address)
        try:
            self._add(replace.want)
        except Conflict:
            raise Conflict(f"{old.address}: could not replace the {old.kind} with an "
                           f"{replace.want.kind} (it exists again)") from None
        log.info("replaced %s %s by an %s", old.kind, old.address, replace.want.kind)
        return ("replaced",)

    def _update(self, update: Update) -> tuple[str, ...]:
        old = update.existing
        try:
            self.dir.modify(old.dn, change_attrs(update.changes))
        except NotFound:
            raise NotFound(f"{old.address}: deleted meanwhile; the next run recreates it") \
                from None
        if update.takeover:
            log.info("took over %s %s (origin was %s): the JSON sync manages it now",
                     old.kind, old.address, old.origin or "none, made by hand")
            return ("updated", "taken_over")
        log.debug("updated %s %s: %s", old.kind, old.address, ", ".join(update.changes))
        return ("updated",)

    def _delete(self, delete: Delete) -> tuple[str, ...]:
        old = delete.existing
        if self.dir.delete_if(old.dn, eq(A_ORIGIN, ORIGIN_SYNC)):
            log.info("deleted %s %s (no longer listed)", old.kind, old.address)
            return ("deleted",)
        log.info("did not delete %s: gone or no longer sync-owned", old.address)
        return ()
