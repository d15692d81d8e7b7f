"""Parsing and validating Basic JSON documents into one desired state.

Pure: no I/O. The whole document set is checked before anything is written.
One concern at about 490 lines: every rule below, walked in one pass over
the parser's events (the streaming mechanics are :mod:`.jsonstream`, the
records :mod:`.records`); splitting the rules would split that one pass.

* A document that is not JSON, not UTF-8, or whose top level is not an object
  raises :class:`DocumentError`: the run changes nothing.
* A domain whose key is not a domain name, whose value is not an object, that
  has keys other than ``account`` and ``alias``, whose lists are not lists, or
  that appears twice in one document is *skipped as a whole*, in every
  document: it is treated as absent (untouched), because applying half of it
  would delete the other half.
* A key of an entry that mailgate does not know (the original's producers
  add some) is ignored: the entry is applied from the keys it knows, and
  each unknown key is reported once per run (:class:`.records.UnknownKey`:
  how many entries carried it, the first of them).
* An entry with a problem (bad name, password not a crypt hash, bad
  recipient, bad whitelist, a ``quota`` that is not a size in bytes as the
  API takes it, a field given twice, ...) is skipped. Its address is
  *protected*: whatever LDAP holds for it stays as it is (not updated, not
  deleted).
* An address one document lists once as an account and once as an alias is
  both (:class:`.records.WantBoth`: one entry, mailbox and forwarding).
* Any other address listed more than once (twice as an account, twice as an
  alias, or in several documents) is skipped everywhere and protected, since
  no one can say which occurrence is right.

Normalisation follows the REST API (:mod:`gateway.addresses`): lower-case
dot-atom local parts, IDNA A-label domains, normalised recipient and
whitelist lists. Passwords must be crypt(3) hashes
(:func:`gateway.passwords.check_crypt_hash`); reasons never quote a password.

Documents are walked as a stream of parser events (:mod:`.jsonstream`);
the records they become are in :mod:`.records`.
"""


from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

import ijson

from .. import passwords
from ..addresses import (
    CATCH_ALL,
    MAX_ADDRESS,
    normalize_domain,
    normalize_local,
    parse_recipients,
    parse_whitelist,
)
from ..tenants import MAX_QUOTA, parse_size
from .jsonstream import (
    CONTAINERS,
    Chunks,
    Event,
    TooDeep,
    object_events,
    parse_error,
    read_value,
)
from .records import (
    Desired,
    DocumentError,
    Skip,
    UnknownKey,
    Want,
    WantAccount,
    WantAlias,
    WantBoth,
)

ACCOUNT_FIELDS = frozenset({"name", "password", "spoofing_whitelist", "submission_disabled",
                            "subaddress_extension", "quota"})
ALIAS_FIELDS = frozenset({"name", "to"})
DOMAIN_FIELDS = frozenset({"account", "alias"})
_SHOWN = 200  # longest raw name or domain quoted in a report
MAX_UNKNOWN_KEYS = 50   # distinct unknown entry keys reported one by one per run
_new = tuple.__new__   # builds a Want from its stored fields, skipping __new__ (hot path)


