"""The directory's vocabulary: object classes, attributes, DN layout, codecs, records.

The one module that knows how mailgate's data looks in LDAP
(``ldif/schema/mailgate.ldif``, ``ldif/README.md``)::

    <base>
      ou=domains                        DIT of the mail servers' lookups
        dc=<domain>                     mailgateDomain
          mail=<local@domain>           mailgateAccount | mailgateAlias
                                        | mailgateAccount + mailgateForwarding (both)
      ou=gateway                        the gateway's own state
        cn=<name>                       mailgateStateObject (sync lock, state, runs)
        ou=tokens
          cn=<id>                       mailgateToken

The domain rules (:mod:`gateway.mail`), the sync, the milter, the tokens and
the lists all read and write entries through the names, encoders and
decoders here. A new attribute touches this module, the schema and the
feature that uses it.

Codecs: a boolean is stored as ``TRUE`` or by the attribute's absence (the
mail servers' filters test for ``TRUE``); a password as ``{CRYPT}<crypt
hash>`` (:mod:`gateway.passwords`); an address in lower case. Decoders take
python-ldap's raw ``{attribute: [bytes]}`` and are hot paths (a list or a
sync decodes up to a million entries): they avoid helper calls on purpose.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from . import passwords
from .directory import Entry, Filter, any_of, eq, rdn

# -- object classes and attributes --------------------------------------------

OC_DOMAIN = "mailgateDomain"
OC_ACCOUNT = "mailgateAccount"
OC_ALIAS = "mailgateAlias"
# The alias part of an address that also is an account (SPEC.md section 7): an
# auxiliary class on the account's entry, so one address stays one entry.
OC_FORWARDING = "mailgateForwarding"
OC_STATE = "mailgateStateObject"
OC_TOKEN = "mailgateToken"  # noqa: S105 (an object class name)

A_DC = "dc"
A_CN = "cn"
A_MAIL = "mail"
A_PASSWORD = "userPassword"  # noqa: S105 (an attribute name)
A_SENDER = "mailgateSenderAllowed"
A_DISABLED = "mailgateSubmissionDisabled"
A_SUBADDRESS = "mailgateSubaddress"
A_TARGET = "mailgateAliasTarget"
A_ORIGIN = "mailgateOrigin"
A_STATE = "mailgateState"
A_LOCK_OWNER = "mailgateLockOwner"
A_LOCK_EXPIRES = "mailgateLockExpires"
A_TOKEN_HASH = "mailgateTokenHash"  # noqa: S105 (an attribute name)
A_TOKEN_DOMAIN = "mailgateTokenDomain"  # noqa: S105 (an attribute name)
A_TOKEN_READ_ONLY = "mailgateTokenReadOnly"  # noqa: S105 (an attribute name)
A_DESCRIPTION = "description"
A_QUOTA = "mailgateQuota"
# A domain's limits (0 or absent: none) and its counters (gateway.tenants).
A_MAX_ACCOUNTS = "mailgateMaxAccounts"
A_MAX_ALIASES = "mailgateMaxAliases"
A_DEFAULT_QUOTA = "mailgateDefaultQuota"
A_MAX_QUOTA = "mailgateMaxQuota"
A_ACCOUNT_COUNT = "mailgateAccountCount"
A_ALIAS_COUNT = "mailgateAliasCount"
A_QUOTA_ALLOCATED = "mailgateQuotaAllocated"
DOMAIN_LIMIT_ATTRS = (A_MAX_ACCOUNTS, A_MAX_ALIASES, A_DEFAULT_QUOTA, A_MAX_QUOTA)
DOMAIN_COUNTER_ATTRS = (A_ACCOUNT_COUNT, A_ALIAS_COUNT, A_QUOTA_ALLOCATED)
DOMAIN_ATTRS = (A_DC, *DOMAIN_LIMIT_ATTRS, *DOMAIN_COUNTER_ATTRS)

ACCOUNT_ATTRS = (A_MAIL, A_PASSWORD, A_SENDER, A_DISABLED, A_SUBADDRESS, A_QUOTA, A_ORIGIN)
ALIAS_ATTRS = (A_MAIL, A_TARGET, A_ORIGIN)
# Lists show no origin: reading less is what makes 10 000-entry pages fast.
ACCOUNT_LIST_ATTRS = ACCOUNT_ATTRS[:-1]
ALIAS_LIST_ATTRS = ALIAS_ATTRS[:-1]
# What the sync compares, for accounts and aliases alike.
SYNC_ATTRS = ("objectClass", A_MAIL, A_PASSWORD, A_SENDER, A_DISABLED, A_SUBADDRESS, A_TARGET,
              A_ORIGIN, A_QUOTA)

# The two roles an address may have; "both" is an account with a forwarding.
KIND_ACCOUNT, KIND_ALIAS, KIND_BOTH = "account", "alias", "both"
# Entries with an alias part: an alias, or an account with a forwarding.
ALIAS_ROLE = any_of(eq("objectClass", OC_ALIAS), eq("objectClass", OC_FORWARDING))
ACCOUNT_ROLE: Filter = eq("objectClass", OC_ACCOUNT)

ORIGIN_API = "api"
ORIGIN_SYNC = "sync"
TRUE = "TRUE"


# -- DN layout ---------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Where each kind of entry lives below ``base_dn`` (values escaped)."""

    base_dn: str

    @property
    def domains(self) -> str:
        return f"ou=domains,{self.base_dn}"

    def domain(self, domain: str) -> str:
        return f"{rdn(A_DC, domain)},{self.domains}"

    def address(self, address: str) -> str:
        """The DN of the account or alias ``local@domain`` (lower case)."""
        return f"{rdn(A_MAIL, address)},{self.domain(address.rpartition('@')[2])}"

    @property
    def gateway(self) -> str:
        return f"ou=gateway,{self.base_dn}"

    def state(self, name: str) -> str:
        return f"{rdn(A_CN, name)},{self.gateway}"

    @property
    def tokens(self) -> str:
        return f"ou=tokens,{self.gateway}"

    def token(self, token_id: str) -> str:
        return f"{rdn(A_CN, token_id)},{self.tokens}"


