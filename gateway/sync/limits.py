"""The domains' limits in the sync (SPEC.md section 8): what fits is claimed, the rest skipped.

The sync writes many entries at once (:meth:`gateway.directory.Directory.write_many`),
so it does not claim a place per entry as the API does: it claims, per
domain, the run's totals for what fits, in one :meth:`gateway.tenants.Tenants.claim`
(an increment of the domain's counters under an assertion that they stay
within the limits), before writing. What is claimed but not written (a
refused add, an entry made by someone else meanwhile) is given back after
the writes; what the run deletes is given back once deleted. So, as for the
API, a counter is at worst too high for a moment, never too low, and the
sync and concurrent API creates together never take a domain past a limit.

A plan is applied in two passes, so that room the run frees is there for
what it adds:

1. **Changes that need no room**: deletes, quota decreases, roles taken
   away, and every update that does not grow a counter (a new password, a
   takeover). Written first; the counters are lowered by what was done.
2. **Changes that need room** (creates, quota raises, roles added,
   replaces): per domain, changes to existing entries first (by address),
   then new entries in document order, each taken while it fits the
   domain's limits and counters as they are after pass 1. The rest is
   skipped with the limit's name (the run is ``partial``); nothing is ever
   deleted to make room. The totals of what fits are claimed (one claim per
   domain; if a concurrent create took places meanwhile, the fit is
   computed again), then written, then what was not written is given back.

A domain with ``max_quota`` needs a quota on each of its accounts: a new
mailbox (or a quota change) that would be 0 (no limit) there is skipped,
naming ``max_quota``. A new account whose document gives no ``quota`` gets
its domain's ``default_quota``.

Drift: every run that reads the listed domains (each run whose documents
changed, and the daily full reconcile) compares each listed domain's
counters with what it read and recounts (:meth:`Tenants.recount`) the
domains that disagree, before the limits are checked, if their counters
did not change while the run read (a domain in use by the API meanwhile
is left to a later run). So a counter left too high by a crash, or entries
added with LDAP tools, are repaired by the next full reconcile of a quiet
moment. Domains no document lists are not read by the sync; ``mailgate
domain recount`` repairs those.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple, TypeVar

from .. import metrics
from ..directory import eq
from ..entries import DOMAIN_ATTRS, OC_DOMAIN, Domain, decode_domain
from ..errors import Conflict, DirectoryUnavailable, LockLost, MailgateError
from ..tenants import Tenants
from .apply import MAX_ERRORS_KEPT, Applier, ApplyResult
from .plan import Create, Creates, Delete, Plan, Replace, Update
from .records import Skip, Want, WantAccount, WantBoth

log = logging.getLogger(__name__)

_ATTEMPTS = 4
T = TypeVar("T")
_new = tuple.__new__
Counts = tuple[int, int, int]   # accounts, aliases, quota allocated (bytes)
Change = Create | Update | Replace | Delete
_NONE: Counts = (0, 0, 0)
_FIELDS = ("max_accounts", "max_aliases", "max_quota")


class _Item(NamedTuple):
    """A plan change, its quota resolved, with what it changes in its domain's counters."""

    change: Change
    domain: str
    address: str
    delta: Counts        # signed

    @property
    def grows(self) -> bool:
        return any(d > 0 for d in self.delta)

    @property
    def claim(self) -> Counts:
        a, b, c = self.delta
        return max(a, 0), max(b, 0), max(c, 0)

    @property
    def frees(self) -> Counts:
        a, b, c = self.delta
        return max(-a, 0), max(-b, 0), max(-c, 0)

    @property
    def is_new(self) -> bool:
        return isinstance(self.change, Create)


def apply_within_limits(applier: Applier, plan: Plan) -> ApplyResult:
    """Apply ``plan`` within its domains' limits (the module docstring); the
    changes that do not fit are moved to ``plan.skipped``."""
    tenants = applier.mail.domains
    result = ApplyResult()
    skips = len(plan.skipped)
    try:
        domains = _repaired(tenants, plan, result)
        items = _classify(plan, domains)
    except (DirectoryUnavailable, LockLost) as exc:
        result.aborted = exc.message
        return result
    free = [i for i in items if not i.grows]
    grow = [i for i in items if i.grows]
    first = Plan(domains=plan.domains)
    _replace_changes(first, free)
    done = _applied(applier, first, result)
    _give_back(tenants, [(i.domain, i.frees) for i in free if i.address in done])
    kept: list[_Item] = []
    if not result.aborted and grow:
        try:
            kept = _claimed(tenants, grow, plan.skipped)
        except (DirectoryUnavailable, LockLost) as exc:
            result.aborted = exc.message
    for skip in plan.skipped[skips:]:
        limit = skip.reason.partition(":")[0]
        if limit in _FIELDS:
            metrics.record_limit_refusal(limit, "sync")
    if not kept:
        return result
    second = Plan()
    _replace_changes(second, kept)
    done = _applied(applier, second, result)
    if result.aborted:
        # Writes in flight may or may not have been done: their claims stay
        # (too high, the safe side) until the next run recounts.
        _give_back(tenants, [(i.domain, i.frees) for i in kept if i.address in done])
        return result
    _give_back(tenants, [(i.domain, i.frees if i.address in done else i.claim)
                         for i in kept])
    return result


