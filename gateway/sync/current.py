"""Reading what LDAP holds for some domains: few searches, few attributes.

python-ldap still builds a Python object per value, so the sync asks only for
the attributes it compares (:data:`gateway.entries.SYNC_ATTRS`). First the
domain entries (a small indexed search for ``dc``), then accounts and aliases
in one paged search. That search selects the listed domains in its filter
(``mail=*@domain`` alternatives) only when it pays: when some domains in LDAP
are not listed and the listed ones are at most :data:`OR_LIMIT`. Otherwise it
reads every entry and drops the unlisted here, since slapd evaluates a long OR
of substring filters for every entry (100 alternatives over 100 000 entries:
0.9 s of 2.7).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from ..directory import Directory, Filter, all_of, any_of, ends_with, eq
from ..entries import (
    A_MAIL,
    DOMAIN_ATTRS,
    OC_ACCOUNT,
    OC_ALIAS,
    OC_DOMAIN,
    SYNC_ATTRS,
    Domain,
    Existing,
    Layout,
    decode_domain,
    decode_existing,
)

OR_LIMIT = 200
PAGE_SIZE = 2000
Progress = Callable[[str, int, int], None]


@dataclass
class Current:
    domains: set[str] = field(default_factory=set)        # domain entries present
    entries: list[Existing] = field(default_factory=list)  # accounts and aliases
    # The listed domains' limits and counters, read before their entries.
    counters: dict[str, Domain] = field(default_factory=dict)


def _entries_filter(domains: Collection[str] | None) -> Filter:
    classes = any_of(eq("objectClass", OC_ACCOUNT), eq("objectClass", OC_ALIAS))
    if domains is None:
        return classes
    return all_of(classes, any_of(*(ends_with(A_MAIL, "@" + d) for d in sorted(domains))))


def read_current(directory: Directory, domains: Collection[str] | None,
                 progress: Progress | None = None) -> Current:
    """Domain entries, accounts and aliases of ``domains`` (None: all)."""
    current = Current()
    if domains is not None and not domains:
        return current
    wanted = set(domains) if domains is not None else None
    base = Layout(directory.base_dn).domains
    found = [decode_domain(e) for e in directory.find(base, eq("objectClass", OC_DOMAIN),
                                                      list(DOMAIN_ATTRS))]
    present = {d.name for d in found}
    current.domains = present if wanted is None else present & wanted
    current.counters = {d.name: d for d in found if d.name in current.domains}
    selective = wanted is not None and bool(present - wanted) and len(wanted) <= OR_LIMIT
    seen = 0
    for entry in directory.iterate(base, _entries_filter(wanted if selective else None),
                                   SYNC_ATTRS, page_size=PAGE_SIZE):
        seen += 1
        if progress is not None and seen % 5000 == 0:
            progress("reading", seen, 0)
        existing = decode_existing(entry)
        if existing is not None and (wanted is None or existing.domain in wanted):
            current.entries.append(existing)
    if progress is not None:
        progress("reading", seen, seen)
    return current