# -- value codecs -------------------------------------------------------------------


def encode_bool(value: bool | None) -> list[str]:
    """Only TRUE is written; FALSE is the attribute's absence."""
    return [TRUE] if value else []


_TRUE = TRUE.encode()


def decode_bool(values: list[bytes] | None) -> bool:
    return values is not None and bool(values) and values[0].upper() == _TRUE


def encode_int(value: int) -> list[str]:
    """A count, limit or quota; 0 (none) is the attribute's absence."""
    return [str(value)] if value else []


def decode_int(values: list[bytes] | None) -> int:
    """0 for an absent attribute; a value made by hand that is no integer reads as 0."""
    if not values:
        return 0
    try:
        return max(0, int(values[0]))
    except ValueError:
        return 0


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


# -- accounts and aliases as the API sees them ------------------------------------


class Account(NamedTuple):
    # A NamedTuple, not a dataclass: a list builds 10 000 of them per request.
    id: str
    name: str
    domain: str
    password: str
    spoofing_whitelist: str
    submission_disabled: bool
    subaddress_extension: bool = False
    origin: str | None = None
    dn: str = ""
    quota: int = 0                       # bytes; 0: no limit


class Alias(NamedTuple):
    id: str
    name: str
    domain: str
    to: str
    origin: str | None = None
    dn: str = ""


def account_attrs(address: str, crypt_hash: str, whitelist: Iterable[str],
                  submission_disabled: bool | None, origin: str,
                  subaddress_extension: bool | None = False,
                  quota: int = 0) -> dict[str, list[str]]:
    """The attributes of a new account entry (object class :data:`OC_ACCOUNT`)."""
    return {
        A_MAIL: [address],
        A_PASSWORD: [passwords.to_ldap(crypt_hash)],
        A_SENDER: list(whitelist),
        A_DISABLED: encode_bool(submission_disabled),
        A_SUBADDRESS: encode_bool(subaddress_extension),
        A_QUOTA: encode_int(quota),
        A_ORIGIN: [origin],
    }


def alias_attrs(address: str, targets: Iterable[str], origin: str) -> dict[str, list[str]]:
    """The attributes of a new alias entry (object class :data:`OC_ALIAS`)."""
    return {A_MAIL: [address], A_TARGET: list(targets), A_ORIGIN: [origin]}


def role_classes(kind: str) -> list[str]:
    """The object classes of an entry of ``kind`` (account, alias, both)."""
    if kind == KIND_ACCOUNT:
        return [OC_ACCOUNT]
    if kind == KIND_ALIAS:
        return [OC_ALIAS]
    return [OC_ACCOUNT, OC_FORWARDING]


def role_changes(kind: str) -> dict[str, list[str]]:
    """LDAP replacements that make an entry ``kind``; the values of a role it
    loses are removed. A change between mailgateAccount and mailgateAlias
    changes the structural class: send it with the Relax Rules control."""
    attrs: dict[str, list[str]] = {"objectClass": role_classes(kind)}
    if kind == KIND_ALIAS:
        for name in (A_PASSWORD, A_SENDER, A_DISABLED, A_SUBADDRESS, A_QUOTA):
            attrs[name] = []
    elif kind == KIND_ACCOUNT:
        attrs[A_TARGET] = []
    return attrs


