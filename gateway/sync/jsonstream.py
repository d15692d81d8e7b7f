"""Basic JSON documents as a stream of parser events, never as one tree of objects.

Documents are read as ``(event, value)`` pairs (ijson's C parser over the raw
bytes, as ijson's ``basic_parse`` yields them): ``json.loads`` of a 150 MB
document alone builds more than 1 GB of objects, while the events keep
memory to the desired state itself (docs/benchmarks.md, B8). Already parsed
documents (:func:`parse_document`, tests, tools) are turned into the same
events (:func:`object_events`), so one walker (:mod:`.document`) applies
every rule. A document arrives as a list of chunks; :class:`Chunks` hands
them to the parser and finds the byte that is not UTF-8 when it stops.
"""

from __future__ import annotations

import codecs
import json
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from .records import DocumentError

# Containers nested deeper than this inside a document are refused, as
# json.loads refuses them (its recursion limit): no entry needs more than 4.
MAX_DEPTH = 500


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


Event = tuple[str, Any]
_BOM = b"\xef\xbb\xbf"
CONTAINERS = frozenset({"start_map", "start_array"})


class Chunks:
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


def parse_error(exc: Exception, reader: Chunks, source: str) -> DocumentError:
    bad = reader.utf8_error()
    if bad is not None:
        return DocumentError(f"{source}: not UTF-8 (byte {bad})")
    message = exc.args[0] if exc.args else ""
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    # Only the first line: the parser goes on to quote the document.
    lines = str(message).strip().splitlines()
    return DocumentError(f"{source}: not valid JSON ({lines[0] if lines else 'error'})")


def object_events(value: object) -> Iterator[Event]:
    """The events of an already parsed document (keys it saw twice come twice)."""
    if isinstance(value, dict):
        yield "start_map", None
        duplicates: frozenset[str] = getattr(value, "duplicates", frozenset())
        for key, item in value.items():
            for _ in range(2 if key in duplicates else 1):
                yield "map_key", key
                yield from object_events(item)
        yield "end_map", None
    elif isinstance(value, list):
        yield "start_array", None
        for item in value:
            yield from object_events(item)
        yield "end_array", None
    elif value is None:
        yield "null", None
    elif isinstance(value, bool):
        yield "boolean", value
    elif isinstance(value, int | float):
        yield "number", value
    else:
        yield "string", value


class TooDeep(Exception):
    """Containers nested deeper than MAX_DEPTH."""


def read_value(event: str, value: Any, next_event: Callable[[], Event], keep: bool = True) -> Any:
    """The whole value that starts with ``event`` (built only if ``keep``)."""
    if event not in CONTAINERS:
        return value
    stack: list[Any] = [{} if event == "start_map" else []]
    key: str = ""
    keys: list[str] = []
    while True:
        event, value = next_event()
        if event == "map_key":
            key = value
            continue
        if event in CONTAINERS:
            if len(stack) >= MAX_DEPTH:
                raise TooDeep()
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
        if event in CONTAINERS:
            keys.append(key)
            stack.append(item)
