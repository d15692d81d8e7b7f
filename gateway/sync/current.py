"""Reading what LDAP holds for some domains: one paged search, few attributes.

ldap3 decodes in pure Python, so the sync asks only for the attributes it
compares and reads domain entries, accounts and aliases of the listed
domains in one paged search. Up to :data:`OR_LIMIT` domains are selected in
the filter (``dc=`` for domain entries, ``mail=*@domain`` for addresses);
for more, every entry is read and the rest dropped here, which is cheaper
than a huge OR evaluated for every entry.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from .. import passwords
from ..directory import Directory, Entry, Filter, all_of, any_of, ends_with, eq
from ..mail import (
    A_DISABLED,
    A_MAIL,
    A_ORIGIN,
    A_PASSWORD,
    A_SENDER,
    A_TARGET,
    OC_ACCOUNT,
    OC_ALIAS,
    OC_DOMAIN,
)
from .plan import Existing

OR_LIMIT = 200
PAGE_SIZE = 2000
ATTRS = ("objectClass", "dc", A_MAIL, A_PASSWORD, A_SENDER, A_DISABLED, A_TARGET, A_ORIGIN)
Progress = Callable[[str, int, int], None]


@dataclass
class Current:
    domains: set[str] = field(default_factory=set)        # domain entries present
    entries: list[Existing] = field(default_factory=list)  # accounts and aliases


def _filter(domains: Collection[str] | None) -> Filter:
    classes = (eq("objectClass", OC_ACCOUNT), eq("objectClass", OC_ALIAS))
    if domains is None or len(domains) > OR_LIMIT:
        return any_of(eq("objectClass", OC_DOMAIN), *classes)
    names = sorted(domains)
    return any_of(
        all_of(eq("objectClass", OC_DOMAIN), any_of(*(eq("dc", d) for d in names))),
        all_of(any_of(*classes), any_of(*(ends_with(A_MAIL, "@" + d) for d in names))),
    )


def read_current(directory: Directory, domains: Collection[str] | None,
                 progress: Progress | None = None) -> Current:
    """Domain entries, accounts and aliases of ``domains`` (None: all)."""
    current = Current()
    if domains is not None and not domains:
        return current
    wanted = set(domains) if domains is not None else None
    base = f"ou=domains,{directory.base_dn}"
    seen = 0
    for entry in directory.iterate(base, _filter(domains), ATTRS, page_size=PAGE_SIZE):
        seen += 1
        if progress is not None and seen % 5000 == 0:
            progress("reading", seen, 0)
        classes = {c.lower() for c in entry.all("objectClass")}
        if OC_DOMAIN.lower() in classes:
            name = (entry.first("dc") or "").lower()
            if wanted is None or name in wanted:
                current.domains.add(name)
            continue
        existing = _existing(entry, classes)
        if existing is not None and (wanted is None or existing.domain in wanted):
            current.entries.append(existing)
    if progress is not None:
        progress("reading", seen, seen)
    return current


def _existing(entry: Entry, classes: set[str]) -> Existing | None:
    address = (entry.first(A_MAIL) or "").lower()
    if "@" not in address:
        return None
    origin = entry.first(A_ORIGIN)
    if OC_ACCOUNT.lower() in classes:
        return Existing(
            dn=entry.dn, address=address, kind="account", origin=origin,
            password=passwords.from_ldap(entry.first(A_PASSWORD) or ""),
            whitelist=tuple(entry.all(A_SENDER)),
            submission_disabled=(entry.first(A_DISABLED) or "").upper() == "TRUE")
    if OC_ALIAS.lower() in classes:
        return Existing(dn=entry.dn, address=address, kind="alias", origin=origin,
                        targets=tuple(entry.all(A_TARGET)))
    return None