def field_changes(changes: Mapping[str, object]) -> dict[str, list[str]]:
    """LDAP replacements for changed fields, by their API/JSON names.

    ``password`` is a crypt hash; ``spoofing_whitelist`` and ``to`` are
    lists; ``submission_disabled`` and ``subaddress_extension`` booleans;
    ``quota`` an integer (bytes); ``origin`` a string; ``kind`` the new role
    set (:func:`role_changes`).
    """
    attrs: dict[str, list[str]] = {}
    for name, value in changes.items():
        if name == "password":
            attrs[A_PASSWORD] = [passwords.to_ldap(str(value))]
        elif name == "spoofing_whitelist":
            attrs[A_SENDER] = [str(v) for v in value]  # type: ignore[attr-defined]
        elif name == "submission_disabled":
            attrs[A_DISABLED] = encode_bool(bool(value))
        elif name == "subaddress_extension":
            attrs[A_SUBADDRESS] = encode_bool(bool(value))
        elif name == "quota":
            attrs[A_QUOTA] = encode_int(int(value))  # type: ignore[call-overload]
        elif name == "to":
            attrs[A_TARGET] = [str(v) for v in value]  # type: ignore[attr-defined]
        elif name == "origin":
            attrs[A_ORIGIN] = [str(value)]
        elif name != "kind":
            raise ValueError(f"no attribute for the field {name!r}")
    if "kind" in changes:
        for attr, values in role_changes(str(changes["kind"])).items():
            attrs.setdefault(attr, values)
    return attrs


class Domain(NamedTuple):
    """A domain entry: its limits (0: none) and its counters (SPEC.md section 8).

    ``counted`` is False for a domain entry without counters (made by hand, or
    by a mailgate before domains had them): :mod:`gateway.tenants` counts it
    before the first change that needs the counts.
    """

    name: str
    max_accounts: int = 0
    max_aliases: int = 0
    default_quota: int = 0
    max_quota: int = 0
    accounts: int = 0
    aliases: int = 0
    quota_allocated: int = 0
    counted: bool = True
    dn: str = ""

    @property
    def over_limit(self) -> bool:
        return any(0 < limit < used for limit, used in (
            (self.max_accounts, self.accounts), (self.max_aliases, self.aliases),
            (self.max_quota, self.quota_allocated)))


def decode_domain(entry: Entry) -> Domain:
    attrs = entry.attrs
    values = attrs.get(A_DC)
    name = values[0].decode("utf-8", "replace").lower() if values else ""
    return Domain(name, decode_int(attrs.get(A_MAX_ACCOUNTS)),
                  decode_int(attrs.get(A_MAX_ALIASES)), decode_int(attrs.get(A_DEFAULT_QUOTA)),
                  decode_int(attrs.get(A_MAX_QUOTA)), decode_int(attrs.get(A_ACCOUNT_COUNT)),
                  decode_int(attrs.get(A_ALIAS_COUNT)),
                  decode_int(attrs.get(A_QUOTA_ALLOCATED)),
                  all(a in attrs for a in DOMAIN_COUNTER_ATTRS), entry.dn)


def domain_limit_attrs(limits: Mapping[str, int]) -> dict[str, list[str]]:
    """LDAP replacements for a domain's limits by their API names (0 removes one)."""
    names = dict(zip(DOMAIN_LIMIT_FIELDS, DOMAIN_LIMIT_ATTRS, strict=True))
    return {names[field]: encode_int(value) for field, value in limits.items()}


DOMAIN_LIMIT_FIELDS = ("max_accounts", "max_aliases", "default_quota", "max_quota")


# Lists turn up to 10 000 entries into accounts per request: these read the
# raw attribute lists directly rather than through Entry's helpers, and build
# the tuples without NamedTuple's keyword handling (B6 in docs/benchmarks.md).

_new = tuple.__new__


def _address(attrs: dict[str, list[bytes]]) -> tuple[str, str, str]:
    values = attrs.get(A_MAIL)
    address = values[0].decode("utf-8", "replace").lower() if values else ""
    name, _, domain = address.rpartition("@")
    return address, name, domain


def _origin(attrs: dict[str, list[bytes]]) -> str | None:
    values = attrs.get(A_ORIGIN)
    return (values[0].decode("utf-8", "replace") or None) if values else None


