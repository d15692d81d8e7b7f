"""Filters and DNs, escaped by construction (RFC 4515, RFC 4514).

Callers never write filter strings or DNs by hand: every value passes through
one of these helpers, which use python-ldap's own escaping (``ldap.filter``,
``ldap.dn``); libldap encodes filters for the assertion control.
"""

from __future__ import annotations

from typing import NewType

from ldap.controls.libldap import AssertionControl
from ldap.dn import dn2str, escape_dn_chars, str2dn
from ldap.filter import escape_filter_chars

Filter = NewType("Filter", str)


def eq(attr: str, value: str) -> Filter:
    """``(attr=value)`` with the value escaped (``*`` becomes ``\\2a``)."""
    return Filter(f"({attr}={escape_filter_chars(value)})")


def present(attr: str) -> Filter:
    return Filter(f"({attr}=*)")


def at_most(attr: str, value: int | str) -> Filter:
    """``(attr<=value)`` for an attribute with an ordering rule: an INTEGER, or a
    string such as a generalized time (escaped)."""
    if isinstance(value, int):
        return Filter(f"({attr}<={int(value)})")
    return Filter(f"({attr}<={escape_filter_chars(value)})")


def ends_with(attr: str, suffix: str) -> Filter:
    """``(attr=*suffix)``, the suffix escaped."""
    return Filter(f"({attr}=*{escape_filter_chars(suffix)})")


def starts_with(attr: str, prefix: str) -> Filter:
    """``(attr=prefix*)``, the prefix escaped."""
    return Filter(f"({attr}={escape_filter_chars(prefix)}*)")


def all_of(*parts: Filter) -> Filter:
    return parts[0] if len(parts) == 1 else Filter("(&" + "".join(parts) + ")")


def any_of(*parts: Filter) -> Filter:
    return parts[0] if len(parts) == 1 else Filter("(|" + "".join(parts) + ")")


def not_(part: Filter) -> Filter:
    return Filter(f"(!{part})")


def rdn(attr: str, value: str) -> str:
    """One RDN ``attr=value`` with the value escaped."""
    return f"{attr}={escape_dn_chars(value)}"


def parent_dn(dn: str) -> str:
    """The DN one level up (escaped commas in the RDN handled)."""
    return str(dn2str(str2dn(dn)[1:]))


def assertion(flt: Filter) -> AssertionControl:
    """A critical RFC 4528 assertion control: the write applies only if ``flt`` matches."""
    return AssertionControl(True, flt)