def _shown(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


class _Occurrence(NamedTuple):
    want: Want | None        # None: the entry is invalid but names this address
    domain: str
    name: str                # as written, for reports
    source: str
    reason: str = ""


_MEMO_LIMIT = 100_000
_T = TypeVar("_T")


class _Refused(str):
    """A memoised ValueError message (a new exception is raised each time)."""


def _memo(cache: dict[str, _T | _Refused], value: str, parse: Callable[[str], _T]) -> _T:
    found = cache.get(value)
    if found is None:
        try:
            found = parse(value)
        except ValueError as exc:
            found = _Refused(str(exc))
        if len(cache) < _MEMO_LIMIT:
            cache[value] = found
    if isinstance(found, _Refused):
        raise ValueError(str(found))
    return found


class _Builder:
    """Collects addresses and skips across all documents.

    Each document's first occurrences of addresses are kept as their Want in
    one dict per document (nothing else is stored per entry: that is what a
    million entries cost); an address seen twice, or named by an invalid
    entry, also gets all its occurrences in ``problems``.
    """

    def __init__(self) -> None:
        self.docs: list[tuple[str, dict[str, Want | None]]] = []   # (source, entries)
        self.entries: dict[str, Want | None] = {}    # of the document being read
        self.source = ""
        self.raw_names: dict[str, str] = {}   # first occurrences whose name was not as stored
        self.problems: dict[str, list[_Occurrence]] = {}
        self.key_skips: list[Skip] = []        # domain keys that are no domain
        self.skipped: list[Skip] = []          # invalid entries naming no address
        self.bad_domains: dict[str, Skip] = {}
        self.domains: set[str] = set()
        self.unknown_keys: dict[tuple[str, str], UnknownKey] = {}   # (kind, key) ->
        self.unknown_more = 0                  # entries' keys beyond MAX_UNKNOWN_KEYS
        self._domains: dict[str, str | _Refused] = {}
        self._recipients: dict[str, list[str] | _Refused] = {}

    def document(self, source: str) -> None:
        """Start reading the document ``source``."""
        self.source = source
        self.entries = {}
        self.docs.append((source, self.entries))

    # Big documents repeat the same domains and recipient lists a lot, and
    # IDNA is not cheap: both normalisers are memoised (bounded).
    def domain(self, value: str) -> str:
        return _memo(self._domains, value, normalize_domain)

    def recipients(self, value: str) -> list[str]:
        found: list[str] = _memo(self._recipients, value, parse_recipients)
        return list(found)

    def add(self, want: Want, raw: str, local: str) -> None:
        """A valid entry (hot path: one dict operation when the address is new)."""
        address = want.address
        first = self.entries.setdefault(address, want)
        if first is want and not (len(self.docs) > 1 and self._listed_before(address)):
            if raw != local:
                self.raw_names[address] = raw
            return
        if (first is not want and first is not None and address not in self.problems
                and {first.kind, want.kind} == {"account", "alias"}):
            # One document lists the address as an account and as an alias: both.
            account, alias = (first, want) if first.kind == "account" else (want, first)
            self.entries[address] = _new(WantBoth, (address, account, alias))
            return
        self._problem(address, _Occurrence(want, want.domain, raw, self.source))

    def invalid(self, domain: str, raw: str, local: str, reason: str) -> None:
        if not local and raw:
            local = _loose_local(raw) or ""
        if local:
            # Protect the entry this one most likely means.
            address = f"{local}@{domain}"
            self.entries.setdefault(address, None)
            self._problem(address, _Occurrence(None, domain, raw or local, self.source,
                                               reason))
        else:
            self.skipped.append(Skip(domain, raw, reason, self.source))

    def unknown(self, kind: str, item: Mapping[str, Any], known: frozenset[str],
                domain: str) -> None:
        """Count the keys of ``item`` that mailgate does not know (they are ignored)."""
        name = item.get("name")
        for key in sorted(set(item) - known):
            found = self.unknown_keys.get((kind, key))
            if found is not None:
                found.count += 1
            elif len(self.unknown_keys) < MAX_UNKNOWN_KEYS:
                self.unknown_keys[(kind, key)] = UnknownKey(
                    kind, _shown(key), 1, domain, "" if name is None else _shown(name),
                    self.source)
            else:
                self.unknown_more += 1

    def _listed_before(self, address: str) -> bool:
        return any(address in entries for _source, entries in self.docs[:-1])

    def _problem(self, address: str, occurrence: _Occurrence) -> None:
        found = self.problems.get(address)
        if found is None:
            found = self.problems[address] = []
            # The first occurrence was stored as a bare Want: rebuild its record.
            for source, entries in self.docs:
                first = entries.get(address)
                if first is not None and first is not occurrence.want:
                    raw = self.raw_names.get(address, first.name)
                    parts = (first.account, first.alias) if isinstance(first, WantBoth) \
                        else (first,)
                    found.extend(_Occurrence(p, first.domain, raw, source) for p in parts)
                    break
        found.append(occurrence)


def build_desired(documents: Sequence[tuple[str, Mapping[str, Any] | bytes | list[bytes]]],
                  *, consume: bool = False) -> Desired:
    """Validate every document into one Desired.

    Each document is ``(source, content)``: raw bytes, the list of chunks it
    arrived in, or an already parsed mapping (:func:`.jsonstream.parse_document`). Raw
    documents are parsed here, as a stream; DocumentError if one is not a
    JSON object. ``consume``: let each chunk of a chunk list go once parsed
    (the list is left empty).
    """
    builder = _Builder()
    for source, content in documents:
        builder.document(source)
        if isinstance(content, bytes | bytearray | memoryview):
            content = [bytes(content)]
        reader = None
        if isinstance(content, list):
            reader = Chunks(content, consume)
            events = ijson.basic_parse(reader, use_float=True)
        else:
            events = object_events(content)
        try:
            _walk(builder, events.__next__, source)
        except TooDeep:
            raise DocumentError(f"{source}: JSON nested too deeply") from None
        except ijson.JSONError as exc:
            assert reader is not None
            raise parse_error(exc, reader, source) from None
    return _finish(builder)


def _finish(builder: _Builder) -> Desired:
    desired = Desired()
    bad = builder.bad_domains
    desired.domains = builder.domains - bad.keys()
    desired.skipped.extend(bad.values())
    desired.skipped.extend(builder.key_skips)
    desired.unknown_keys = list(builder.unknown_keys.values())
    if builder.unknown_more:
        desired.unknown_keys.append(UnknownKey("account or alias", "(more keys)",
                                               builder.unknown_more, "", ""))
    desired.skipped.extend(s for s in builder.skipped if s.domain not in bad)
    entries = builder.docs[0][1] if builder.docs else {}
    for _source, more in builder.docs[1:]:
        entries.update(more)
        more.clear()
    if bad:
        # Entries of a skipped domain were read, not used: the domain is untouched.
        for address in [a for a in entries if a.rpartition("@")[2] in bad]:
            del entries[address]
    for address, found in builder.problems.items():
        if address not in entries:
            continue   # in a skipped domain
        del entries[address]
        desired.protected.add(address)
        if len(found) == 1:
            occ = found[0]
            desired.skipped.append(Skip(occ.domain, occ.name, occ.reason, occ.source))
            continue
        kinds = sorted({o.want.kind for o in found if o.want is not None})
        how = "more than once" if len(kinds) == 1 else \
            "as account and as alias, not once each in one document"
        reason = f"the address is listed {how} ({len(found)} times); every one skipped"
        for occ in found:
            desired.skipped.append(Skip(occ.domain, occ.name, reason, occ.source))
    desired.entries = entries  # type: ignore[assignment]   # only Wants are left
    return desired


def _walk(builder: _Builder, next_event: Callable[[], Event], source: str) -> None:
    """Read one document's events into ``builder``."""
    event, value = next_event()
    if event != "start_map":
        read_value(event, value, next_event, keep=False)   # a syntax error comes first
        _end(next_event)
        raise DocumentError(f"{source}: the top level must be an object of domains")
    # domain key -> (domain, problem or ""), in the order keys first appear
    found: dict[str, tuple[str, str]] = {}
    invalid_keys: set[str] = set()
    while True:
        event, key = next_event()
        if event == "end_map":
            break
        event, value = next_event()
        try:
            domain = builder.domain(key)
        except ValueError as exc:
            if key not in invalid_keys:
                invalid_keys.add(key)
                builder.key_skips.append(Skip(_shown(key), "", f"invalid domain: {exc}",
                                              source))
            read_value(event, value, next_event, keep=False)
            continue
        if key in found:
            found[key] = (domain, "the domain appears more than once in one document; "
                                  "domain skipped")
            read_value(event, value, next_event, keep=False)
            continue
        if event != "start_map":
            read_value(event, value, next_event, keep=False)
            found[key] = (domain, "the domain's value must be an object; domain skipped")
            continue
        found[key] = (domain, _domain(builder, domain, next_event))
    _end(next_event)
    for domain, problem in found.values():
        if problem:
            builder.bad_domains.setdefault(domain, Skip(domain, "", problem, source))
        else:
            builder.domains.add(domain)


def _end(next_event: Callable[[], Event]) -> None:
    """Read to the end of the document (the parser checks for trailing garbage)."""
    for _ in iter(next_event, None):   # pragma: no cover (nothing follows a value)
        raise DocumentError("not valid JSON (data after the top-level object)")


def _domain(builder: _Builder, domain: str, next_event: Callable[[], Event]) -> str:
    """Read one domain's object (its entries into ``builder``); its problem or ''."""
    seen: set[str] = set()
    unknown: list[str] = []
    twice = False
    not_lists: set[str] = set()
    while True:
        event, key = next_event()
        if event == "end_map":
            break
        event, value = next_event()
        twice = twice or key in seen
        seen.add(key)
        if key not in DOMAIN_FIELDS:
            unknown.append(key)
            read_value(event, value, next_event, keep=False)
        elif event != "start_array":
            not_lists.add(key)
            read_value(event, value, next_event, keep=False)
        else:
            _entries(builder, _account if key == "account" else _alias, domain, next_event)
    if unknown:
        return (f"unknown key {_shown(min(unknown))!r} (expected 'account' and 'alias'); "
                "domain skipped")
    if twice:
        return "'account' or 'alias' given twice; domain skipped"
    for kind in sorted(not_lists):
        return f"'{kind}' must be a list; domain skipped"
    return ""


_EntryCheck = Callable[[_Builder, Mapping[str, Any], frozenset[str], str], None]


def _entries(builder: _Builder, check: _EntryCheck, domain: str,
             next_event: Callable[[], Event]) -> None:
    """Read the items of an ``account`` or ``alias`` list (hot loop: one per entry)."""
    no_duplicates: frozenset[str] = frozenset()
    while True:
        event, value = next_event()
        if event == "end_array":
            return
        if event != "start_map":
            read_value(event, value, next_event, keep=False)
            builder.invalid(domain, "", "", "each entry must be an object")
            continue
        item: dict[str, Any] = {}
        duplicates = no_duplicates
        while True:
            event, key = next_event()
            if event == "end_map":
                break
            event, value = next_event()
            if event in CONTAINERS:
                value = read_value(event, value, next_event)
            if key in item:
                duplicates = duplicates | {key}
            item[key] = value
        check(builder, item, duplicates, domain)


def _loose_local(raw: str) -> str | None:
    """The local part a bad name most likely meant (to protect its entry)."""
    try:
        return normalize_local(raw.strip())
    except ValueError:
        return None


def _common(item: Mapping[str, Any], duplicates: frozenset[str], allowed: frozenset[str],
            domain: str) -> tuple[str, str, str]:
    """(name as written, normal local part or '', what is wrong or '')."""
    raw = item.get("name")
    if not isinstance(raw, str):
        return ("" if raw is None else _shown(raw)), "", "name: must be a string"
    try:
        local = normalize_local(raw)
    except ValueError as exc:
        return _shown(raw), "", f"name: {exc}"
    if len(local) + 1 + len(domain) > MAX_ADDRESS:
        return _shown(raw), "", f"name: the address is longer than {MAX_ADDRESS} octets"
    duplicates = duplicates & allowed   # an unknown key given twice is still only ignored
    if duplicates:
        return raw, local, f"field {sorted(duplicates)[0]!r} given twice"
    return raw, local, ""


def _account(builder: _Builder, item: Mapping[str, Any], duplicates: frozenset[str],
             domain: str) -> None:
    if not ACCOUNT_FIELDS.issuperset(item):
        builder.unknown("account", item, ACCOUNT_FIELDS, domain)
    raw, local, reason = _common(item, duplicates, ACCOUNT_FIELDS, domain)
    if not reason:
        reason, want = _account_fields(item, local, domain)
        if want is not None:
            builder.add(want, raw, local)
            return
    builder.invalid(domain, raw, local, reason)


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
    if local == CATCH_ALL:
        return "name: '*' is reserved for the catch-all alias", None
    disabled: bool | None = None
    if "submission_disabled" in item:
        value = item["submission_disabled"]
        if not isinstance(value, bool):
            return "submission_disabled: must be true or false", None
        disabled = value
    subaddress: bool | None = None
    if "subaddress_extension" in item:
        value = item["subaddress_extension"]
        if not isinstance(value, bool):
            return "subaddress_extension: must be true or false", None
        subaddress = value
    quota: int | None = None
    if "quota" in item:
        try:
            quota = parse_size(item["quota"], MAX_QUOTA)
        except ValueError as exc:
            return f"quota: {exc}", None
    return "", _new(WantAccount, (f"{local}@{domain}", password, whitelist, disabled,
                                  subaddress, quota))


def _alias(builder: _Builder, item: Mapping[str, Any], duplicates: frozenset[str],
           domain: str) -> None:
    if not ALIAS_FIELDS.issuperset(item):
        builder.unknown("alias", item, ALIAS_FIELDS, domain)
    raw, local, reason = _common(item, duplicates, ALIAS_FIELDS, domain)
    if not reason:
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
                    builder.add(_new(WantAlias, (address, tuple(targets))), raw, local)
                    return
    builder.invalid(domain, raw, local, reason)
