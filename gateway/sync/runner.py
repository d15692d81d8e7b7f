"""One sync run: lock, fetch, validate, read, plan, guard, apply, record.

:class:`SyncRunner` is what the scheduler, the CLI and the API call. One
concern at about 490 lines: the life of a run, from the lock to its record,
including what an outage in the middle leaves to settle. A run:

1. takes the cluster-wide lock (``cn=sync-lock,ou=gateway,<base>``); if
   someone else holds it the run is ``busy`` and does nothing;
2. fetches every source, conditionally (ETag / Last-Modified / same SHA-256
   as last applied). If all are unchanged the run is ``unchanged``: no mail
   entry is read or written. If any changed, the unchanged ones are fetched
   again in full (a document is never cached outside LDAP, and LDAP is no
   place for it);
3. parses and validates all documents; any fetch or parse failure makes the
   run ``failed`` with nothing changed;
4. reads the listed domains (one paged search), plans, and refuses
   (``refused``) a plan deleting more than the configured share of the
   sync-managed entries unless forced;
5. applies; ``applied``, or ``partial`` if some entries were skipped (invalid,
   conflicting) or failed, or ``failed`` if LDAP went away or the lock was
   lost part-way (the next run converges);
6. records the run in LDAP (``GET /sync/status``) and the sources'
   validators, after a complete run and after one that was ``partial`` only
   because entries were skipped (SPEC.md section 9). Such a run's skip report
   is kept with the validators and carried over by every ``unchanged`` run
   while the documents stay the same: a producer whose document always holds
   one bad entry costs a conditional request (304) per interval, no entry is
   read, and the status still lists the skipped entries and why. A run where
   changes *failed* records no validators: the failure may be transient, and
   the next run plans again.

A run that LDAP went away under can neither record itself nor release its
lock. Both are then kept in this process and retried every
:data:`SETTLE_INTERVAL` seconds (and at every status read) until LDAP is
back, for at most :data:`SETTLE_FOR` seconds: the run appears in the status
and the lock is gone within about a second of LDAP's return, instead of a
"running" ghost answering 409 until the lock expires. The status never
reports as running a lock whose holder is known to be gone (this process's
own unreleased lock, or a dead process of this host).

Validators are ignored (a *full* run) when asked (``--full``, ``"full":
true``), by a forced run, and once every :data:`FULL_EVERY` seconds, so drift
made by hand in LDAP or conflicts that went away are reconciled (and the
skip report made again) even while the documents stay the same.

Scheduled runs in every gateway process skip a tick when any process ran less
than 90 % of the interval ago (read from LDAP, no write), so N workers on M
hosts together sync about once per interval.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import metrics
from ..audit import Actor, AuditLog
from ..directory import Directory
from ..errors import Conflict, DirectoryUnavailable, MailgateError
from ..mail import MailDirectory
from ..settings import Settings
from .apply import Applier
from .current import read_current
from .document import build_desired
from .fetch import (
    Fetched,
    Fetcher,
    FetchError,
    SourceFetcher,
    Validators,
    redact_url,
    source_key,
)
from .limits import apply_within_limits, preview_limits
from .lock import LdapLock, holder_is_dead
from .plan import Plan, make_plan, refusal
from .records import DocumentError, Skip, UnknownKey
from .state import StateStore

log = logging.getLogger(__name__)

LOCK_NAME = "sync-lock"
FULL_EVERY = 24 * 3600
RECENT_SHARE = 0.9
SHOWN_SKIPS = 100
SHOWN_ERRORS = 50
SETTLE_INTERVAL = 0.5
SETTLE_FOR = 3600.0
Progress = Callable[[str, int, int], None]

# Exit codes of ``mailgate sync`` by result.
EXIT_CODES = {"applied": 0, "unchanged": 0, "planned": 0, "skipped": 0, "partial": 1,
              "failed": 1, "refused": 3, "busy": 4}


def _iso(when: float) -> str:
    return dt.datetime.fromtimestamp(when, dt.UTC).isoformat(timespec="seconds") \
        .replace("+00:00", "Z")


@dataclass
class RunReport:
    id: str
    trigger: str
    started: float
    result: str = "running"
    reason: str = ""
    duration: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    skipped: list[Skip] = field(default_factory=list)
    unknown_keys: list[UnknownKey] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    sources: list[dict[str, Any]] = field(default_factory=list)
    forced: bool = False
    full: bool = False
    phases: dict[str, float] = field(default_factory=dict)   # seconds per phase
    plan: Plan | None = None
    # An unchanged run's skip report, carried over from the partial run
    # whose validators it matched: {"run", "skipped", "skipped_total"}.
    carried: dict[str, Any] | None = None

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.phases[name] = round(time.monotonic() - start, 3)

    def finish(self, result: str, reason: str = "") -> RunReport:
        self.result = result
        self.reason = reason
        self.duration = round(time.time() - self.started, 3)
        return self

    @property
    def exit_code(self) -> int:
        if self.carried is not None:
            return EXIT_CODES["partial"]   # the documents still hold skipped entries
        return EXIT_CODES.get(self.result, 1)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "trigger": self.trigger, "started": _iso(self.started),
            "duration": self.duration, "result": self.result, "reason": self.reason,
            "forced": self.forced, "full": self.full, "counts": self.counts,
            "phases": self.phases, "sources": self.sources,
            "skipped": [s.as_json() for s in self.skipped[:SHOWN_SKIPS]],
            "skipped_total": len(self.skipped),
            "unknown_keys": [u.as_json() for u in self.unknown_keys],
            "errors": self.errors[:SHOWN_ERRORS], "errors_total": self.error_count,
        }

    def skip_report(self) -> dict[str, Any]:
        """What an unchanged run carries over of this partial run."""
        return {"run": self.id, "skipped": [s.as_json() for s in self.skipped[:SHOWN_SKIPS]],
                "skipped_total": len(self.skipped)}


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a run validates, reads and plans.

    Those phases build hundreds of thousands of tuples (a million for a big
    document) and no reference cycles; with the collector on, its passes
    over the growing heap took a quarter of their time. Reference counting
    still frees everything as usual.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _entries(count: int) -> str:
    return f"{count} {'entry' if count == 1 else 'entries'}"


def new_run_id(now: float) -> str:
    return dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y%m%dT%H%M%SZ-") \
        + secrets.token_hex(3)


class SyncRunner:
    """Runs syncs for one process; safe to share between its threads."""

    def __init__(self, settings: Settings, directory: Directory | None = None,
                 fetcher: SourceFetcher | None = None, lock_ttl: float | None = None,
                 sources: Sequence[str] | None = None) -> None:
        """``sources``: what ``fetcher`` fetches (default: ``MAILGATE_JSON_URLS``);
        ``mailgate sync --file`` passes a path and a :class:`.fetch.FileFetcher`."""
        self.settings = settings
        self.sources = tuple(sources) if sources is not None else settings.json_urls
        # Its own connections: a long sync must not hold slots of the pool the
        # API's requests in the same process use.
        self._own_directory = directory is None
        self.directory = directory or Directory(settings)
        self.audit = AuditLog(self.directory, settings.audit_retention_days)
        self.mail = MailDirectory(self.directory, settings.password_rounds, self.audit)
        self.state = StateStore(self.directory)
        self.fetcher: SourceFetcher = fetcher or Fetcher(settings)
        self.lock_ttl = lock_ttl
        # The lock lives on the first listed provider only, never failed over:
        # two providers each accept an add of the same entry before either
        # has replicated the other's, so a lock on "whichever is up" could be
        # held twice (docs/scaling.md). No lock, no sync: it waits for that
        # provider, while the API fails over.
        pinned = settings.pinned()
        self._lock_directory = self.directory if pinned is settings else Directory(pinned)
        self.scheduler: Any = None
        self._background: list[threading.Thread] = []
        # Left behind by an LDAP outage: runs not yet recorded, locks not yet
        # released (see the module docstring).
        self._unsettled_runs: list[dict[str, Any]] = []
        self._unsettled_locks: list[LdapLock] = []
        self._settle_lock = threading.Lock()
        self._settler: threading.Thread | None = None
        self._closing = threading.Event()

    def close(self, wait: float = 60.0) -> None:
        """Stop the scheduler, wait for runs of this process, close connections."""
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=True)
            self.scheduler = None
        for thread in self._background:
            thread.join(wait)
        self._closing.set()
        settler = self._settler
        if settler is not None:
            settler.join(wait)
        self.fetcher.close()
        if self._own_directory:
            self.directory.close()
        if self._lock_directory is not self.directory:
            self._lock_directory.close()

    def new_lock(self) -> LdapLock:
        if self.lock_ttl is not None:
            return LdapLock(self._lock_directory, LOCK_NAME, self.lock_ttl)
        return LdapLock(self._lock_directory, LOCK_NAME)

    # -- entry points -----------------------------------------------------------

    def run(self, trigger: str = "cli", *, force: bool = False, full: bool = False,
            scheduled: bool = False, progress: Progress | None = None,
            lock: LdapLock | None = None, run_id: str | None = None) -> RunReport:
        """One complete run (see the module docstring). Never raises MailgateError."""
        now = time.time()
        report = RunReport(run_id or new_run_id(now), trigger, now, forced=force)
        try:
            if scheduled and self._ran_recently(self.state.load_state(), now):
                return report.finish("skipped", "another process ran the sync recently")
            if self._unsettled_locks:
                self._settle()     # our own lock left by an outage is not "another sync"
            lock = lock or self.new_lock()
            if not lock.held and not lock.acquire():
                holder = lock.holder()
                who = f" (held by {holder.host}, pid {holder.pid})" if holder else ""
                log.log(logging.DEBUG if scheduled else logging.INFO,
                        "sync not started: another sync is running%s", who)
                return report.finish("busy", f"another sync is running{who}")
        except DirectoryUnavailable as exc:
            log.error("sync not started: %s", exc.message)
            return report.finish("failed", exc.message)
        recorded = True
        with lock.kept():
            try:
                self._locked_run(report, lock, full, scheduled, progress)
            except MailgateError as exc:   # LDAP down, lock lost, ...
                report.finish("failed", exc.message)
            if report.result not in ("unchanged", "skipped"):
                recorded = self.state.record_run(report.as_json())
        if not recorded or lock.release_pending:
            self._leave_unsettled(None if recorded else report.as_json(), lock)
        self._log(report)
        return report

    # -- what an LDAP outage left behind ------------------------------------------

    def _leave_unsettled(self, run: dict[str, Any] | None, lock: LdapLock) -> None:
        with self._settle_lock:
            if run is not None:
                self._unsettled_runs.append(run)
            if lock.release_pending:
                self._unsettled_locks.append(lock)
            if self._settler is None or not self._settler.is_alive():
                self._settler = threading.Thread(target=self._settle_loop, daemon=True,
                                                 name="mailgate-sync-settle")
                self._settler.start()
        log.warning("LDAP went away during the sync: its record and lock are kept here "
                    "until LDAP is back")

    def _settle(self) -> bool:
        """Record the runs and release the locks an outage left; True when none is left."""
        with self._settle_lock:
            self._unsettled_locks = [lock for lock in self._unsettled_locks
                                     if not lock.retry_release()]
            while self._unsettled_runs:
                if not self.state.record_run(self._unsettled_runs[0]):
                    break
                log.info("recorded the sync run %s after the LDAP outage",
                         self._unsettled_runs[0].get("id"))
                self._unsettled_runs.pop(0)
            return not self._unsettled_runs and not self._unsettled_locks

    def _settle_loop(self) -> None:
        deadline = time.monotonic() + SETTLE_FOR
        while time.monotonic() < deadline:   # bounded; then the lock has long expired
            if self._settle():
                return
            if self._closing.wait(SETTLE_INTERVAL):
                self._settle()
                return
        log.error("gave up recording a sync run after %.0f s without LDAP", SETTLE_FOR)

    def _ours_unreleased(self, owner: str) -> bool:
        with self._settle_lock:
            return any(lock.owner == owner for lock in self._unsettled_locks)

    def plan_only(self, progress: Progress | None = None) -> RunReport:
        """A dry run: fetch all, validate, read, plan. Writes nothing, takes no lock."""
        now = time.time()
        report = RunReport(new_run_id(now), "dry-run", now, full=True)
        try:
            fetched = self._fetch_all({}, report)
            plan = self._plan(fetched, progress, report)
            preview_limits(plan, self.mail.domains)
        except (FetchError, DocumentError) as exc:
            return report.finish("failed", str(exc))
        except DirectoryUnavailable as exc:
            return report.finish("failed", exc.message)
        why = refusal(plan, self.settings.sync_max_delete_fraction)
        return report.finish("planned", f"would be refused without --force: {why}" if why
                             else "")

    def start_in_background(self, *, force: bool = False, full: bool = False) -> str:
        """Start a run in a thread of this process and return its id.

        The lock is taken here, before answering, so the caller learns at once
        whether a run started: Conflict if another sync (any process, any
        host) is running.
        """
        if not self.settings.json_urls:
            raise Conflict("no JSON sources are configured (MAILGATE_JSON_URLS)")
        if self._unsettled_locks:
            self._settle()
        lock = self.new_lock()
        if not lock.acquire():
            holder = lock.holder()
            raise Conflict("a sync is already running",
                           {"running": f"{holder.host}, pid {holder.pid}, lock expires "
                                       f"{holder.as_json()['expires']}"} if holder else None)
        run_id = new_run_id(time.time())

        def work() -> None:
            try:
                self.run("api", force=force, full=full, lock=lock, run_id=run_id)
            except Exception:
                log.exception("the sync run %s failed unexpectedly", run_id)
                lock.release()

        thread = threading.Thread(target=work, name=f"mailgate-sync-{run_id}", daemon=True)
        self._background = [t for t in self._background if t.is_alive()] + [thread]
        thread.start()
        return run_id

    def tick(self) -> None:
        """The scheduler's job: a scheduled run; never raises."""
        try:
            self.run("schedule", scheduled=True)
        except Exception:
            log.exception("the scheduled sync failed unexpectedly")

    def status(self) -> dict[str, Any]:
        """What ``GET /sync/status`` shows; DirectoryUnavailable."""
        if self._unsettled_runs or self._unsettled_locks:
            self._settle()
        holder = self.new_lock().holder()
        state = self.state.load_state()
        running = None
        if holder is not None and holder.expires > dt.datetime.now(dt.UTC) and not (
                holder_is_dead(holder.owner) or self._ours_unreleased(holder.owner)):
            running = holder.as_json()
        return {
            "sources": [redact_url(u) for u in self.settings.json_urls],
            "interval": self.settings.json_interval,
            "max_delete_fraction": self.settings.sync_max_delete_fraction,
            "running": running,
            "last_check": state.get("last_check"),
            "runs": self.state.runs(),
        }

    # -- the run itself -----------------------------------------------------------

    def _ran_recently(self, state: dict[str, Any], now: float) -> bool:
        last = state.get("last_attempt")
        return isinstance(last, int | float) and \
            now - last < RECENT_SHARE * self.settings.json_interval

    def _locked_run(self, report: RunReport, lock: LdapLock, full: bool, scheduled: bool,
                    progress: Progress | None) -> None:
        state = self.state.load_state()
        now = report.started
        if scheduled and self._ran_recently(state, now):
            report.finish("skipped", "another process ran the sync recently")
            return
        last_full = state.get("last_full")
        if not isinstance(last_full, int | float) or now - last_full >= FULL_EVERY:
            full = True
        report.full = full
        stored = state.get("sources")
        known = {} if full or report.forced or not isinstance(stored, dict) else \
            {k: Validators.from_json(v) for k, v in stored.items()}
        state["last_attempt"] = now
        try:
            fetched = self._fetch_all(known, report)
            if all(f.unchanged for f in fetched):
                self._unchanged(report, state, fetched)
                return
            plan = self._plan(fetched, progress, report)
        except (FetchError, DocumentError) as exc:
            report.finish("failed", f"nothing changed: {exc}")
            self._save_attempt(state, report)
            return
        why = refusal(plan, self.settings.sync_max_delete_fraction)
        if why and not report.forced:
            report.finish("refused", f"nothing changed: {why}")
            self._save_attempt(state, report)
            return
        if why:
            log.warning("delete guard overridden (forced): %s", why)
        lock.check()
        with report.phase("apply"):
            applier = Applier(self.mail, lock, progress=progress)
            result = apply_within_limits(applier, plan)
            # Recorded even when the run stopped part-way: what was done, was done.
            self.audit.record_changes(applier.done_changes,
                                      Actor(f"sync run {report.id} ({report.trigger})"))
        report.counts = {**plan.counts(), "domains_created": 0, "created": 0, "updated": 0,
                         "taken_over": 0, "replaced": 0, "deleted": 0, **result.done}
        report.errors = result.errors
        report.error_count = result.error_count
        if result.aborted:
            report.finish("failed", f"stopped part-way (the next run converges): "
                                    f"{result.aborted}")
            self._save_attempt(state, report)
            return
        if result.error_count or plan.skipped:
            # Skipped entries make a run partial too: what the documents ask
            # for is not all in LDAP.
            parts = [f"{result.error_count} changes failed"] if result.error_count else []
            if plan.skipped:
                parts.append(_entries(len(plan.skipped)) + " skipped")
            report.finish("partial", ", ".join(parts))
            if result.error_count:
                # Failed changes may be transient: no validators, so the next
                # run plans again.
                self._save_attempt(state, report)
                return
        else:
            report.finish("applied")
        # Only skips (the documents' own faults) stand between this run and a
        # complete one: the same documents would be skipped the same way, so
        # the next run may cost a 304 and carry the skip report over.
        state["sources"] = {f.key: f.validators.as_json() for f in fetched}
        state["carried"] = report.skip_report() if plan.skipped else None
        if full:
            state["last_full"] = now
        self._save_attempt(state, report)

    def _unchanged(self, report: RunReport, state: dict[str, Any],
                   fetched: list[Fetched]) -> None:
        """No source changed: nothing is read; a partial run's skip report stands."""
        carried = state.get("carried")
        check: dict[str, Any] = {"time": _iso(report.started), "result": "unchanged"}
        if isinstance(carried, dict) and carried.get("skipped_total"):
            report.carried = carried
            report.skipped = [Skip(**s) for s in carried.get("skipped", ())
                              if isinstance(s, dict)]
            total = int(carried["skipped_total"])
            report.finish("unchanged", f"no source changed since the run {carried.get('run')}"
                                       f"; {_entries(total)} still skipped")
            check.update(carried)
        else:
            report.finish("unchanged", "no source changed since the last applied run")
        state["last_check"] = check
        state["sources"] = {f.key: f.validators.as_json() for f in fetched}
        self.state.save_state(state)

    def _save_attempt(self, state: dict[str, Any], report: RunReport) -> None:
        state["last_check"] = {"time": _iso(report.started), "result": report.result,
                               "run": report.id}
        try:
            self.state.save_state(state)
        except MailgateError as exc:
            log.error("could not save the sync state: %s", exc.message)

    def _fetch_all(self, known: dict[str, Validators], report: RunReport) -> list[Fetched]:
        # The same URL twice would make every address in it a duplicate.
        urls = tuple(dict.fromkeys(self.sources))
        with report.phase("fetch"):
            fetched = [self.fetcher.fetch(url, known.get(source_key(url))) for url in urls]
            if not all(f.unchanged for f in fetched):
                # Something changed: the unchanged documents are needed in full too.
                fetched = [self.fetcher.fetch(url) if f.unchanged else f
                           for url, f in zip(urls, fetched, strict=True)]
        report.sources = [{"url": f.url, "status": "unchanged" if f.unchanged else "fetched",
                           "bytes": f.size} for f in fetched]
        return fetched

    def _plan(self, fetched: list[Fetched], progress: Progress | None,
              report: RunReport) -> Plan:
        with _cyclic_gc_paused():
            return self._plan_phases(fetched, progress, report)

    def _plan_phases(self, fetched: list[Fetched], progress: Progress | None,
                     report: RunReport) -> Plan:
        with report.phase("validate"):
            # Streamed: each chunk of a document is let go once parsed.
            desired = build_desired([(f.url, f.chunks or []) for f in fetched], consume=True)
        with report.phase("read"):
            current = read_current(self.directory, desired.domains, progress)
        with report.phase("plan"):
            plan = make_plan(desired, current.entries, current.domains)
            plan.counters = current.counters
        report.plan = plan
        report.counts = plan.counts()
        report.skipped = plan.skipped
        report.unknown_keys = plan.unknown_keys
        return plan

    @staticmethod
    def _log(report: RunReport) -> None:
        metrics.record_sync(report.result, report.duration, report.counts)
        counts = ", ".join(f"{k} {v}" for k, v in report.counts.items() if v)
        level = logging.INFO if report.result in ("applied", "unchanged", "skipped", "busy") \
            else logging.WARNING
        log.log(level, "sync %s (%s, %.1f s)%s%s", report.result, report.trigger,
                report.duration, f": {report.reason}" if report.reason else "",
                f" [{counts}]" if counts else "")
        for unknown in report.unknown_keys:
            log.warning("sync ignored the unknown %s key %r in %d entries (first: %s %r, %s)",
                        unknown.kind, unknown.key, unknown.count, unknown.domain,
                        unknown.name, unknown.source)
        if report.carried is not None:
            return   # said by the run that skipped them (the end line counts them)
        for skip in report.skipped[:SHOWN_SKIPS]:
            log.warning("sync skipped %s %r: %s", skip.domain, skip.name, skip.reason)
        if len(report.skipped) > SHOWN_SKIPS:
            log.warning("sync skipped %d more entries", len(report.skipped) - SHOWN_SKIPS)
