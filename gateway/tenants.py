"""Domains as objects: their limits, their counters, and how the limits hold.

SPEC.md section 8. A domain entry (``dc=<domain>,ou=domains``) carries its
limits (``max_accounts``, ``max_aliases``, ``default_quota``, ``max_quota``;
0 or absent: none) and three counters: how many accounts and aliases it
holds and the sum of its accounts' quotas. Reads of a domain are one entry;
nothing is counted at read time.

How a limit holds under concurrency (many clients, several gateway
processes, the sync): before an entry is added, or a quota raised, the
claim is taken from the domain's counter with **one modify that increments
the counter (RFC 4525) under an assertion (RFC 4528)** that the counter is
at most ``limit - claim`` and the limit is still the one read. slapd applies
a modify to one entry atomically, so two claims can never both pass the
same last place: one of them finds the assertion false and nothing changed.
Unlike a read-compare-write of the counter (an assertion on its exact old
value), an increment does not fail because another claim came first, so 16
clients creating accounts at once do not retry each other into a storm:
only claims past the limit fail, and they fail with the limit's name.
Chosen over the alternatives the directory offers: an exact-value assertion
(retries under contention), OpenLDAP's ``constraint`` overlay with
``count`` (per-attribute value counts, not children of an entry) and a
cluster lock (one more writer in the path of every create).

The order is claim, then write, then give back on failure: a claim whose
write never happens (a crash between the two, a refused add) leaves the
counter too high, never too low, so a crash can only make a domain refuse
early, never hold more than its limit. A counter that is off (a crash, an
entry added by hand with ``ldapadd``) is repaired by :meth:`Tenants.recount`
(``mailgate domain recount``, and every full reconcile of the sync): it
counts the entries and writes the counters under an assertion that they did
not change meanwhile; it lowers a counter only when a second count, a settle
time later, agrees (a claim taken just before the first count has its entry
written by then).

Entries made with LDAP tools directly are not limited (the directory's
administrators are trusted); they are counted at the next recount.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from . import metrics
from .addresses import normalize_domain
from .audit import AuditLog
from .directory import Directory, Entry, Filter, Write, all_of, any_of, at_most, eq, not_, present
from .entries import (
    A_ACCOUNT_COUNT,
    A_ALIAS_COUNT,
    A_DC,
    A_MAX_ACCOUNTS,
    A_MAX_ALIASES,
    A_MAX_QUOTA,
    A_ORIGIN,
    A_QUOTA,
    A_QUOTA_ALLOCATED,
    ACCOUNT_ROLE,
    ALIAS_ROLE,
    DOMAIN_ATTRS,
    DOMAIN_COUNTER_ATTRS,
    DOMAIN_LIMIT_ATTRS,
    DOMAIN_LIMIT_FIELDS,
    OC_DOMAIN,
    ORIGIN_API,
    Domain,
    Layout,
    decode_domain,
    decode_int,
    domain_limit_attrs,
    kind_of,
)
from .errors import Conflict, Invalid, LimitExceeded, MailgateError, NotFound

__all__ = ["MAX_COUNT", "MAX_QUOTA", "Domain", "Tenants", "parse_size"]

log = logging.getLogger(__name__)

# The largest quota or limit in bytes accepted: 1 PiB. Larger is a typing
# mistake (and past 2**53 a JavaScript client would round it).
MAX_QUOTA = 2**50
# The largest account or alias limit: an LDAP INTEGER slapd and Dovecot read
# as 32-bit signed everywhere.
MAX_COUNT = 2**31 - 1
_ATTEMPTS = 4
# How long a recount waits before it lowers a counter: longer than any create
# takes from its claim to its write (a request bounded by the LDAP timeouts).
SETTLE_SECONDS = 10.0
# Entries deleted per batch by a cascade delete (one pipelined write_many each).
CASCADE_BATCH = 500


def parse_size(value: object, most: int) -> int:
    """A non-negative integer from JSON (int) or a form (decimal string);
    ValueError says why not. Booleans and floats are refused."""
    if isinstance(value, bool) or value is None:
        raise ValueError("must be an integer")
    if isinstance(value, str):
        text = value.strip()
        if not text.isascii() or not text.isdigit():
            raise ValueError("must be a non-negative integer")
        if len(text) > 20:
            raise ValueError(f"must be at most {most}")
        value = int(text)
    if not isinstance(value, int):
        raise ValueError("must be an integer")
    if value < 0:
        raise ValueError("must be 0 or more (0: no limit)")
    if value > most:
        raise ValueError(f"must be at most {most}")
    return value


def parse_limits(values: Mapping[str, object], partial: bool) -> dict[str, int]:
    """The limit fields of a domain's body; Invalid naming each bad field.

    ``partial``: fields left out keep their value (PUT); otherwise they are 0.
    """
    limits: dict[str, int] = {}
    errors: dict[str, str] = {}
    for field in DOMAIN_LIMIT_FIELDS:
        if field not in values:
            if not partial:
                limits[field] = 0
            continue
        most = MAX_COUNT if field in ("max_accounts", "max_aliases") else MAX_QUOTA
        try:
            limits[field] = parse_size(values[field], most)
        except ValueError as exc:
            errors[field] = str(exc)
    unknown = sorted(set(values) - set(DOMAIN_LIMIT_FIELDS) - {"name"})
    for field in unknown:
        errors[field] = "not a field of a domain (name is read-only after create)"
    if errors:
        raise Invalid("invalid input", errors)
    return limits


@dataclass(frozen=True)
class Deleted:
    """What a domain delete removed."""

    name: str
    accounts: int
    aliases: int
    entries: int


class Tenants:
    """The domains of the directory: reads, the admin's changes, and the
    claims that keep their limits (every method may raise DirectoryUnavailable)."""

    def __init__(self, directory: Directory, audit: AuditLog | None = None) -> None:
        self.dir = directory
        self.audit = audit
        self.layout = Layout(directory.base_dn)

    # -- reads ------------------------------------------------------------------

    def find(self, name: str) -> Domain | None:
        entry = self.dir.read(self.layout.domain(name), eq("objectClass", OC_DOMAIN),
                              DOMAIN_ATTRS)
        return None if entry is None else decode_domain(entry)

    def get(self, name: str) -> Domain:
        """The domain, counted if its entry has no counters yet; NotFound."""
        domain = self.find(name)
        if domain is None:
            raise NotFound(f"no domain {name}")
        return domain if domain.counted else self.recount(name)

    def limited(self) -> Iterator[metrics.DomainUsage]:
        """(domain, resource, used, limit) of every limit set (for /metrics)."""
        flt = all_of(eq("objectClass", OC_DOMAIN), any_of(
            *(present(a) for a in (A_MAX_ACCOUNTS, A_MAX_ALIASES, A_MAX_QUOTA))))
        for entry in self.dir.iterate(self.layout.domains, flt, DOMAIN_ATTRS):
            d = decode_domain(entry)
            for resource, used, most in (("accounts", d.accounts, d.max_accounts),
                                         ("aliases", d.aliases, d.max_aliases),
                                         ("quota", d.quota_allocated, d.max_quota)):
                if most:
                    yield d.name, resource, used, most

    # -- the admin's changes ------------------------------------------------------

    def create(self, name: object, limits: Mapping[str, object]) -> Domain:
        """An empty domain with its limits; Conflict if it exists."""
        try:
            domain = normalize_domain(name) if isinstance(name, str) else None
        except ValueError as exc:
            raise Invalid("invalid input", {"name": str(exc)}) from None
        if domain is None:
            raise Invalid("invalid input", {"name": "must be a string"})
        values = parse_limits(limits, partial=False)
        _check_default(values["default_quota"], values["max_quota"])
        attrs = {A_DC: [domain], **_zero_counters(),
                 **domain_limit_attrs({k: v for k, v in values.items() if v})}
        try:
            self.dir.add(self.layout.domain(domain), OC_DOMAIN, attrs)
        except Conflict:
            raise Conflict(f"the domain {domain} exists", {"name": "domain exists"}) from None
        log.info("domain created: %s", domain)
        self._changed("domain.create", domain, values)
        return self.get(domain)

    def set_limits(self, name: str, limits: Mapping[str, object]) -> Domain:
        """Change the limits given (others kept). Lowering one below what the
        domain holds is allowed: the domain is then ``over_limit``."""
        values = parse_limits(limits, partial=True)
        current = self.get(name)
        merged = {f: values.get(f, getattr(current, f)) for f in DOMAIN_LIMIT_FIELDS}
        _check_default(merged["default_quota"], merged["max_quota"])
        if values:
            self.dir.modify(current.dn, domain_limit_attrs(values))
        domain = self.get(name)
        log.info("domain limits set: %s %s", domain.name, values)
        self._changed("domain.set_limits", domain.name, values,
                      over_limit=domain.over_limit or None)
        return domain

    def ensure(self, name: str) -> None:
        """The domain's entry, made (with no limits) by its first account or alias."""
        with contextlib.suppress(Conflict):
            self.dir.add(self.layout.domain(name), OC_DOMAIN,
                         {A_DC: [name], A_ORIGIN: [ORIGIN_API], **_zero_counters()})

    def remove_if_unused(self, name: str) -> None:
        """Drop the domain entry when its last address went, if mailgate made it
        implicitly and it has no limits: a domain made by hand, by ``POST
        /mail/domain/`` or given limits stays. The assertion on the counters
        keeps it while a claim for a new entry is in flight."""
        guard = all_of(eq(A_ORIGIN, ORIGIN_API), eq(A_ACCOUNT_COUNT, "0"),
                       eq(A_ALIAS_COUNT, "0"),
                       *(not_(present(a)) for a in DOMAIN_LIMIT_ATTRS))
        self.dir.delete_if_leaf(self.layout.domain(name), guard)

    def delete(self, name: str, cascade: bool) -> Deleted:
        """Delete the domain; Conflict while it holds entries unless ``cascade``.

        A cascade deletes its entries in batches of :data:`CASCADE_BATCH`, then
        the domain; interrupted, a second call finishes it (what is left is
        found again). One audit event for the whole delete.
        """
        domain = self.get(name)
        if not cascade and (domain.accounts or domain.aliases or self._has_children(domain)):
            raise Conflict(f"the domain {domain.name} holds {domain.accounts} accounts and "
                           f"{domain.aliases} aliases; delete them first or use "
                           "?cascade=true", {"cascade": "the domain is not empty"})
        accounts = aliases = entries = 0
        for _attempt in range(_ATTEMPTS):
            while True:
                batch = self._children(domain, any_of(ACCOUNT_ROLE, ALIAS_ROLE),
                                       CASCADE_BATCH)
                if not batch:
                    break
                for _write, error in self.dir.write_many(Write("delete", e.dn) for e in batch):
                    if error is not None and not isinstance(error, NotFound):
                        raise error
                    entries += 1
                for entry in batch:
                    kind = kind_of(entry)
                    accounts += kind in ("account", "both")
                    aliases += kind in ("alias", "both")
            if self._children(domain, present("objectClass"), 1):
                # Entries of other classes (made by hand): the domain's entry
                # cannot go while they are there.
                raise Conflict(f"the domain {domain.name} holds entries mailgate does not "
                               "manage; remove them with LDAP tools first")
            if self.dir.delete_if_leaf(domain.dn) or self.find(domain.name) is None:
                break
        else:
            raise Conflict(f"entries keep being added to {domain.name}; try again")
        log.info("domain deleted: %s (%d entries)", domain.name, entries)
        self._changed("domain.delete", domain.name, None, cascade=cascade or None,
                      accounts=accounts, aliases=aliases, entries=entries)
        return Deleted(domain.name, accounts, aliases, entries)

    def _has_children(self, domain: Domain) -> bool:
        return bool(self._children(domain, present("objectClass"), 1))

    def _children(self, domain: Domain, flt: Filter, most: int) -> list[Entry]:
        """Up to ``most`` entries below the domain's (a paged read: a size limit
        would make slapd answer with none at all when there are more)."""
        found: list[Entry] = []
        pages = self.dir.iterate(domain.dn, flt, ["objectClass"], page_size=most + 1)
        try:
            for entry in pages:
                if entry.dn.lower() != domain.dn.lower():
                    found.append(entry)
                    if len(found) >= most:
                        break
        finally:
            close = getattr(pages, "close", None)
            if close is not None:
                close()
        return found

    # -- claims -------------------------------------------------------------------

    def claim(self, name: str, *, accounts: int = 0, aliases: int = 0,
              quota: int | None = 0, old_quota: int = 0, mailbox: bool = False,
              source: str = "api") -> int:
        """Take ``accounts`` and ``aliases`` places and the mailbox's quota from
        the domain's counters, or raise LimitExceeded changing nothing.

        ``mailbox``: the claim gives a mailbox the quota ``quota`` (None: the
        domain's default_quota) in place of ``old_quota``; the result is that
        quota (0 otherwise). Give it back with :meth:`release` if the write
        it was for does not happen.
        """
        for _attempt in range(_ATTEMPTS):
            domain = self.find(name)
            if domain is None:
                self.ensure(name)
                continue
            if not domain.counted:
                self.recount(name)
                continue
            wanted = 0
            if mailbox:
                wanted = domain.default_quota if quota is None else quota
                if domain.max_quota and not wanted:
                    self._refuse(domain, "max_quota", source, f"{name} has max_quota "
                                 f"{domain.max_quota}: each of its accounts needs a quota")
            delta = wanted - old_quota if mailbox else 0
            guards: list[Filter] = []
            for field, attr, limit, used, claim, counter in (
                    ("max_accounts", A_MAX_ACCOUNTS, domain.max_accounts, domain.accounts,
                     accounts, A_ACCOUNT_COUNT),
                    ("max_aliases", A_MAX_ALIASES, domain.max_aliases, domain.aliases,
                     aliases, A_ALIAS_COUNT),
                    ("max_quota", A_MAX_QUOTA, domain.max_quota, domain.quota_allocated,
                     delta, A_QUOTA_ALLOCATED)):
                if claim <= 0 or not limit:
                    continue
                if used + claim > limit:
                    self._refuse(domain, field, source, _past(name, field, limit, used, claim))
                guards += [eq(attr, str(limit)), at_most(counter, limit - claim)]
            deltas = {A_ACCOUNT_COUNT: accounts, A_ALIAS_COUNT: aliases,
                      A_QUOTA_ALLOCATED: delta}
            try:
                if self.dir.increment_if(domain.dn, deltas,
                                         all_of(*guards) if guards else None):
                    return wanted
            except NotFound:
                continue   # the entry went (or lost its counters) meanwhile
        raise Conflict(f"the domain {name} changed during the request; try again")

    def release(self, name: str, *, accounts: int = 0, aliases: int = 0,
                quota: int = 0) -> None:
        """Give places and quota back (after a delete, or a claim not used).

        A failure here leaves the counter too high (the safe side); recount
        repairs it.
        """
        deltas = {A_ACCOUNT_COUNT: -accounts, A_ALIAS_COUNT: -aliases,
                  A_QUOTA_ALLOCATED: -quota}
        # No domain entry or no counters: the next recount counts.
        with contextlib.suppress(NotFound):
            self.dir.increment_if(self.layout.domain(name), deltas)

    def _refuse(self, domain: Domain, field: str, source: str, message: str) -> None:
        metrics.record_limit_refusal(field, source)
        if source == "api":   # the sync's refusals are in its run's skip report
            self._changed("domain.limit_refused", domain.name, None, limit=field,
                          value=getattr(domain, field))
        raise LimitExceeded(message, field, getattr(domain, field))

    # -- repair -------------------------------------------------------------------

    def recount(self, name: str, settle: Callable[[], None] | None = None) -> Domain:
        """Count the domain's entries and write its counters (repairs a drift).

        The counters are written only if they did not change while counting;
        otherwise it counts again (a few times, then Conflict). A counter is
        lowered only if a second count, :data:`SETTLE_SECONDS` later (``settle``:
        what to do in between), finds no more: a create whose place was claimed
        just before the first count has its entry written by then (or gave the
        place back, which changes the counter), so it is not counted out.
        """
        result = self.recount_many([name], settle)[name]
        if isinstance(result, MailgateError):
            raise result
        return result

    def recount_many(self, names: Iterable[str], settle: Callable[[], None] | None = None
                     ) -> dict[str, Domain | MailgateError]:
        """:meth:`recount` of several domains with one settle time for all of
        them (a sync after a crash may find a hundred domains to lower: one
        wait, not a hundred). Each domain's result, or the error it met
        (NotFound, Conflict); a lost directory or lock is raised."""
        results: dict[str, Domain | MailgateError] = {}
        pending = list(dict.fromkeys(names))
        for _attempt in range(_ATTEMPTS):
            if not pending:
                break
            counts: dict[str, tuple[Domain, tuple[int, int, int]]] = {}
            for name in pending:
                before = self.find(name)
                if before is None:
                    results[name] = NotFound(f"no domain {name}")
                else:
                    counts[name] = (before, self._count(self.layout.domain(name)))
            lowering = [name for name, (before, counted) in counts.items()
                        if before.counted and any(c < s for c, s in zip(
                            counted, _stored(before), strict=True))]
            if lowering:
                (settle or _settle)()
                for name in lowering:
                    before, counted = counts[name]
                    again = self._count(self.layout.domain(name))
                    counts[name] = (before, (max(counted[0], again[0]),
                                             max(counted[1], again[1]),
                                             max(counted[2], again[2])))
            pending = []
            for name, (before, counted) in counts.items():
                if not self._write_counters(name, before, counted):
                    pending.append(name)     # changed while counting: again
                    continue
                domain = self.find(name)
                results[name] = domain if domain is not None else NotFound(f"no domain {name}")
        for name in pending:
            results[name] = Conflict(f"the domain {name} keeps changing; recount it again "
                                     "later")
        return results

    def _write_counters(self, name: str, before: Domain, counted: tuple[int, int, int]) -> bool:
        """Write ``counted`` as the counters if they are still ``before``'s."""
        if before.counted:
            unchanged = all_of(eq(A_ACCOUNT_COUNT, str(before.accounts)),
                               eq(A_ALIAS_COUNT, str(before.aliases)),
                               eq(A_QUOTA_ALLOCATED, str(before.quota_allocated)))
        else:
            unchanged = not_(present(A_ACCOUNT_COUNT))
        values = dict(zip(DOMAIN_COUNTER_ATTRS, counted, strict=True))
        if not self.dir.modify_if(self.layout.domain(name),
                                  {k: [str(v)] for k, v in values.items()}, unchanged):
            return False
        if _stored(before) != counted or not before.counted:
            log.info("domain %s recounted: %d accounts, %d aliases, %d bytes", name, *counted)
        return True

    def _count(self, dn: str) -> tuple[int, int, int]:
        """(accounts, aliases, quota allocated) of the entries below ``dn``."""
        accounts = aliases = allocated = 0
        for entry in self.dir.iterate(dn, any_of(ACCOUNT_ROLE, ALIAS_ROLE),
                                      ["objectClass", A_QUOTA]):
            kind = kind_of(entry)
            if kind in ("account", "both"):
                accounts += 1
                allocated += decode_int(entry.attrs.get(A_QUOTA))
            if kind in ("alias", "both"):
                aliases += 1
        return accounts, aliases, allocated

    def recount_all(self, names: Iterable[str] | None = None,
                    settle: Callable[[], None] | None = None) -> list[Domain]:
        """:meth:`recount` every domain (or those named); the repaired ones."""
        if names is None:
            names = [decode_domain(e).name for e in self.dir.iterate(
                self.layout.domains, eq("objectClass", OC_DOMAIN), [A_DC])]
        names = list(names)
        befores = {name: self.find(name) for name in names}
        repaired = []
        for name, after in self.recount_many(names, settle).items():
            if isinstance(after, MailgateError):
                raise after
            before = befores.get(name)
            if before is None or (_stored(before), before.counted) != (_stored(after), True):
                repaired.append(after)
        return repaired

    def _changed(self, operation: str, domain: str, fields: Mapping[str, object] | None,
                 **detail: object) -> None:
        if self.audit is not None:
            self.audit.record(operation, domain, fields, None, **detail)


def _settle() -> None:
    time.sleep(SETTLE_SECONDS)


def _stored(domain: Domain) -> tuple[int, int, int]:
    return domain.accounts, domain.aliases, domain.quota_allocated


def _zero_counters() -> dict[str, list[str]]:
    return {A_ACCOUNT_COUNT: ["0"], A_ALIAS_COUNT: ["0"], A_QUOTA_ALLOCATED: ["0"]}


def _check_default(default_quota: int, max_quota: int) -> None:
    if max_quota and default_quota > max_quota:
        raise Invalid("invalid input", {
            "default_quota": f"must not be more than max_quota ({max_quota})"})


def _past(name: str, field: str, limit: int, used: int, claim: int) -> str:
    if field == "max_quota":
        return (f"{name} has {limit - used} of its max_quota ({limit} bytes) left; "
                f"{claim} more bytes asked")
    what = "accounts" if field == "max_accounts" else "aliases"
    return f"{name} holds {used} {what}, its {field} is {limit}"
