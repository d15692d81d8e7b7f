"""Flask-RESTX models: the OpenAPI description of requests and responses.

Validation is done by ``gateway.mail`` (one set of rules for API and sync);
these models document the contract and shape responses.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import current_app, request
from flask_restx import Namespace, fields

from ..errors import Invalid
from ..mail import Account, Alias, Domain, Page
from ..tenants import MAX_COUNT, MAX_QUOTA


class NullableString(fields.String):
    """A string that may be null (Swagger 2.0 has no ``nullable``: ``x-nullable``)."""

    def schema(self) -> dict[str, Any]:
        described: dict[str, Any] = super().schema()
        described["x-nullable"] = True
        return described


class NullableFloat(fields.Float):
    """A number that may be null (``x-nullable``)."""

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


# Answers every authenticated route may give, whatever it does (each with the
# Error model: see documented_errors).
COMMON_ERRORS = {
    400: "Invalid input: the body, a query parameter or a field (named in errors)",
    401: "No or wrong token",
    413: "Body over 1 MiB",
    415: "Unsupported body content type",
    429: "Too many failed authentications (Retry-After)",
    503: "LDAP unreachable (Retry-After)",
}

# The query parameters of every list route, typed so that a generated request
# that fits the document is one the gateway accepts.
LIST_PARAMS: dict[str, Any] = {
    "domain": {"description": "only this domain", "type": "string"},
    "page": {"description": "from 1, or last", "type": "string",
             "pattern": "^([1-9][0-9]{0,8}|last)$"},
    "page_size": {"description": "default 100; above 10000 means 10000", "type": "integer",
                  "minimum": 1, "maximum": 999_999_999},
}

# Examples use reserved names only (RFC 2606: example.com, example.net); a write
# takes a plain-text password, a read shows the hash that LDAP stores (this one
# is EXAMPLE_PASSWORD's, SHA512-crypt with the default rounds).
EXAMPLE_PASSWORD = "correct horse battery staple"  # noqa: S105 (documentation)
EXAMPLE_HASH = ("$6$rounds=100000$Zx5nQ2rT8vLk3mWc$HSkZ.wl0cx2DnI04ztyLR4/hchuX/71Hxr9cn73s2Kr"
                "afkIkDs1bqvKOtMFOn3i61LeWDuqD6.48QVTVlzOCx1")
EXAMPLE_WHITELIST = "office@example.com,example.net"


class StringMap(fields.Raw):
    """A JSON object of strings (field name -> why)."""

    def schema(self) -> dict[str, Any]:
        described: dict[str, Any] = super().schema()
        described.update(type="object", additionalProperties={"type": "string"})
        return described


def error_model(ns: Namespace) -> Any:
    """The one error body, ``{"message": ..., "errors": {field: why}}``, on ``ns``."""
    return ns.model("Error", {
        "message": fields.String(required=True, description="what went wrong",
                                 example="invalid input"),
        "errors": StringMap(description="only when fields are to blame: field name -> why",
                            example={"domain": "not a valid domain name"}),
    })


def documented_errors(ns: Namespace, extra: dict[int, str] | None = None) -> dict[int, Any]:
    """COMMON_ERRORS and ``extra`` as ``responses=`` of ``ns.doc``, each with the Error body."""
    error = error_model(ns)
    return {code: (why, error) for code, why in {**COMMON_ERRORS, **(extra or {})}.items()}


def register(ns: Namespace) -> dict[str, Any]:
    """Define the models on ``ns`` and return them by name."""
    address = {
        "name": fields.String(required=True, description="local part", example="alice"),
        "domain": fields.String(required=True, description="domain (stored as IDNA A-label)",
                                example="example.com"),
    }
    entry_id = fields.String(readonly=True, description="name@domain, lower-case",
                             example="alice@example.com")
    whitelist = fields.String(
        description="comma-separated addresses and domains the account may send as, or *",
        default="", example=EXAMPLE_WHITELIST)
    disabled = fields.Boolean(default=False, description="true: may not send (submission)")
    subaddress = fields.Boolean(
        default=False, description="mail to name+anything@domain goes to this account")
    quota = fields.Integer(
        min=0, max=MAX_QUOTA, example=1073741824,
        description="mailbox quota in bytes, 0: no limit (Dovecot enforces it)")
    new_account = ns.model("NewAccount", {
        **address,
        "password": fields.String(required=True, example=EXAMPLE_PASSWORD,
                                  description="plain text (stored as SHA512-crypt)"),
        "submission_disabled": disabled,
        "spoofing_whitelist": whitelist,
        "subaddress_extension": subaddress,
        "quota": fields.Integer(min=0, max=MAX_QUOTA, example=1073741824,
                                description="bytes, 0: no limit; left out: the domain's "
                                            "default_quota"),
    })
    account = ns.model("Account", {
        "id": entry_id, **address,
        "password": fields.String(description="the stored SHA512-crypt hash",
                                  example=EXAMPLE_HASH),
        "spoofing_whitelist": whitelist,
        "submission_disabled": disabled,
        "subaddress_extension": subaddress,
        "quota": quota,
    })
    alias_fields = {
        "to": fields.String(required=True, description="comma-separated recipients",
                            example="alice@example.com,bob@example.net"),
    }
    new_alias = ns.model("NewAlias", {**address, **alias_fields})
    alias = ns.model("Alias", {"id": entry_id, **address, **alias_fields})
    models: dict[str, Any] = {"error": error_model(ns), "new_account": new_account,
                              "account": account, "new_alias": new_alias, "alias": alias}
    for name, item in (("account", account), ("alias", alias)):
        models[f"{name}_page"] = ns.model(f"{name.title()}Page", {
            "count": fields.Integer(description="entries in the whole list", example=1),
            "next": NullableString(description="the next page's link, null on the last page"),
            "previous": NullableString(description="the previous page's link, null on the "
                                                   "first page"),
            "results": fields.List(fields.Nested(item)),
        })
    models["password"] = ns.model("Password", {
        "password": fields.String(required=True, example=EXAMPLE_PASSWORD,
                                  description="plain text (stored as SHA512-crypt)")})
    models["whitelist"] = ns.model("SpoofingWhitelist", {
        "spoofing_whitelist": fields.String(
            required=True, example=EXAMPLE_WHITELIST,
            description="comma-separated addresses and domains, or *; empty: none")})
    models["usage"] = ns.model("Usage", {
        "quota": fields.Integer(example=2147483648, description="bytes, 0: no limit"),
        "used_bytes": fields.Integer(example=73400320, description="from Dovecot"),
        "used_messages": fields.Integer(example=812, description="from Dovecot"),
        "percent": NullableFloat(example=3.4, description="of the quota; null without one"),
    })
    models["quota"] = ns.model("Quota", {
        "quota": fields.Integer(required=True, min=0, max=MAX_QUOTA, example=1073741824,
                                description="bytes, 0: no limit")})
    models["alias_update"] = ns.model("AliasUpdate", {
        "to": fields.String(required=True, description="comma-separated recipients",
                            example="alice@example.com,bob@example.net")})
    return models


def account_json(account: Account) -> dict[str, Any]:
    return {"id": account.id, "name": account.name, "domain": account.domain,
            "password": account.password, "spoofing_whitelist": account.spoofing_whitelist,
            "submission_disabled": account.submission_disabled,
            "subaddress_extension": account.subaddress_extension, "quota": account.quota}


def percent(used: int, limit: int) -> float | None:
    """``used`` as a percentage of ``limit``, one decimal; None without a limit."""
    return round(100.0 * used / limit, 1) if limit else None


def domain_json(domain: Domain) -> dict[str, Any]:
    return {"name": domain.name, "accounts": domain.accounts, "aliases": domain.aliases,
            "max_accounts": domain.max_accounts, "max_aliases": domain.max_aliases,
            "default_quota": domain.default_quota, "max_quota": domain.max_quota,
            "quota_allocated": domain.quota_allocated, "over_limit": domain.over_limit}


def register_domains(ns: Namespace) -> dict[str, Any]:
    """The domain models (SPEC.md section 8) on ``ns``."""
    def count(description: str) -> Any:
        return fields.Integer(min=0, max=MAX_COUNT, default=0, example=100,
                              description=description)

    def size(description: str) -> Any:
        return fields.Integer(min=0, max=MAX_QUOTA, default=0, example=10737418240,
                              description=description)

    limits = {
        "max_accounts": count("most accounts the domain may hold, 0: no limit"),
        "max_aliases": count("most aliases the domain may hold, 0: no limit"),
        "default_quota": size("quota in bytes of a new account created without one, "
                              "0: none"),
        "max_quota": size("the most bytes its accounts' quotas may add up to, 0: no limit"),
    }
    name = fields.String(required=True, example="example.com",
                         description="the domain (stored as IDNA A-label, lower case)")
    limits_model = ns.model("DomainLimits", limits)
    new_domain = ns.model("NewDomain", {"name": name, **limits})
    domain = ns.model("Domain", {
        "name": fields.String(readonly=True, example="example.com",
                              description="IDNA A-label, lower case"),
        "accounts": fields.Integer(readonly=True, example=12, description="accounts now"),
        "aliases": fields.Integer(readonly=True, example=3, description="aliases now"),
        **limits,
        "quota_allocated": fields.Integer(readonly=True, example=12884901888,
                                          description="the sum of its accounts' quotas"),
        "over_limit": fields.Boolean(readonly=True, example=False,
                                     description="a limit was lowered below what exists: "
                                                 "creates are refused until it is back under"),
    })
    usage = ns.model("DomainUsage", {
        "name": fields.String(example="example.com"),
        "accounts": fields.Integer(example=12, description="mailboxes summed"),
        "quota_allocated": fields.Integer(example=12884901888),
        "used_bytes": fields.Integer(example=734003200, description="from Dovecot"),
        "used_messages": fields.Integer(example=5120, description="from Dovecot"),
        "percent": NullableFloat(example=5.7,
                                 description="used_bytes of max_quota (null: no max_quota)"),
    })
    page = ns.model("DomainPage", {
        "count": fields.Integer(description="domains in the whole list", example=1),
        "next": NullableString(description="the next page's link, null on the last page"),
        "previous": NullableString(description="the previous page's link, null on the "
                                               "first page"),
        "results": fields.List(fields.Nested(domain)),
    })
    return {"error": error_model(ns), "limits": limits_model, "new_domain": new_domain,
            "domain": domain, "page": page, "usage": usage}


def alias_json(alias: Alias) -> dict[str, Any]:
    return {"id": alias.id, "name": alias.name, "domain": alias.domain, "to": alias.to}


def _page_url(number: int) -> str:
    """The absolute link to page ``number`` of this list (SPEC section 9)."""
    args = request.args.to_dict(flat=True)
    args["page"] = str(number)
    return f"{link_base()}{request.script_root}{request.path}?{urlencode(args)}"


def link_base() -> str:
    """Where links point: ``MAILGATE_PUBLIC_URL``, else this request's scheme and
    Host, but only a Host that is one of the gateway's names (:func:`serves_host`):
    a link never leads to a host the client made up. Invalid (400) otherwise."""
    settings = current_app.extensions["mailgate"].settings
    if settings.public_url:
        return str(settings.public_url)
    host = request.headers.get("Host", "").strip().lower()
    if not serves_host(host, request.scheme, settings.listen, settings.allowed_hosts):
        raise Invalid("the Host header names no host this gateway serves", {
            "Host": "not the MAILGATE_LISTEN address, a MAILGATE_ALLOWED_HOSTS name or "
                    "the host of MAILGATE_PUBLIC_URL"})
    return f"{request.scheme}://{host}"


def serves_host(host: str, scheme: str, listen: str, allowed: tuple[str, ...]) -> bool:
    """Is ``host`` (a Host header: ``name[:port]``) one of the gateway's names?

    Its names are the ``MAILGATE_LISTEN`` address (with ``localhost`` and the
    loopback addresses when it listens on loopback or on every address), on its port, and
    every ``MAILGATE_ALLOWED_HOSTS`` item: ``name:port`` on that port, a bare
    name on any port (as Django's ``ALLOWED_HOSTS``). A missing port is the
    scheme's (443 for https).
    """
    wanted = _host_port(host, scheme)
    if wanted is None:
        return False
    listen_host, listen_port = _host_port(listen, scheme) or ("", None)
    names = [(listen_host, listen_port)]
    if listen_host in (*_LOOPBACK, "0.0.0.0", "::"):   # noqa: S104 (a name, not a bind)
        names.extend((name, listen_port) for name in _LOOPBACK)
    for item in allowed:
        name, port = _host_port(item, scheme) or ("", None)
        names.append((name, port if ":" in item.rpartition("]")[2] else None))
    return any(name == wanted[0] and port in (None, wanted[1]) for name, port in names)


_LOOPBACK = ("localhost", "127.0.0.1", "::1")


def _host_port(host: str, scheme: str) -> tuple[str, int] | None:
    """(name, port) of ``name[:port]`` (an IPv6 address in brackets), or None if malformed."""
    if not host or any(c in host for c in "/?#@\\ ") or not host.isascii():
        return None
    try:
        parts = urlsplit(f"//{host}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.hostname.lower(), port or (443 if scheme == "https" else 80)


def page_json(page: Page[dict[str, Any]]) -> dict[str, Any]:
    """The list envelope of the original service: count, next, previous, results."""
    return {
        "count": page.count,
        "next": _page_url(page.page + 1) if page.has_next else None,
        "previous": _page_url(page.page - 1) if page.page > 1 else None,
        "results": page.results,
    }
