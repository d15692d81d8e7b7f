"""The sync's diff: desired state + current LDAP state -> changes. Pure.

Rules (SPEC.md section 2), for the domains the documents list:

* a wanted address with no entry is created, owned by the sync;
* a wanted address with an entry of the same kind is updated in the fields
  that differ, and only in fields the document states (an absent
  ``spoofing_whitelist``, ``submission_disabled`` or ``quota`` keeps its LDAP
  value);
* an entry made through the API (``mailgateOrigin: api``) or by hand (no
  origin) that the document lists is taken over: its origin becomes ``sync``
  (the plan marks it, apply logs it);
* an entry the sync owns that the document no longer lists is deleted;
  entries of other origins are never deleted;
* kind changes (an alias in LDAP, an account in the document, or the reverse)
  replace the entry (delete, then add) only when the sync owns it; otherwise
  the entry is skipped, reported, and left as it is: an address someone
  made through the API is not turned into something else behind their back;
* an address that is (or is to be) both an account and an alias is one entry
  whose roles change by an update (field ``kind``, one atomic modify): a
  role is added to any entry (taking it over like any update), but taken
  away only from an entry the sync owns; otherwise the address is skipped;
* protected addresses (skipped while validating) and addresses that several
  LDAP entries carry are left exactly as they are.

Domains not listed are not looked at. The domains' limits are not the
plan's business: :mod:`.limits` skips what does not fit when the plan is
applied (a new account's quota, when the document gives none, is its
domain's ``default_quota``, also set there).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, overload

from ..entries import ORIGIN_SYNC, Domain, Existing
from .records import Desired, Skip, UnknownKey, Want, WantAccount, WantAlias, WantBoth

# Changes are tuples too: a big first import plans a million creates.

class Create(NamedTuple):
    want: Want


class Update(NamedTuple):
    existing: Existing
    want: Want
    changes: dict[str, object]   # field -> new value; "origin" means a takeover

    @property
    def takeover(self) -> bool:
        return "origin" in self.changes


class Replace(NamedTuple):
    existing: Existing   # owned by the sync, of the other kind
    want: Want


class Delete(NamedTuple):
    existing: Existing


class Creates(Sequence[Create]):
    """The plan's creates, stored as their Wants and handed out as Create.

    A first import of a big document plans a million creates: a list of
    Create tuples would add 60 MB to what the Wants already hold.
    """

    def __init__(self, wants: Iterable[Want] = ()) -> None:
        self.wants: list[Want] = list(wants)

    def append(self, create: Create) -> None:
        self.wants.append(create.want)

    def __len__(self) -> int:
        return len(self.wants)

    def __iter__(self) -> Iterator[Create]:
        return map(Create, self.wants)

    @overload
    def __getitem__(self, index: int) -> Create: ...

    @overload
    def __getitem__(self, index: slice) -> list[Create]: ...

    def __getitem__(self, index: int | slice) -> Create | list[Create]:
        if isinstance(index, slice):
            return [Create(w) for w in self.wants[index]]
        return Create(self.wants[index])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Creates):
            return self.wants == other.wants
        return isinstance(other, list) and list(self) == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Creates({len(self)} entries)"


@dataclass
class Plan:
    domains: list[str] = field(default_factory=list)       # domain entries to add
    creates: Creates = field(default_factory=Creates)
    updates: list[Update] = field(default_factory=list)
    replaces: list[Replace] = field(default_factory=list)
    deletes: list[Delete] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    unknown_keys: list[UnknownKey] = field(default_factory=list)   # ignored, reported
    unchanged: int = 0
    managed: int = 0      # sync-owned entries in the listed domains before the run
    # What each listed domain held as read: [accounts, aliases, quota allocated],
    # counted as gateway.tenants counts, and its counters read just before
    # (gateway.sync.limits compares them).
    held: dict[str, list[int]] = field(default_factory=dict)
    counters: dict[str, Domain] = field(default_factory=dict)

    @property
    def writes(self) -> int:
        return (len(self.domains) + len(self.creates) + len(self.updates)
                + 2 * len(self.replaces) + len(self.deletes))

    @property
    def takeovers(self) -> int:
        return sum(1 for u in self.updates if u.takeover)

    def counts(self) -> dict[str, int]:
        return {"domains_created": len(self.domains), "created": len(self.creates),
                "updated": len(self.updates), "taken_over": self.takeovers,
                "replaced": len(self.replaces), "deleted": len(self.deletes),
                "skipped": len(self.skipped), "unchanged": self.unchanged,
                "managed": self.managed}


def make_plan(desired: Desired, existing: Iterable[Existing],
              existing_domains: Iterable[str]) -> Plan:
    """The changes that bring the listed domains to ``desired``."""
    plan = Plan(skipped=list(desired.skipped), unknown_keys=list(desired.unknown_keys))
    plan.domains = sorted(desired.domains - set(existing_domains))
    listed, wanted, protected = desired.domains, desired.entries, desired.protected

    # Hot loops (a full run compares every entry): one dict entry per address,
    # a list only for the rare address that several LDAP entries carry.
    by_address: dict[str, Existing] = {}
    several: dict[str, list[Existing]] = {}
    held = plan.held = {d: [0, 0, 0] for d in listed}
    for entry in existing:
        address = entry.address
        domain = address.rpartition("@")[2]
        if domain in listed:
            first = by_address.setdefault(address, entry)
            if first is not entry:
                several.setdefault(address, [first]).append(entry)
            counts = held[domain]
            if entry.kind != "alias":
                counts[0] += 1
                counts[2] += entry.quota
            if entry.kind != "account":
                counts[1] += 1

    unchanged = managed = 0
    for address, current in by_address.items():
        entries = several.get(address) if several else None
        if entries is not None:
            managed += sum(1 for e in entries if e.managed)
        elif current.managed:
            managed += 1
        if address in protected:
            continue
        if entries is not None:
            name, _, domain = address.rpartition("@")
            plan.skipped.append(Skip(domain, name, f"{len(entries)} LDAP entries carry this "
                                     "address; left as they are"))
            continue
        want = wanted.get(address)
        if want is None:
            if current.managed:
                plan.deletes.append(Delete(current))
            continue
        if want.kind != current.kind:
            pure = current.kind != "both" and want.kind != "both"
            if pure and current.managed:
                plan.replaces.append(Replace(current, want))
                continue
            if pure or (want.kind != "both" and not current.managed):
                plan.skipped.append(Skip(want.domain, want.name, _kind_clash(current, want)))
                continue
        changes = _differences(current, want)
        if changes:
            plan.updates.append(Update(current, want, changes))
        else:
            unchanged += 1
    plan.unchanged, plan.managed = unchanged, managed

    plan.creates = Creates(w for a, w in wanted.items() if a not in by_address)
    return plan


_KIND_NAMES = {"account": "an account", "alias": "an alias", "both": "an account and an alias"}


def _kind_clash(current: Existing, want: Want) -> str:
    made = "through the API" if (current.origin or "").lower() == "api" else "by hand"
    if current.kind == "both":
        lost = "alias" if want.kind == "account" else "account"
        return (f"exists as an account and an alias made {made}; the document lists only "
                f"{_KIND_NAMES[want.kind]}. Left as it is: delete the {lost} to let the sync "
                "manage the address")
    return (f"exists as {_KIND_NAMES[current.kind]} made {made}; the document lists "
            f"{_KIND_NAMES[want.kind]}. Left as it is: delete the {current.kind} to let the "
            f"sync create the {want.kind}")


def _same(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    return a == b or {x.lower() for x in a} == {x.lower() for x in b}


def _differences(current: Existing, want: Want) -> dict[str, object]:
    changes: dict[str, object] = {}
    if isinstance(want, WantBoth):
        account: WantAccount | None = want.account
        alias: WantAlias | None = want.alias
    else:
        account = want if isinstance(want, WantAccount) else None
        alias = want if isinstance(want, WantAlias) else None
    if account is not None:
        if current.password != account.password:
            changes["password"] = account.password
        if account.whitelist is not None and not _same(current.whitelist, account.whitelist):
            changes["spoofing_whitelist"] = account.whitelist
        if (account.submission_disabled is not None
                and current.submission_disabled != account.submission_disabled):
            changes["submission_disabled"] = account.submission_disabled
        if (account.subaddress_extension is not None
                and current.subaddress_extension != account.subaddress_extension):
            changes["subaddress_extension"] = account.subaddress_extension
        if account.quota is not None and current.quota != account.quota:
            changes["quota"] = account.quota
    if alias is not None and not _same(current.targets, alias.targets):
        changes["to"] = alias.targets
    if want.kind != current.kind:
        changes["kind"] = want.kind
    if not current.managed:
        changes["origin"] = ORIGIN_SYNC
    return changes


def refusal(plan: Plan, max_fraction: float) -> str | None:
    """Why the delete guard refuses ``plan`` (None: it may run)."""
    deletes = len(plan.deletes)
    if deletes == 0 or deletes <= max_fraction * plan.managed:
        return None
    share = deletes / plan.managed if plan.managed else 1.0
    return (f"would delete {deletes} of {plan.managed} sync-managed entries "
            f"({share:.0%}, more than the {max_fraction:.0%} of "
            "MAILGATE_SYNC_MAX_DELETE_FRACTION); run with --force to apply")
