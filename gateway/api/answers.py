"""How the API's answers are written: JSON bodies and the one error shape.

Shared by the Flask-RESTX resources (through :func:`output_json` and the error
handler in :mod:`gateway.api`) and by :mod:`gateway.api.hot`, so an answer
reads the same whichever path wrote it.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from flask import Response, make_response

from ..errors import DirectoryUnavailable, MailgateError

log = logging.getLogger("gateway.api")

# Non-string keys (the Swagger document's status codes) become strings, as
# json.dumps makes them; a newline ends every answer, as Flask-RESTX's does.
_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE
JSON = "application/json"


def encode(data: Any) -> bytes:
    """A JSON answer's bytes: compact UTF-8, by orjson (a page of 10 000
    accounts, 3 MB, in 2 ms against json.dumps' 20: docs/benchmarks.md, B6)."""
    return orjson.dumps(data, option=_JSON_OPTIONS)


def output_json(data: Any, code: int, headers: Any = None) -> Response:
    """Flask-RESTX's representation of ``application/json``."""
    response = make_response(encode(data), code)
    response.headers.extend(headers or {})
    return response


def error_body(message: str, errors: dict[str, str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"message": message}
    if errors:
        body["errors"] = errors
    return body


def error_answer(exc: MailgateError) -> tuple[dict[str, Any], int, dict[str, str]]:
    """(body, status, headers) of a MailgateError's answer."""
    # An unavailable directory is logged by the pool, once per outage.
    if exc.status >= 500 and not isinstance(exc, DirectoryUnavailable):
        log.warning("%s: %s", type(exc).__name__, exc.message)
    return error_body(exc.message, exc.errors), exc.status, exc.headers()
