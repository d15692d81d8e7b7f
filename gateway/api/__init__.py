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

from ..errors import Forbidden, MailgateError
from ..version import __version__
from . import accounts, aliases, audit, domains, explain, health, metrics, sync
from .answers import JSON, error_answer, error_body, output_json
from .auth import denied

log = logging.getLogger(__name__)

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


def _error_example(path: str, code: str) -> dict[str, Any] | None:
    """What an error answer of ``path`` with status ``code`` reads, as Swagger UI shows it."""
    kind = ("alias" if path.startswith("/mail/alias") else
            "domain" if path.startswith("/mail/domain") else "account")
    missing = "example.com" if kind == "domain" else "alice@example.com"
    messages: dict[str, dict[str, Any]] = {
        "400": {"message": "invalid input", "errors": {"domain": "not a valid domain name"}},
        "401": {"message": "missing or invalid API token"},
        "403": ({"message": "only the admin token may do this"}
                if path.startswith(("/sync", "/metrics"))
                else {"message": "this token has no rights on example.net"}),
        "404": ({"message": f"no {kind} {missing}"} if "{" in path
                else {"message": "Invalid page.", "errors": {"page": "beyond the last page"}}),
        "409": ({"message": "a sync is already running"} if path.startswith("/sync")
                else {"message": "example.com holds 100 accounts, its max_accounts is 100",
                      "errors": {"max_accounts": "the domain's limit is 100"}}
                if path.endswith("set_quota/") or kind == "domain"
                else {"message": f"alice@example.com already exists as an {kind}",
                      "errors": {"name": "address already in use"}}),
        "413": {"message": "The data value transmitted exceeds the capacity limit."},
        "415": {"message": "send application/json, application/x-www-form-urlencoded or "
                           "multipart/form-data"},
        "429": {"message": "too many failed authentication attempts; try again later"},
        "503": {"message": "LDAP server unreachable (SERVER_DOWN)"},
    }
    return messages.get(code)


class _Api(Api):
    """Flask-RESTX's Api; each documented error answer gets its own example
    (one Error model serves them all, and a model has one example). Setting
    them again on the cached schema at every read sets the same values."""

    @property
    def __schema__(self) -> dict[str, Any]:
        schema: dict[str, Any] = super().__schema__
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                if method == "parameters":
                    continue
                for code, response in operation.get("responses", {}).items():
                    example = _error_example(path, code)
                    if example is not None and "schema" in response:
                        response["examples"] = {"application/json": example}
        return schema


def init_api(app: Flask) -> Api:
    api = _Api(
        app, version=__version__, title="mailgate",
        description=DESCRIPTION, doc="/docs/", catch_all_404s=True,
        authorizations=AUTHORIZATIONS, security=["token", "basic"],
    )
    api.representations[JSON] = output_json
    for ns in (accounts.ns, aliases.ns, domains.ns, explain.ns, health.ns, sync.ns, metrics.ns,
               audit.ns):
        api.add_namespace(ns)

    @api.errorhandler(MailgateError)
    def _mailgate_error(exc: MailgateError) -> Any:
        if isinstance(exc, Forbidden):
            denied(exc)
        return error_answer(exc)

    @api.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Any:
        return error_body(exc.description or exc.name), exc.code or 500

    @api.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Any:
        log.exception("unexpected error")
        return error_body("internal error"), 500

    return api
