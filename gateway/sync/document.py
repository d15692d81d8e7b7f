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

Documents are read as a stream of parser events (ijson's C parser over the
raw bytes), never as one tree of Python objects: ``json.loads`` of a
150 MB document alone builds more than 1 GB of objects, while the events
keep memory to the desired state itself (docs/benchmarks.md, B8). Already
parsed documents (:func:`parse_document`, tests, tools) are turned into the
same events, so one walker applies every rule.
"""

from __future__ import annotations

import codecs
import json
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import ijson

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
# Containers nested deeper than this inside a document are refused, as
# json.loads refuses them (its recursion limit): no entry needs more than 4.
MAX_DEPTH = 500


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


# Wanted entries are tuples: a million of them are held at once for a big
# document (B8), and a tuple costs a third of a dataclass in memory and time.
# Only the address is stored; the local part and the domain are read from it.

class _AccountFields(NamedTuple):
    address: str
    password: str                        # crypt hash, no {CRYPT} tag
    whitelist: tuple[str, ...] | None    # None: the document does not say
    submission_disabled: bool | None     # None: the document does not say


class _AddressParts:
    """``name`` and ``domain`` derived from the stored ``address``."""

    __slots__ = ()
    address: str

    @property
    def name(self) -> str:
        return self.address.rpartition("@")[0]

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]


class WantAccount(_AccountFields, _AddressParts):
    __slots__ = ()
    kind = "account"

    def __new__(cls, address: str, name: str, domain: str, password: str,
                whitelist: tuple[str, ...] | None,
                submission_disabled: bool | None) -> WantAccount:
        return tuple.__new__(cls, (address, password, whitelist, submission_disabled))


class _AliasFields(NamedTuple):
    address: str
    targets: tuple[str, ...]


class WantAlias(_AliasFields, _AddressParts):
    __slots__ = ()
    kind = "alias"

    def __new__(cls, address: str, name: str, domain: str,
                targets: tuple[str, ...]) -> WantAlias:
        return tuple.__new__(cls, (address, targets))


Want = WantAccount | WantAlias
_new = tuple.__new__   # builds a Want from its stored fields, skipping __new__ (hot path)


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
    """Decode one whole document into objects; DocumentError if it is not a JSON object.

    For tests and tools: a sync streams the raw bytes into :func:`build_desired`.
    """
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


# ---------------------------------------------------------------------------
# Parser events: (event, value) pairs as ijson's basic_parse yields them.

Event = tuple[str, Any]
_BOM = b"\xef\xbb\xbf"
_CONTAINERS = frozenset({"start_map", "start_array"})


class _Chunks:
    """A document's chunks as a file for the parser; with ``consume``, each chunk is
    let go once read, so a big document never sits in memory next to what it became.
    """

    def __init__(self, chunks: list[bytes], consume: bool) -> None:
        self._chunks = chunks if consume else list(chunks)
        self._chunks.reverse()
        self._first = True
        self._last = b""        # the chunk the parser works on
        self._carry = b""       # an incomplete UTF-8 sequence that ended the one before
        self._offset = 0        # bytes before the current chunk

    def read(self, size: int = -1) -> bytes:
        if size == 0:   # ijson reads 0 bytes to learn the type
            return b""
        while self._chunks:
            chunk = self._chunks.pop()
            if self._first:
                self._first = False
                while len(chunk) < len(_BOM) and self._chunks:
                    chunk += self._chunks.pop()
                if chunk.startswith(_BOM):
                    chunk = chunk[len(_BOM):]
                    self._offset = len(_BOM)
            if not chunk:
                continue   # an empty read would mean the end of the document
            self._carry = _incomplete_tail(self._last)
            self._offset += len(self._last)
            self._last = chunk
            return chunk
        return b""

    def utf8_error(self) -> int | None:
        """Offset of a byte that is not UTF-8 where the parser stopped, or None.

        The parser stops in the chunk that holds the first bad byte, so only
        that chunk is checked (after a parse error: the normal path decodes
        nothing twice).
        """
        try:
            codecs.utf_8_decode(self._carry + self._last, "strict", False)
        except UnicodeDecodeError as exc:
            return self._offset - len(self._carry) + exc.start
        return None


def _incomplete_tail(chunk: bytes) -> bytes:
    """The bytes of a multi-byte UTF-8 sequence cut off at the end of ``chunk``."""
    for back in range(1, min(3, len(chunk)) + 1):
        byte = chunk[-back]
        if byte < 0x80:
            return b""
        if byte >= 0xC0:   # a lead byte: how long is its sequence?
            length = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return chunk[-back:] if length > back else b""
    return b""


def _parse_error(exc: Exception, reader: _Chunks, source: str) -> DocumentError:
    bad = reader.utf8_error()
    if bad is not None:
        return DocumentError(f"{source}: not UTF-8 (byte {bad})")
    message = exc.args[0] if exc.args else ""
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    # Only the first line: the parser goes on to quote the document.
    lines = str(message).strip().splitlines()
    return DocumentError(f"{source}: not valid JSON ({lines[0] if lines else 'error'})")


def _object_events(value: object) -> Iterator[Event]:
    """The events of an already parsed document (keys it saw twice come twice)."""
    if isinstance(value, dict):
        yield "start_map", None
        duplicates: frozenset[str] = getattr(value, "duplicates", frozenset())
        for key, item in value.items():
            for _ in range(2 if key in duplicates else 1):
                yield "map_key", key
                yield from _object_events(item)
        yield "end_map", None
    elif isinstance(value, list):
        yield "start_array", None
        for item in value:
            yield from _object_events(item)
        yield "end_array", None
    elif value is None:
        yield "null", None
    elif isinstance(value, bool):
        yield "boolean", value
    elif isinstance(value, int | float):
        yield "number", value
    else:
        yield "string", value


class _TooDeep(Exception):
    """Containers nested deeper than MAX_DEPTH."""


def _value(event: str, value: Any, next_event: Callable[[], Event], keep: bool = True) -> Any:
    """The whole value that starts with ``event`` (built only if ``keep``)."""
    if event not in _CONTAINERS:
        return value
    stack: list[Any] = [{} if event == "start_map" else []]
    key: str = ""
    keys: list[str] = []
    while True:
        event, value = next_event()
        if event == "map_key":
            key = value
            continue
        if event in _CONTAINERS:
            if len(stack) >= MAX_DEPTH:
                raise _TooDeep()
            item: Any = {} if event == "start_map" else []
        elif event in ("end_map", "end_array"):
            done = stack.pop()
            if not stack:
                return done if keep else None
            key = keys.pop()
            continue
        else:
            item = value
        if keep:
            parent = stack[-1]
            if isinstance(parent, dict):
                parent[key] = item
            else:
                parent.append(item)
        if event in _CONTAINERS:
            keys.append(key)
            stack.append(item)


# ---------------------------------------------------------------------------
# Validation


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
        if self.entries.setdefault(address, want) is want and not (
                len(self.docs) > 1 and self._listed_before(address)):
            if raw != local:
                self.raw_names[address] = raw
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
                    found.append(_Occurrence(first, first.domain, raw, source))
                    break
        found.append(occurrence)


def build_desired(documents: Sequence[tuple[str, Mapping[str, Any] | bytes | list[bytes]]],
                  *, consume: bool = False) -> Desired:
    """Validate every document into one Desired.

    Each document is ``(source, content)``: raw bytes, the list of chunks it
    arrived in, or an already parsed mapping (:func:`parse_document`). Raw
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
            reader = _Chunks(content, consume)
            events = ijson.basic_parse(reader, use_float=True)
        else:
            events = _object_events(content)
        try:
            _walk(builder, events.__next__, source)
        except _TooDeep:
            raise DocumentError(f"{source}: JSON nested too deeply") from None
        except ijson.JSONError as exc:
            assert reader is not None
            raise _parse_error(exc, reader, source) from None
    return _finish(builder)


