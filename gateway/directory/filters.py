"""Filters and DNs, escaped by construction (RFC 4515, RFC 4514).

Callers never write filter strings or DNs by hand: every value passes through
one of these helpers. ldap3's pure functions do the escaping and the BER
encoding of filters (for the assertion control); no ldap3 connection is used.
"""

from __future__ import annotations

from typing import NewType

from ldap3.operation.search import compile_filter, parse_filter
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn, to_dn
from pyasn1.codec.ber import encoder

Filter = NewType("Filter", str)
ASSERTION_OID = "1.3.6.1.1.12"


def eq(attr: str, value: str) -> Filter:
    """``(attr=value)`` with the value escaped (``*`` becomes ``\\2a``)."""
    return Filter(f"({attr}={escape_filter_chars(value)})")


def present(attr: str) -> Filter:
    return Filter(f"({attr}=*)")


def ends_with(attr: str, suffix: str) -> Filter:
    """``(attr=*suffix)``, the suffix escaped."""
    return Filter(f"({attr}=*{escape_filter_chars(suffix)})")


def all_of(*parts: Filter) -> Filter:
    return parts[0] if len(parts) == 1 else Filter("(&" + "".join(parts) + ")")


def any_of(*parts: Filter) -> Filter:
    return parts[0] if len(parts) == 1 else Filter("(|" + "".join(parts) + ")")


def rdn(attr: str, value: str) -> str:
    """One RDN ``attr=value`` with the value escaped."""
    return f"{attr}={escape_rdn(value)}"


def parent_dn(dn: str) -> str:
    """The DN one level up (escaped commas in the RDN handled)."""
    return ",".join(to_dn(dn)[1:])


def assertion_value(flt: Filter) -> bytes:
    """The BER value of an RFC 4528 assertion control for ``flt``."""
    node = parse_filter(flt, None, True, True, None, False)
    return bytes(encoder.encode(compile_filter(node.elements[0])))
