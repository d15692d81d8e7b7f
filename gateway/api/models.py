"""Flask-RESTX models: the OpenAPI description of requests and responses.

Validation is done by ``gateway.mail`` (one set of rules for API and sync);
these models document the contract and shape responses.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from flask import current_app, request
from flask_restx import Namespace, fields

from ..mail import Account, Alias, Page


class NullableString(fields.String):
    """A string that may be null (Swagger 2.0 has no ``nullable``: ``x-nullable``)."""

    def schema(self) -> dict[str, Any]:
        described: dict[str, Any] = super().schema()
        described["x-nullable"] = True
        return described


class NullableRaw(fields.Raw):
    """Any JSON object, or null."""

    def schema(self) -> dict[str, Any]:
        described: dict[str, Any] = super().schema()
        described["x-nullable"] = True
        return described


# Answers every authenticated route may give, whatever it does.
COMMON_ERRORS = {
    400: "Invalid input: the body, a query parameter or a field (named in errors)",
    401: "No or wrong token",
    413: "Body over 1 MiB",
    415: "Unsupported body content type",
    429: "Too many failed authentications (Retry-After)",
    503: "LDAP unreachable (Retry-After)",
}


def register(ns: Namespace) -> dict[str, Any]:
    """Define the models on ``ns`` and return them by name."""
    error = ns.model("Error", {
        "message": fields.String(required=True, example="invalid input"),
        "errors": fields.Raw(description="field name -> why", example={"name": "why"}),
    })
    address = ns.model("Address", {
        "id": fields.String(readonly=True, description="name@domain, lower-case",
                            example="alice@example.com"),
        "name": fields.String(required=True, description="local part", example="alice"),
        "domain": fields.String(required=True, description="domain (stored as IDNA A-label)",
                                example="example.com"),
    })
    account = ns.inherit("Account", address, {
        "password": fields.String(description="write: plain text; read: the crypt hash",
                                  example="$6$rounds=100000$..."),
        "spoofing_whitelist": fields.String(
            description="comma-separated addresses and domains, or *", default="",
            example="office@example.com,skylime.net"),
        "submission_disabled": fields.Boolean(default=False),
        "subaddress_extension": fields.Boolean(
            default=False, description="mail to name+anything@domain goes to this account"),
    })
    alias = ns.inherit("Alias", address, {
        "to": fields.String(required=True, description="comma-separated recipients",
                            example="alice@example.com,bob@example.com"),
    })
    models: dict[str, Any] = {"error": error, "account": account, "alias": alias}
    for name, item in (("account", account), ("alias", alias)):
        models[f"{name}_page"] = ns.model(f"{name.title()}Page", {
            "count": fields.Integer(),
            "next": NullableString(description="the next page's link, null on the last page"),
            "previous": NullableString(description="the previous page's link, null on the "
                                                   "first page"),
            "results": fields.List(fields.Nested(item)),
        })
    models["password"] = ns.model("Password", {"password": fields.String(required=True)})
    models["whitelist"] = ns.model("SpoofingWhitelist",
                                   {"spoofing_whitelist": fields.String(required=True)})
    models["alias_update"] = ns.model("AliasUpdate", {"to": fields.String(required=True)})
    return models


def account_json(account: Account) -> dict[str, Any]:
    return {"id": account.id, "name": account.name, "domain": account.domain,
            "password": account.password, "spoofing_whitelist": account.spoofing_whitelist,
            "submission_disabled": account.submission_disabled,
            "subaddress_extension": account.subaddress_extension}


def alias_json(alias: Alias) -> dict[str, Any]:
    return {"id": alias.id, "name": alias.name, "domain": alias.domain, "to": alias.to}


def _page_url(number: int) -> str:
    """The link to page ``number`` of this list, never built from the client's
    Host header: ``MAILGATE_PUBLIC_URL`` + path, or (unset) the absolute path."""
    args = request.args.to_dict(flat=True)
    args["page"] = str(number)
    public = current_app.extensions["mailgate"].settings.public_url
    return f"{public or ''}{request.script_root}{request.path}?{urlencode(args)}"


def page_json(page: Page[Any], items: list[dict[str, Any]]) -> dict[str, Any]:
    """The list envelope of the original service: count, next, previous, results."""
    return {
        "count": page.count,
        "next": _page_url(page.page + 1) if page.has_next else None,
        "previous": _page_url(page.page - 1) if page.page > 1 else None,
        "results": items,
    }
