"""One log format for every line a process writes, and the request id on each.

``MAILGATE_LOG_FORMAT=text`` (the default) writes::

    2026-12-01T00:40:12.345Z INFO gateway.mail [req 3f2a…]: account created: ...

``MAILGATE_LOG_FORMAT=json`` writes one JSON object a line, with the keys
``time``, ``level``, ``logger``, ``message``, ``request_id`` (when a request
caused the line) and any ``extra`` fields (the access log's).

A request's id is taken from its ``X-Request-ID`` header when that is a
reasonable id (letters, digits, ``.-_:``, at most 128), else made up; it is
echoed in the response and held in a context variable for the request's
duration, so every line the request causes carries it (the LDAP errors
included), whichever thread or module writes it.
"""

from __future__ import annotations

import contextvars
import json
import logging
import math
import re
import sys
import time
import uuid

FORMATS = ("text", "json")
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "mailgate_request_id", default=None)
_VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Attributes every LogRecord has; anything else was passed as ``extra``.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def new_request_id(presented: str | None) -> str:
    """The client's id if it is a reasonable one, else a new random one."""
    if presented and _VALID_ID.fullmatch(presented):
        return presented
    return uuid.uuid4().hex


_second: tuple[int, str] = (-1, "")   # the last second formatted, shared by threads


def timestamp(when: float) -> str:
    """``2026-12-01T00:45:12.123Z``: the time of every log line (UTC, milliseconds).

    The date and time of day are formatted once a second (strftime was a tenth
    of a hot read's Python time, for the access line); a tuple is replaced
    whole, so threads never see half of one."""
    global _second
    fraction, whole = math.modf(when)
    second, micro = int(whole), round(fraction * 1e6)   # as datetime rounds
    if micro >= 1_000_000:
        second, micro = second + 1, micro - 1_000_000
    cached = _second
    if cached[0] != second:
        cached = _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second)))
    return f"{cached[1]}{micro // 1000:03d}Z"


def _time(record: logging.LogRecord) -> str:
    return timestamp(record.created)


class _RequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        return True


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", None)
        text = (f"{_time(record)} {record.levelname} {record.name}"
                f"{f' [req {rid}]' if rid else ''}: {record.getMessage()}")
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {"time": _time(record), "level": record.levelname,
                                   "logger": record.name, "message": record.getMessage()}
        for key, value in vars(record).items():
            if key not in _STANDARD and value is not None:
                data[key] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str, ensure_ascii=False)


def formatter(kind: str) -> logging.Formatter:
    return JsonFormatter() if kind == "json" else TextFormatter()


# The HTTP server's own loggers: they hand their lines to the root handler.
SERVER_LOGGERS = ("_granian", "granian", "granian.access")


def configure(level: str, kind: str = "text") -> None:
    """Every logger of the process to standard error in ``kind``'s format."""
    for name in SERVER_LOGGERS:
        server = logging.getLogger(name)
        for old in list(server.handlers):
            server.removeHandler(old)
        server.propagate = True
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(kind))
    handler.addFilter(_RequestId())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