def preview_limits(plan: Plan, tenants: Tenants) -> None:
    """What a run would skip for the limits, for a dry run: the changes that
    would not fit are moved to ``plan.skipped``. Claims nothing, writes nothing.

    Only the changes in domains with a limit or a default quota are looked at:
    nothing else can be skipped or changed, and an item per change of a
    million-entry plan would cost the dry run hundreds of MiB (B8)."""
    domains = _read_domains(tenants)
    bounded = {name for name, d in domains.items()
               if d.max_accounts or d.max_aliases or d.max_quota or d.default_quota}
    if not bounded:
        return
    aside = _Aside(plan, bounded)
    items = _classify(plan, domains)
    grow = [i for i in items if i.grows]
    used = {name: _counts(d) for name, d in domains.items()}
    # What the read found is what a run would recount a disagreeing counter to.
    used.update((name, (held[0], held[1], held[2])) for name, held in plan.held.items())
    for item in items:
        if not item.grows:
            used[item.domain] = _add(used.get(item.domain, _NONE), item.delta)
    kept: list[_Item] = []
    for name, group in _by_domain(grow).items():
        accounts, aliases, quota = used.get(name, _NONE)
        domain = domains.get(name, Domain(name))._replace(
            accounts=accounts, aliases=aliases, quota_allocated=quota)
        kept += _fit(domain, group, plan.skipped)
    _replace_changes(plan, [i for i in items if not i.grows] + kept)
    aside.put_back(plan)


class _Aside:
    """The changes of the domains without bounds, taken out of a plan (its
    changes become those of the bounded domains) and put back afterwards."""

    def __init__(self, plan: Plan, bounded: set[str]) -> None:
        def free(address: str) -> bool:
            return address.rpartition("@")[2] not in bounded

        self.creates, kept = _split(plan.creates.wants, lambda w: free(w.address))
        plan.creates = Creates(kept)
        self.updates, plan.updates = _split(plan.updates, lambda c: free(c.existing.address))
        self.replaces, plan.replaces = _split(plan.replaces,
                                              lambda c: free(c.existing.address))
        self.deletes, plan.deletes = _split(plan.deletes, lambda c: free(c.existing.address))

    def put_back(self, plan: Plan) -> None:
        plan.creates = Creates([*plan.creates.wants, *self.creates])
        plan.updates += self.updates
        plan.replaces += self.replaces
        plan.deletes += self.deletes


def _split(items: Iterable[T], aside: Callable[[T], bool]) -> tuple[list[T], list[T]]:
    """(the items ``aside`` is true of, the others), in one pass, order kept."""
    yes: list[T] = []
    no: list[T] = []
    for item in items:
        (yes if aside(item) else no).append(item)
    return yes, no


# -- counters as read, and their repair -----------------------------------------------


def _read_domains(tenants: Tenants) -> dict[str, Domain]:
    """Every domain entry with its limits and counters (one search)."""
    found = tenants.dir.iterate(tenants.layout.domains, eq("objectClass", OC_DOMAIN),
                                DOMAIN_ATTRS)
    return {d.name: d for d in map(decode_domain, found)}


def _counts(domain: Domain) -> Counts:
    return domain.accounts, domain.aliases, domain.quota_allocated


