"""Parsing and normalising mail addresses, domains, recipient lists, whitelists.

Pure functions, no I/O. Every parser raises :class:`ValueError` with a short
reason a person can act on; callers attach the field name. Normal forms:

* a local part is an RFC 5321 dot-atom of at most 64 octets, lower-cased;
* a domain is an IDNA A-label (UTS #46 mapping), lower-cased, at least two
  labels, no trailing dot;
* an address is ``local@domain`` in those forms (at most 254 octets).
"""

from __future__ import annotations

import functools
import re
from typing import NamedTuple

import idna

# RFC 5322 atext; a dot-atom is atext runs joined by single dots.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_ATOM = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
_LDH_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
MAX_LOCAL = 64
MAX_DOMAIN = 253
CATCH_ALL = "*"   # the local part of a domain's catch-all alias (SPEC.md section 7)
MAX_ADDRESS = 254
MAX_LIST_ITEMS = 1000
WILDCARD = "*"


class Address(NamedTuple):
    local: str
    domain: str

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"


def normalize_local(value: str) -> str:
    """Return the lower-cased local part or raise ValueError."""
    if not value:
        raise ValueError("must not be empty")
    if not value.isascii() or not _DOT_ATOM.fullmatch(value):
        raise ValueError("not a valid local part (RFC 5321 dot-atom: letters, digits, "
                         "!#$%&'*+/=?^_`{|}~- and single dots between them)")
    if len(value) > MAX_LOCAL:
        raise ValueError(f"longer than {MAX_LOCAL} octets")
    return value.lower()


def normalize_domain(value: str) -> str:
    """Return the domain as a lower-case IDNA A-label or raise ValueError."""
    if len(value) > _CACHED_LENGTH:
        return _normalize_domain(value)
    domain, error = _cached_domain(value)
    if error:
        raise ValueError(error)
    return domain


# IDNA (UTS #46) costs some 20 us a domain, and every request and sync entry
# names one of few domains: answers are cached (errors too, as their message).
_CACHED_LENGTH = 4 * MAX_DOMAIN


@functools.lru_cache(maxsize=4096)
def _cached_domain(value: str) -> tuple[str, str]:
    try:
        return _normalize_domain(value), ""
    except ValueError as exc:
        return "", str(exc)


def _normalize_domain(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    if value.endswith("."):
        raise ValueError("must not end with a dot")
    try:
        ascii_domain = idna.encode(value, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        raise ValueError("not a valid domain name") from None
    ascii_domain = ascii_domain.lower()
    labels = ascii_domain.split(".")
    if len(labels) < 2:
        raise ValueError("must have at least two labels, like example.com")
    if len(ascii_domain) > MAX_DOMAIN:
        raise ValueError(f"longer than {MAX_DOMAIN} octets")
    if not all(_LDH_LABEL.fullmatch(label) for label in labels):
        raise ValueError("not a valid domain name")
    if labels[-1].isdigit():
        raise ValueError("not a valid domain name (numeric top-level label)")
    return ascii_domain


def parse_address(value: str) -> Address:
    """Parse ``local@domain`` into its normal form or raise ValueError."""
    local, sep, domain = value.rpartition("@")
    if not sep or not local:
        raise ValueError("not an address of the form name@domain")
    address = Address(normalize_local(local), normalize_domain(domain))
    if len(str(address)) > MAX_ADDRESS:
        raise ValueError(f"longer than {MAX_ADDRESS} octets")
    return address


def _items(value: str) -> list[str]:
    items = [item.strip() for item in value.split(",")]
    items = [item for item in items if item]
    if len(items) > MAX_LIST_ITEMS:
        raise ValueError(f"more than {MAX_LIST_ITEMS} items")
    return items


def parse_recipients(value: str) -> list[str]:
    """Parse a comma-separated recipient list: normalised, de-duplicated, in order."""
    items = _items(value)
    if not items:
        raise ValueError("must name at least one recipient address")
    result: list[str] = []
    for item in items:
        try:
            address = str(parse_address(item))
        except ValueError as exc:
            raise ValueError(f"{item!r}: {exc}") from None
        if address not in result:
            result.append(address)
    return result


def parse_whitelist(value: str) -> list[str]:
    """Parse a spoofing whitelist: addresses and domains, or '*' alone.

    An empty string is the empty list (only the account's own address).
    """
    items = _items(value)
    if WILDCARD in items:
        if len(items) > 1:
            raise ValueError("'*' permits every sender and must stand alone")
        return [WILDCARD]
    result: list[str] = []
    for item in items:
        try:
            normal = str(parse_address(item)) if "@" in item else normalize_domain(item)
        except ValueError as exc:
            raise ValueError(f"{item!r}: {exc}") from None
        if normal not in result:
            result.append(normal)
    return result


def sender_allowed(login: str, sender: str, whitelist: list[str]) -> bool:
    """May the account ``login`` use ``sender``? (the milter's rule, same as Postfix's map)

    Both arguments are normalised addresses; ``whitelist`` holds stored items.
    """
    if sender == login:
        return True
    domain = sender.rpartition("@")[2]
    items = {item.lower() for item in whitelist}
    return WILDCARD in items or sender in items or domain in items
