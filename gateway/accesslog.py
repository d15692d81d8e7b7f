"""The access log of ``mailgate serve``: one line per request, in the log format of
every other line (:mod:`gateway.logs`, ``MAILGATE_LOG_FORMAT``).

    2026-11-24T03:57:14.120Z INFO gateway.access [req 5b0c6d2e]: 127.0.0.1 \
        "GET /mail/alias/ HTTP/1.1" 200 262 "-" "curl/8" 3.1ms     (one line)

The message holds the fields of Apache's combined format but the time (the
line has one) and the user field (gunicorn put the Basic user name there, and
a client that sends its token as the user name, ``curl -u TOKEN:``, would have
had the token logged): client address, request line (method, path and query,
protocol), status, response body bytes (``-`` if unknown), Referer,
User-Agent, and the time the app took. In JSON each is a key of its own
(``client``, ``request``, ``status``, ``bytes``, ``referer``, ``user_agent``,
``duration_ms``), with the request id. No header but Referer and User-Agent is read, so no
token, password or cookie reaches the log, and the value of every query
parameter but ``domain``, ``page`` and ``page_size`` is masked (a client may
put a token there; the API reads none from it). Client-supplied text is
escaped (``"``, ``\\`` and control characters as ``\\xNN``), so a
request cannot forge a line.

It is a WSGI middleware: the line costs a few microseconds, and the time
string is formatted once a second.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any
from urllib.parse import quote

from . import logs

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

# Responses up to this size (with a Content-Length) are passed on as one list.
BUFFER_MAX = 32 * 1024 * 1024
LINE_MAX = 4096
# Instead of the server's own name (granian writes none when the app sets one).
SERVER_HEADER = ("Server", "mailgate")
SHOWN_PARAMETERS = frozenset({"domain", "page", "page_size"})
MASK = "***"
_UNSAFE = re.compile(r'[\x00-\x1f\x7f"\\]|[^\x00-\x7f]')


def redact_query(query: str) -> str:
    """The query string with every value but those of SHOWN_PARAMETERS masked."""
    if not query:
        return query
    items = []
    for item in query.split("&"):
        name, sep, _value = item.partition("=")
        if name in SHOWN_PARAMETERS and sep:
            items.append(item)
        else:
            items.append(f"{quote(name[:40], safe='%')}={MASK}" if sep else MASK)
    return "&".join(items)


def redact_uri(uri: str) -> str:
    path, sep, query = uri.partition("?")
    return f"{path}?{redact_query(query)}" if sep else path


def escape(text: str) -> str:
    """``text`` with quotes, backslashes, control and non-ASCII characters as \\xNN."""
    if not _UNSAFE.search(text):
        return text
    return _UNSAFE.sub(lambda m: "".join(f"\\x{b:02x}" for b in m.group().encode()), text)


def request_line(environ: dict[str, Any]) -> str:
    """Method, path and query (its values masked but SHOWN_PARAMETERS') and protocol."""
    uri = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if uri is not None:
        uri = redact_uri(uri)
    else:
        # PEP 3333: PATH_INFO is the path decoded to bytes as latin-1.
        uri = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        uri = uri.encode("latin-1", "replace").decode("utf-8", "replace")
        if environ.get("QUERY_STRING"):
            uri += "?" + redact_query(environ["QUERY_STRING"])
    return f"{environ.get('REQUEST_METHOD', '-')} {uri} {environ.get('SERVER_PROTOCOL', '-')}"


def format_line(environ: dict[str, Any], status: str, size: int | None, took: float,
                kind: str = "text", now: float | None = None) -> str:
    """One access line in ``kind``'s format (text or json), ending in a newline."""
    now = time.time() if now is None else now
    rid = environ.get("mailgate.request_id")
    client = environ.get("REMOTE_ADDR") or "-"
    code = status.split(" ", 1)[0]
    if kind == "json":
        return json.dumps({
            "time": logs.timestamp(now), "level": "INFO", "logger": "gateway.access",
            "message": f"{request_line(environ)} {code}", "request_id": rid,
            "client": client, "request": request_line(environ),
            "status": int(code) if code.isdigit() else code, "bytes": size,
            "referer": environ.get("HTTP_REFERER"), "user_agent": environ.get("HTTP_USER_AGENT"),
            "duration_ms": round(took * 1000, 1)}, ensure_ascii=True) + "\n"
    return (f'{logs.timestamp(now)} INFO gateway.access{f" [req {rid}]" if rid else ""}: '
            f'{client} "{escape(request_line(environ))}" {code} '
            f'{"-" if size is None else size} "{escape(environ.get("HTTP_REFERER", "-"))}" '
            f'"{escape(environ.get("HTTP_USER_AGENT", "-"))}" {took * 1000:.1f}ms\n')


class AccessLog:
    """WSGI middleware writing one :func:`format_line` per request to ``stream``'s descriptor
    (and answering ``Server: mailgate``).

    The line is written when the response is complete (its iterable closed),
    with the body size from Content-Length or, without one, as counted.
    """

    def __init__(self, app: WSGIApp, stream: IO[str], kind: str = "text") -> None:
        self.app = app
        stream.flush()
        self.fd = stream.fileno()
        self.kind = kind

    def write(self, environ: dict[str, Any], status: str, size: int | None) -> None:
        # One write(2) per line, past Python's buffers and locks: a line is
        # never split or held back, and lines of threads and worker processes
        # sharing the descriptor do not interleave (a pipe writes up to 4 KiB
        # at once; a longer line is cut to fit).
        took = time.perf_counter() - environ.get("mailgate.started", time.perf_counter())
        line = format_line(environ, status, size, took, self.kind).encode("utf-8", "replace")
        if len(line) > LINE_MAX:
            line = line[:LINE_MAX - 4] + b"...\n"
        with contextlib.suppress(OSError):  # a closed log must not fail the request
            while line:  # bounded: each pass writes at least one byte or raises
                line = line[os.write(self.fd, line):]

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Any:
        environ["mailgate.started"] = time.perf_counter()
        seen: list[Any] = []

        def recording_start_response(status: str, headers: list[tuple[str, str]],
                                     exc_info: Any = None) -> Any:
            seen[:] = [status, headers]
            return start_response(status, [*headers, SERVER_HEADER], exc_info)

        try:
            body = self.app(environ, recording_start_response)
        except BaseException:
            self.write(environ, "500", None)
            raise
        if not seen:  # the app starts the response while iterating
            return _Counted(self, environ, body, seen, None)
        status, headers = seen
        length = next((value for name, value in headers
                       if name.lower() == "content-length"), None)
        size = int(length) if length is not None and length.isdigit() else None
        if size is not None and size <= BUFFER_MAX:
            # A Flask response holds its body already: handing the server a
            # list lets it send the bytes in one call instead of iterating.
            try:
                chunks = body if isinstance(body, list) else list(body)
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()
            self.write(environ, status, size)
            return chunks
        return _Counted(self, environ, body, seen, size)


class _Counted:
    """The app's response iterable, logging the line when closed."""

    def __init__(self, log: AccessLog, environ: dict[str, Any], body: Iterable[bytes],
                 seen: list[Any], length: int | None) -> None:
        self.log, self.environ, self.body = log, environ, body
        self.seen, self.length, self.sent = seen, length, 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.body:
            self.sent += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            status = self.seen[0] if self.seen else "500"
            self.log.write(self.environ, status,
                           self.length if self.length is not None else self.sent)