def _repaired(tenants: Tenants, plan: Plan, result: ApplyResult) -> dict[str, Domain]:
    """The domains, each listed one recounted if its counters disagree with
    what the plan's read found in it (``domains_recounted`` in the result).

    Only a domain whose counters did not move since just before the read is
    recounted: one that changed meanwhile (the API at work) disagrees for
    that reason alone, and a recount while its creates are between their
    claim and their write would count them out. It is checked again by the
    next run that reads it.
    """
    domains = _read_domains(tenants)
    disagreeing: list[str] = []
    for name, held in plan.held.items():
        domain = domains.get(name)
        if domain is None or (domain.counted and _counts(domain) == tuple(held)):
            continue
        before = plan.counters.get(name)
        if domain.counted and (before is None or _counts(before) != _counts(domain)):
            log.debug("domain %s changed during the sync's read; not recounted", name)
            continue
        disagreeing.append(name)
    # One settle time for all of them (after a crash mid-import: every domain).
    for name, recounted in tenants.recount_many(disagreeing).items():
        if isinstance(recounted, MailgateError):   # gone, or changing all the time
            log.warning("could not recount the domain %s: %s", name, recounted.message)
            continue
        domain = domains[name]
        accounts, aliases, quota = _counts(domain)
        was = f"{accounts} accounts, {aliases} aliases, {quota} bytes" if domain.counted \
            else "none"
        log.warning("domain %s: its counters (%s) did not match its entries; recounted: "
                    "%d accounts, %d aliases, %d bytes", name, was, *_counts(recounted))
        domains[name] = recounted
        result.done["domains_recounted"] += 1
    return domains


# -- what each change needs ---------------------------------------------------------------


def _roles(kind: str, quota: int) -> Counts:
    account = kind != "alias"
    return int(account), int(kind != "account"), quota if account else 0


def _quota(want: Want) -> int:
    account = want.account if isinstance(want, WantBoth) else want
    return (account.quota or 0) if isinstance(account, WantAccount) else 0


def _with_default(want: Want, default: int) -> Want:
    """``want`` with its account's quota set to ``default`` if it has none."""
    if isinstance(want, WantBoth):
        account = _with_default(want.account, default)
        return want if account is want.account else _new(WantBoth, (want.address, account,
                                                                    want.alias))
    if isinstance(want, WantAccount) and want.quota is None:
        return _new(WantAccount, (*want[:5], default))
    return want


def _item(change: Change, domain: Domain) -> tuple[_Item, Counts, Counts]:
    """The change with its quota resolved, and the counts before and after it."""
    if isinstance(change, Delete):
        old = change.existing
        before = _roles(old.kind, old.quota)
        return _Item(change, old.domain, old.address, _sub(_NONE, before)), before, _NONE
    if isinstance(change, Create):
        want = _with_default(change.want, domain.default_quota)
        after = _roles(want.kind, _quota(want))
        return _Item(Create(want), want.domain, want.address, after), _NONE, after
    old = change.existing
    before = _roles(old.kind, old.quota)
    if isinstance(change, Replace):
        want = _with_default(change.want, domain.default_quota)
        after = _roles(want.kind, _quota(want))
        return (_Item(Replace(old, want), old.domain, old.address, _sub(after, before)),
                before, after)
    changes = change.changes
    kind = change.want.kind
    if kind == "alias":
        quota = 0
    elif "quota" in changes:
        quota = int(changes["quota"])  # type: ignore[call-overload]
    elif old.kind == "alias":   # the address gets a mailbox: the domain's default
        quota = domain.default_quota
        if quota:
            change = Update(old, change.want, {**changes, "quota": quota})
    else:
        quota = old.quota
    after = _roles(kind, quota)
    return _Item(change, old.domain, old.address, _sub(after, before)), before, after


def _classify(plan: Plan, domains: dict[str, Domain]) -> list[_Item]:
    """Every change of the plan as an item; those that would leave an account
    without a quota where the domain has max_quota go to ``plan.skipped``."""
    items: list[_Item] = []
    changes: Iterable[Change] = (*plan.updates, *plan.replaces, *plan.deletes)
    for change in (*changes, *plan.creates):
        address = change.want.address if isinstance(change, Create) else \
            change.existing.address
        name = address.rpartition("@")[2]
        domain = domains.get(name) or Domain(name)
        item, before, after = _item(change, domain)
        mailbox = after[0] and (not before[0] or before[2] != after[2])
        if domain.max_quota and mailbox and not after[2]:
            _skip(plan.skipped, item, "max_quota",
                  f"{name} has max_quota {domain.max_quota}: each of its accounts needs a "
                  "quota (the entry would have none)")
            continue
        items.append(item)
    return items


def _add(a: Counts, b: Counts) -> Counts:
    return a[0] + b[0], a[1] + b[1], a[2] + b[2]


def _sub(a: Counts, b: Counts) -> Counts:
    return a[0] - b[0], a[1] - b[1], a[2] - b[2]


# -- fitting and claiming ------------------------------------------------------------------