def decode_account(entry: Entry) -> Account:
    attrs = entry.attrs
    values = attrs.get(A_MAIL)
    address = values[0].decode("utf-8", "replace").lower() if values else ""
    name, _, domain = address.rpartition("@")
    values = attrs.get(A_PASSWORD)
    password = passwords.from_ldap(values[0].decode("utf-8", "replace")) if values else ""
    values = attrs.get(A_SENDER)
    whitelist = ",".join(map(_text, values)) if values else ""
    values = attrs.get(A_DISABLED)
    disabled = values[0].upper() == _TRUE if values else False
    values = attrs.get(A_SUBADDRESS)
    subaddress = values[0].upper() == _TRUE if values else False
    values = attrs.get(A_ORIGIN)
    origin = (values[0].decode("utf-8", "replace") or None) if values else None
    values = attrs.get(A_QUOTA)
    quota = decode_int(values) if values else 0
    return _new(Account, (address, name, domain, password, whitelist, disabled, subaddress,
                          origin, entry.dn, quota))


def decode_alias(entry: Entry) -> Alias:
    attrs = entry.attrs
    address, name, domain = _address(attrs)
    values = attrs.get(A_TARGET)
    return _new(Alias, (address, name, domain, ",".join(map(_text, values)) if values else "",
                        _origin(attrs), entry.dn))


def decode_whitelist(entry: Entry) -> list[str]:
    return [_text(v) for v in entry.attrs.get(A_SENDER, ())]


# -- accounts and aliases as the sync compares them ---------------------------------


class Existing(NamedTuple):
    """An account or alias as LDAP holds it (only what the sync compares).

    A NamedTuple: 100 000 of these are built per full run, and frozen
    dataclasses are several times slower to construct.
    """

    dn: str
    address: str
    kind: str                            # "account", "alias" or "both"
    origin: str | None
    password: str = ""                   # crypt hash, {CRYPT} tag removed
    whitelist: tuple[str, ...] = ()
    submission_disabled: bool = False
    targets: tuple[str, ...] = ()
    subaddress_extension: bool = False
    quota: int = 0

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]

    @property
    def managed(self) -> bool:
        return self.origin == ORIGIN_SYNC or (self.origin or "").lower() == ORIGIN_SYNC


_ACCOUNT = OC_ACCOUNT.encode()
_ALIAS = OC_ALIAS.encode()
_FORWARDING = OC_FORWARDING.encode()
# One str per origin value, not one per entry.
_ORIGINS = {b"sync": ORIGIN_SYNC, b"api": ORIGIN_API}


def _kind(classes: list[bytes]) -> str | None:
    if _ACCOUNT in classes:
        return KIND_BOTH if _FORWARDING in classes else KIND_ACCOUNT
    if _ALIAS in classes:
        return KIND_ALIAS
    # Object class names are case-insensitive; entries made by hand may differ.
    lowered = {c.lower() for c in classes}
    if _ACCOUNT.lower() in lowered:
        return KIND_BOTH if _FORWARDING.lower() in lowered else KIND_ACCOUNT
    return KIND_ALIAS if _ALIAS.lower() in lowered else None


def kind_of(entry: Entry) -> str | None:
    """``account``, ``alias``, ``both`` or None, from the entry's object classes."""
    return _kind(entry.attrs.get("objectClass") or [])


def decode_existing(entry: Entry) -> Existing | None:
    """The sync's view of an entry read with :data:`SYNC_ATTRS`; None if it is neither."""
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
    if kind != KIND_ALIAS:
        values = attrs.get(A_PASSWORD)
        password = passwords.from_ldap(values[0].decode("utf-8", "replace")) if values else ""
        values = attrs.get(A_SENDER)
        whitelist = tuple(map(_text, values)) if values else ()
        values = attrs.get(A_DISABLED)
        disabled = values is not None and values[0].upper() == _TRUE
        values = attrs.get(A_SUBADDRESS)
        subaddress = values is not None and values[0].upper() == _TRUE
        targets: tuple[str, ...] = ()
        if kind == KIND_BOTH:
            values = attrs.get(A_TARGET)
            targets = tuple(map(_text, values)) if values else ()
        values = attrs.get(A_QUOTA)
        return _new(Existing, (entry.dn, address, kind, origin, password, whitelist, disabled,
                               targets, subaddress, decode_int(values) if values else 0))
    values = attrs.get(A_TARGET)
    return _new(Existing, (entry.dn, address, kind, origin, "", (), False,
                           tuple(map(_text, values)) if values else (), False, 0))
