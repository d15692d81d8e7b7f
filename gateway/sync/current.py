"""Reading what LDAP holds for some domains: few searches, few attributes.

ldap3 and python-ldap still decode in Python, so the sync asks only for the
attributes it compares. First the domain entries (a small indexed search for
``dc``), then accounts and aliases in one paged search. That search selects
the listed domains in its filter (``mail=*@domain`` alternatives) only when
it pays: when some domains in LDAP are not listed and the listed ones are at
most :data:`OR_LIMIT`. Otherwise it reads every entry and drops the unlisted
here, since slapd evaluates a long OR of substring filters for every entry
(100 alternatives over 100 000 entries: 0.9 s of 2.7).
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
ATTRS = ("objectClass", A_MAIL, A_PASSWORD, A_SENDER, A_DISABLED, A_TARGET, A_ORIGIN)
Progress = Callable[[str, int, int], None]


@dataclass
class Current:
    domains: set[str] = field(default_factory=set)        # domain entries present
    entries: list[Existing] = field(default_factory=list)  # accounts and aliases


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
    base = f"ou=domains,{directory.base_dn}"
    present = {(e.first("dc") or "").lower()
               for e in directory.find(base, eq("objectClass", OC_DOMAIN), ["dc"])}
    current.domains = present if wanted is None else present & wanted
    selective = wanted is not None and bool(present - wanted) and len(wanted) <= OR_LIMIT
    seen = 0
    for entry in directory.iterate(base, _entries_filter(wanted if selective else None),
                                   ATTRS, page_size=PAGE_SIZE):
        seen += 1
        if progress is not None and seen % 5000 == 0:
            progress("reading", seen, 0)
        existing = _existing(entry)
        if existing is not None and (wanted is None or existing.domain in wanted):
            current.entries.append(existing)
    if progress is not None:
        progress("reading", seen, seen)
    return current


_ACCOUNT = OC_ACCOUNT.encode()
_ALIAS = OC_ALIAS.encode()
_TRUE = b"TRUE"
# One str per origin value, not one per entry.
_ORIGINS = {b"sync": "sync", b"api": "api"}
_new = tuple.__new__   # an Existing from its fields, without NamedTuple's keyword handling


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def _kind(classes: list[bytes]) -> str | None:
    if _ACCOUNT in classes:
        return "account"
    if _ALIAS in classes:
        return "alias"
    # Object class names are case-insensitive; entries made by hand may differ.
    lowered = {c.lower() for c in classes}
    if _ACCOUNT.lower() in lowered:
        return "account"
    return "alias" if _ALIAS.lower() in lowered else None


def _existing(entry: Entry) -> Existing | None:
    # Hot loop (100 000 entries and more): raw attribute access, few calls.
    attrs = entry.attrs
    mail = attrs.get(A_MAIL)
    if not mail:
        return None
    address = mail[0].decode("utf-8", "replace").lower()
    if "@" not in address:
        return None
    kind = _kind(attrs.get("objectClass") or [])
    if kind is None:
        return None
    values = attrs.get(A_ORIGIN)
    origin = (_ORIGINS.get(values[0]) or values[0].decode("utf-8", "replace")) if values \
        else None
    if kind == "account":
        values = attrs.get(A_PASSWORD)
        password = passwords.from_ldap(values[0].decode("utf-8", "replace")) if values else ""
        values = attrs.get(A_SENDER)
        whitelist = tuple(map(_text, values)) if values else ()
        values = attrs.get(A_DISABLED)
        disabled = values is not None and values[0].upper() == _TRUE
        return _new(Existing, (entry.dn, address, kind, origin, password, whitelist, disabled,
                               ()))
    values = attrs.get(A_TARGET)
    return _new(Existing, (entry.dn, address, kind, origin, "", (), False,
                           tuple(map(_text, values)) if values else ()))