def _by_domain(items: Iterable[_Item]) -> dict[str, list[_Item]]:
    """Per domain: changes to existing entries first (by address), then new
    entries in document order."""
    groups: dict[str, list[_Item]] = {}
    for item in items:
        groups.setdefault(item.domain, []).append(item)
    for group in groups.values():
        group.sort(key=lambda i: (i.is_new, "" if i.is_new else i.address))
    return groups


def _fit(domain: Domain, items: Sequence[_Item], skipped: list[Skip]) -> list[_Item]:
    """The items that fit the domain's limits from its counters on, in order;
    the others are skipped naming the limit."""
    limits = (domain.max_accounts, domain.max_aliases, domain.max_quota)
    used = list(_counts(domain))
    kept: list[_Item] = []
    for item in items:
        claim = item.claim
        for index in range(3):
            if limits[index] and claim[index] and used[index] + claim[index] > limits[index]:
                _skip(skipped, item, _FIELDS[index],
                      _past(domain.name, index, limits[index], used[index], claim[index]))
                break
        else:
            used = [u + c for u, c in zip(used, claim, strict=True)]
            kept.append(item)
    return kept


def _claimed(tenants: Tenants, items: Sequence[_Item], skipped: list[Skip]) -> list[_Item]:
    """Per domain, claim what fits (one claim each); the kept items."""
    kept: list[_Item] = []
    for name, group in _by_domain(items).items():
        for _attempt in range(_ATTEMPTS):
            domain = tenants.find(name)
            if domain is None or not domain.counted:
                tenants.ensure(name)
                domain = tenants.get(name)
            refused: list[Skip] = []
            fits = _fit(domain, group, refused)
            total = _NONE
            for item in fits:
                total = _add(total, item.claim)
            accounts, aliases, quota = total
            try:
                tenants.claim(name, accounts=accounts, aliases=aliases, quota=quota,
                              mailbox=quota > 0, source="sync")
            except Conflict:   # LimitExceeded: places were taken meanwhile: fit again
                continue
            skipped += refused
            kept += fits
            break
        else:
            for item in group:
                _skip(skipped, item, "busy", f"the counters of {name} kept changing "
                      "during the run; the next run tries again")
    return kept


def _give_back(tenants: Tenants, amounts: Iterable[tuple[str, Counts]]) -> None:
    """Release the amounts, summed per domain (one modify each)."""
    totals: dict[str, Counts] = {}
    for name, counts in amounts:
        totals[name] = _add(totals.get(name, _NONE), counts)
    for name, (accounts, aliases, quota) in totals.items():
        if accounts or aliases or quota:
            try:
                tenants.release(name, accounts=accounts, aliases=aliases, quota=quota)
            except MailgateError as exc:
                log.warning("could not give back %d accounts, %d aliases, %d bytes to the "
                            "counters of %s (%s): they stay high until recounted", accounts,
                            aliases, quota, name, exc.message)


def _applied(applier: Applier, plan: Plan, result: ApplyResult) -> set[str]:
    """Apply ``plan``, merge its outcome into ``result``; the addresses written."""
    start = len(applier.done_changes)
    part = applier.apply(plan)
    result.done.update(part.done)
    result.errors += part.errors[:max(0, MAX_ERRORS_KEPT - len(result.errors))]
    result.error_count += part.error_count
    result.aborted = result.aborted or part.aborted
    return {str(c["target"]) for c in applier.done_changes[start:]}


def _replace_changes(plan: Plan, items: Iterable[_Item]) -> None:
    """The plan's changes become ``items`` (kept, quotas resolved)."""
    changes = [i.change for i in items]
    plan.creates = Creates(c.want for c in changes if isinstance(c, Create))
    plan.updates = [c for c in changes if isinstance(c, Update)]
    plan.replaces = [c for c in changes if isinstance(c, Replace)]
    plan.deletes = [c for c in changes if isinstance(c, Delete)]


def _skip(skipped: list[Skip], item: _Item, field: str, why: str) -> None:
    what = "not created" if item.is_new else "left as it is"
    skipped.append(Skip(item.domain, item.address.rpartition("@")[0],
                        f"{field}: {why}; {what} (nothing is deleted to make room)"))


_WHAT = ("accounts", "aliases")


def _past(name: str, index: int, limit: int, used: int, claim: int) -> str:
    if index == 2:
        return (f"{name} has {max(limit - used, 0)} of its max_quota ({limit} bytes) left, "
                f"the entry needs {claim} more")
    return (f"{name} holds {used} {_WHAT[index]} (with this run's), its {_FIELDS[index]} "
            f"is {limit}")