def _finish(builder: _Builder) -> Desired:
    desired = Desired()
    bad = builder.bad_domains
    desired.domains = builder.domains - bad.keys()
    desired.skipped.extend(bad.values())
    desired.skipped.extend(builder.key_skips)
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
        how = "as account and as alias" if len(kinds) > 1 else "more than once"
        reason = f"the address is listed {how} ({len(found)} times); every one skipped"
        for occ in found:
            desired.skipped.append(Skip(occ.domain, occ.name, reason, occ.source))
    desired.entries = entries  # type: ignore[assignment]   # only Wants are left
    return desired


def _walk(builder: _Builder, next_event: Callable[[], Event], source: str) -> None:
    """Read one document's events into ``builder``."""
    event, value = next_event()
    if event != "start_map":
        _value(event, value, next_event, keep=False)   # a syntax error comes first
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
            _value(event, value, next_event, keep=False)
            continue
        if key in found:
            found[key] = (domain, "the domain appears more than once in one document; "
                                  "domain skipped")
            _value(event, value, next_event, keep=False)
            continue
        if event != "start_map":
            _value(event, value, next_event, keep=False)
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
            _value(event, value, next_event, keep=False)
        elif event != "start_array":
            not_lists.add(key)
            _value(event, value, next_event, keep=False)
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
            _value(event, value, next_event, keep=False)
            builder.invalid(domain, "", "", "each entry must be an object")
            continue
        item: dict[str, Any] = {}
        duplicates = no_duplicates
        while True:
            event, key = next_event()
            if event == "end_map":
                break
            event, value = next_event()
            if event in _CONTAINERS:
                value = _value(event, value, next_event)
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
    if duplicates:
        return raw, local, f"field {sorted(duplicates)[0]!r} given twice"
    if not allowed.issuperset(item):
        return raw, local, f"unknown field {_shown(min(set(item) - allowed))!r}"
    return raw, local, ""


def _account(builder: _Builder, item: Mapping[str, Any], duplicates: frozenset[str],
             domain: str) -> None:
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
    disabled: bool | None = None
    if "submission_disabled" in item:
        value = item["submission_disabled"]
        if not isinstance(value, bool):
            return "submission_disabled: must be true or false", None
        disabled = value
    return "", _new(WantAccount, (f"{local}@{domain}", password, whitelist, disabled))


def _alias(builder: _Builder, item: Mapping[str, Any], duplicates: frozenset[str],
           domain: str) -> None:
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
