"""The REST API: Flask-RESTX namespaces and the ONE error handler.

Every error leaves as ``{"message": ..., "errors": {field: why}}`` with the
status of its :mod:`gateway.errors` class. Anything unexpected becomes a
plain 500 with no detail (the traceback goes to the log, never the client).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask
from flask_restx import Api
from werkzeug.exceptions import HTTPException

from ..errors import DirectoryUnavailable, MailgateError
from . import accounts, aliases, audit, health, metrics, sync

log = logging.getLogger(__name__)


def error_body(message: str, errors: dict[str, str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"message": message}
    if errors:
        body["errors"] = errors
    return body


# Swagger UI renders descriptions as Markdown and drops anything that looks like
# an HTML tag ("<token>"): placeholders are written as TOKEN, in code spans.
DESCRIPTION = (
    "Mail accounts and aliases stored in LDAP, read directly by Postfix and Dovecot.\n\n"
    "**Authenticate**: press *Authorize* and paste the token (the admin token is in the "
    "file `mailgate serve` names, or a scoped token from `mailgate token create`) into "
    "*token*, as it is. Outside this page send `Authorization: Bearer TOKEN` "
    "(`Authorization: TOKEN` works too), or HTTP Basic with any user name and the token "
    "as password (`curl -u :TOKEN`).\n\n"
    "Errors always read `{\"message\": \"...\", \"errors\": {\"field\": \"why\"}}`."
)
AUTHORIZATIONS = {
    "token": {
        "type": "apiKey", "in": "header", "name": "Authorization",
        "description": "Paste the API token as it is (`Bearer TOKEN` works too).",
    },
    "basic": {
        "type": "basic",
        "description": "Any user name (or none); the API token as password.",
    },
}


def init_api(app: Flask) -> Api:
    api = Api(
        app, version="1.0", title="mailgate",
        description=DESCRIPTION, doc="/docs/", catch_all_404s=True,
        authorizations=AUTHORIZATIONS, security=["token", "basic"],
    )
    for ns in (accounts.ns, aliases.ns, health.ns, sync.ns, metrics.ns, audit.ns):
        api.add_namespace(ns)

    @api.errorhandler(MailgateError)
    def _mailgate_error(exc: MailgateError) -> Any:
        # An unavailable directory is logged by the pool, once per outage.
        if exc.status >= 500 and not isinstance(exc, DirectoryUnavailable):
            log.warning("%s: %s", type(exc).__name__, exc.message)
        return error_body(exc.message, exc.errors), exc.status, exc.headers()

    @api.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Any:
        return error_body(exc.description or exc.name), exc.code or 500

    @api.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Any:
        log.exception("unexpected error")
        return error_body("internal error"), 500

    return api
