"""Parsing and validating Basic JSON documents into one desired state.

Pure: no I/O. The whole document set is checked before anything is written.

* A document that is not JSON, not UTF-8, or whose top level is not an object
  raises :class:`DocumentError`: the run changes nothing.
* A domain whose key is not a domain name, whose value is not an object, that
  has keys other than ``account`` and ``alias``, whose lists are not lists, or
  that appears twice in one document is *skipped as a whole*, in every
  document: it is treated as absent (untouched), because applying half of it
  would delete the other half.
* An entry with a problem (bad name, password not a crypt hash, bad
  recipient, bad whitelist, unknown field, ...) is skipped. Its address is
  *protected*: whatever LDAP holds for it stays as it is (not updated, not
  deleted).
* An address listed more than once (in one document or across documents, as
  account or alias) is skipped everywhere and protected, since no one can say
  which occurrence is right.

Normalisation follows the REST API (:mod:`gateway.addresses`): lower-case
dot-atom local parts, IDNA A-label domains, normalised recipient and
whitelist lists. Passwords must be crypt(3) hashes
(:func:`gateway.passwords.check_crypt_hash`); reasons never quote a password.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .. import passwords
from ..addresses import (
    MAX_ADDRESS,
    normalize_domain,
    normalize_local,
    parse_recipients,
    parse_whitelist,
)

ACCOUNT_FIELDS = frozenset({"name", "password", "spoofing_whitelist", "submission_disabled"})
ALIAS_FIELDS = frozenset({"name", "to"})
DOMAIN_FIELDS = frozenset({"account", "alias"})
_SHOWN = 200  # longest raw name or domain quoted in a report


class DocumentError(Exception):
    """A document as a whole cannot be used; the run must change nothing."""


@dataclass(frozen=True)
class Skip:
    """An entry (or a whole domain, name '') left as it is, and why."""

    domain: str
    name: str
    reason: str
    source: str = ""

    def as_json(self) -> dict[str, str]:
        return {"domain": self.domain, "name": self.name, "reason": self.reason,
                "source": self.source}


@dataclass(frozen=True)
class WantAccount:
    address: str
    name: str
    domain: str
    password: str                        # crypt hash, no {CRYPT} tag
    whitelist: tuple[str, ...] | None    # None: the document does not say
    submission_disabled: bool | None     # None: the document does not say
    kind: str = "account"


@dataclass(frozen=True)
class WantAlias:
    address: str
    name: str
    domain: str
    targets: tuple[str, ...]
    kind: str = "alias"


Want = WantAccount | WantAlias


@dataclass
class Desired:
    """What the documents ask for, after validation."""

    domains: set[str] = field(default_factory=set)            # listed, usable domains
    entries: dict[str, Want] = field(default_factory=dict)    # address -> wanted entry
    protected: set[str] = field(default_factory=set)          # addresses left as they are
    skipped: list[Skip] = field(default_factory=list)


class _Object(dict[str, Any]):
    """A JSON object that remembers keys it saw more than once."""

    duplicates: frozenset[str] = frozenset()


def _object(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object(pairs)
    if len(obj) != len(pairs):
        counts = Counter(k for k, _v in pairs)
        obj.duplicates = frozenset(k for k, n in counts.items() if n > 1)
    return obj


def parse_document(body: bytes, source: str = "") -> dict[str, Any]:
    """Decode one document; DocumentError if it is not a JSON object."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError(f"{source}: not UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text, object_pairs_hook=_object)
    except json.JSONDecodeError as exc:
        raise DocumentError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno} "
                            f"column {exc.colno})") from None
    except RecursionError:
        raise DocumentError(f"{source}: JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise DocumentError(f"{source}: the top level must be an object of domains")
    return data


def _shown(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


class _Builder:
    """Collects occurrences of addresses and skips across all documents."""

    def __init__(self) -> None:
        self.skipped: list[Skip] = []
        self.occurrences: dict[str, list[_Occurrence]] = {}
        self._domains: dict[str, str | ValueError] = {}
        self._recipients: dict[str, list[str] | ValueError] = {}

    # Big documents repeat the same domains and recipient lists a lot, and
    # IDNA is not cheap: both normalisers are memoised (bounded).
    def domain(self, value: str) -> str:
        return _memo(self._domains, value, normalize_domain)

    def recipients(self, value: str) -> list[str]:
        found: list[str] = _memo(self._recipients, value, parse_recipients)
        return list(found)

    def add(self, occ: _Occurrence) -> None:
        address = occ.want.address if occ.want else f"{occ.local}@{occ.domain}"
        self.occurrences.setdefault(address, []).append(occ)

    def invalid(self, domain: str, source: str, raw: str, local: str, reason: str) -> None:
        if not local and raw:
            local = _loose_local(raw) or ""
        if local:
            # Protect the entry this one most likely means.
            self.add(_Occurrence(None, domain, raw or local, local, source, reason))
        else:
            self.skipped.append(Skip(domain, raw, reason, source))


_MEMO_LIMIT = 100_000
_T = TypeVar("_T")


def _memo(cache: dict[str, _T | ValueError], value: str, parse: Callable[[str], _T]) -> _T:
    found = cache.get(value)
    if found is None:
        try:
            found = parse(value)
        except ValueError as exc:
            found = exc
        if len(cache) < _MEMO_LIMIT:
            cache[value] = found
    if isinstance(found, ValueError):
        raise found
    return found


@dataclass
class _Occurrence:
    want: Want | None        # None: the entry is invalid but names this address
    domain: str
    name: str                # as written, for reports
    local: str
    source: str
    reason: str = ""


def build_desired(documents: Sequence[tuple[str, Mapping[str, Any]]]) -> Desired:
    """Validate every document (``(source, parsed)`` pairs) into one Desired."""
    builder = _Builder()
    desired = Desired()
    bad_domains: dict[str, Skip] = {}
    good_parts: list[tuple[str, str, Mapping[str, Any]]] = []   # (source, domain, object)

    for source, document in documents:
        duplicates: frozenset[str] = getattr(document, "duplicates", frozenset())
        for key, value in document.items():
            try:
                domain = builder.domain(key)
            except ValueError as exc:
                builder.skipped.append(Skip(_shown(key), "", f"invalid domain: {exc}", source))
                continue
            problem = _domain_problem(key, value, duplicates)
            if problem:
                bad_domains.setdefault(domain, Skip(domain, "", problem, source))
            else:
                good_parts.append((source, domain, value))

    for source, domain, value in good_parts:
        if domain in bad_domains:
            continue
        desired.domains.add(domain)
        for item in value.get("account") or ():
            _account(builder, item, domain, source)
        for item in value.get("alias") or ():
            _alias(builder, item, domain, source)
    desired.skipped.extend(bad_domains.values())
    desired.skipped.extend(builder.skipped)

    for address, found in builder.occurrences.items():
        if len(found) == 1 and found[0].want is not None:
            desired.entries[address] = found[0].want
            continue
        desired.protected.add(address)
        if len(found) == 1:
            occ = found[0]
            desired.skipped.append(Skip(occ.domain, occ.name, occ.reason, occ.source))
            continue
        kinds = sorted({o.want.kind for o in found if o.want is not None})
        how = "as account and as alias" if len(kinds) > 1 else "more than once"
        reason = f"the address is listed {how} ({len(found)} times); every one skipped"
        for occ in found:
            desired.skipped.append(Skip(occ.domain, occ.name, reason, occ.source))
    return desired


def _domain_problem(key: str, value: object, duplicates: frozenset[str]) -> str:
    if key in duplicates:
        return "the domain appears more than once in one document; domain skipped"
    if not isinstance(value, dict):
        return "the domain's value must be an object; domain skipped"
    unknown = sorted(set(value) - DOMAIN_FIELDS)
    if unknown:
        return (f"unknown key {_shown(unknown[0])!r} (expected 'account' and 'alias'); "
                "domain skipped")
    if getattr(value, "duplicates", None):
        return "'account' or 'alias' given twice; domain skipped"
    for kind in sorted(DOMAIN_FIELDS):
        if kind in value and not isinstance(value[kind], list):
            return f"'{kind}' must be a list; domain skipped"
    return ""


def _loose_local(raw: str) -> str | None:
    """The local part a bad name most likely meant (to protect its entry)."""
    try:
        return normalize_local(raw.strip())
    except ValueError:
        return None


def _common(item: object, allowed: frozenset[str], domain: str) -> tuple[str, str, str]:
    """(name as written, normal local part or '', what is wrong or '')."""
    if not isinstance(item, dict):
        return "", "", "each entry must be an object"
    raw = item.get("name")
    if not isinstance(raw, str):
        return ("" if raw is None else _shown(raw)), "", "name: must be a string"
    try:
        local = normalize_local(raw)
    except ValueError as exc:
        return _shown(raw), "", f"name: {exc}"
    if len(local) + 1 + len(domain) > MAX_ADDRESS:
        return _shown(raw), "", f"name: the address is longer than {MAX_ADDRESS} octets"
    duplicates: frozenset[str] = getattr(item, "duplicates", frozenset())
    if duplicates:
        return raw, local, f"field {sorted(duplicates)[0]!r} given twice"
    unknown = sorted(set(item) - allowed)
    if unknown:
        return raw, local, f"unknown field {_shown(unknown[0])!r}"
    return raw, local, ""


def _account(builder: _Builder, item: object, domain: str, source: str) -> None:
    raw, local, reason = _common(item, ACCOUNT_FIELDS, domain)
    if not reason:
        assert isinstance(item, dict)
        reason, want = _account_fields(item, local, domain)
        if want is not None:
            builder.add(_Occurrence(want, domain, raw, local, source))
            return
    builder.invalid(domain, source, raw, local, reason)


def _account_fields(item: Mapping[str, Any], local: str, domain: str) \
        -> tuple[str, WantAccount | None]:
    try:
        password = passwords.check_crypt_hash(item.get("password"))
    except ValueError as exc:
        return f"password: {exc}", None
    whitelist: tuple[str, ...] | None = None
    if "spoofing_whitelist" in item:
        value = item["spoofing_whitelist"]
        if value is None:
            value = ""
        if not isinstance(value, str):
            return "spoofing_whitelist: must be a string", None
        try:
            whitelist = tuple(parse_whitelist(value))
        except ValueError as exc:
            return f"spoofing_whitelist: {exc}", None
    disabled: bool | None = None
    if "submission_disabled" in item:
        value = item["submission_disabled"]
        if not isinstance(value, bool):
            return "submission_disabled: must be true or false", None
        disabled = value
    return "", WantAccount(f"{local}@{domain}", local, domain, password, whitelist, disabled)


def _alias(builder: _Builder, item: object, domain: str, source: str) -> None:
    raw, local, reason = _common(item, ALIAS_FIELDS, domain)
    if not reason:
        assert isinstance(item, dict)
        address = f"{local}@{domain}"
        to = item.get("to")
        if not isinstance(to, str):
            reason = "to: must be a string of comma-separated addresses"
        else:
            try:
                targets = builder.recipients(to)
            except ValueError as exc:
                reason = f"to: {exc}"
            else:
                if address in targets:
                    reason = "to: an alias cannot deliver to itself"
                else:
                    want = WantAlias(address, local, domain, tuple(targets))
                    builder.add(_Occurrence(want, domain, raw, local, source))
                    return
    builder.invalid(domain, source, raw, local, reason)
