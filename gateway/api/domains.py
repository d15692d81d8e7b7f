"""``/mail/domain/``: domains with their limits and counts (SPEC.md section 8).

Every token lists and reads the domains of its scope; only the admin token
creates domains, changes their limits and deletes them. The rules are
:mod:`gateway.tenants`' (reached through :class:`gateway.mail.MailDirectory`).
"""

from __future__ import annotations

from typing import Any

from flask import request
from flask_restx import Namespace, Resource

from ..addresses import normalize_domain
from ..errors import Invalid, NotFound
from ..mail import Page
from ..services import current
from . import auth
from .body import as_bool, list_args, read_body
from .models import (
    LIST_PARAMS,
    documented_errors,
    domain_json,
    page_json,
    percent,
    register_domains,
)

ns = Namespace("mail/domain", description="Domains: limits, counts and usage",
               path="/mail/domain")
models = register_domains(ns)
LIMIT_FIELDS = {"max_accounts", "max_aliases", "default_quota", "max_quota"}
ADMIN_ONLY = {403: "Not the admin token"}
ITEM = {403: "No rights on the domain", 404: "No such domain"}


def _name(name: str) -> str:
    """The domain of a URL as stored (IDNA A-label, lower case); NotFound if it is none."""
    try:
        return normalize_domain(name)
    except ValueError:
        raise NotFound(f"no domain {name[:300]!r}") from None


@ns.route("/")
@ns.doc(responses=documented_errors(ns, ADMIN_ONLY))
class DomainList(Resource):
    method_decorators = (auth.authenticated,)

    @ns.doc(params={name: LIST_PARAMS[name] for name in ("page", "page_size")})
    @ns.response(200, "A page of domains ordered by name", models["page"])
    @ns.response(404, "Page beyond the last", models["error"])
    def get(self) -> Any:
        """List domains

        The domains this token may read (all for the admin token) with their
        limits and counts, ordered by name. A domain comes into being with its
        first account or alias, or by `POST /mail/domain/`.
        """
        if request.args.get("domain") is not None:
            raise Invalid("invalid query parameter",
                          {"domain": "not a parameter of this list (GET /mail/domain/NAME/)"})
        _domain, page, page_size = list_args()
        found = auth.mail().list_domains(auth.scope().visible_domains, page, page_size)
        return page_json(Page(found.count, found.page, found.page_size,
                              [domain_json(d) for d in found.results]))

    @ns.expect(models["new_domain"])
    @ns.response(201, "Created; the domain with its limits", models["domain"])
    @ns.response(409, "The domain exists", models["error"])
    def post(self) -> Any:
        """Create a domain (admin)

        An empty domain with its limits (each 0 or left out: no limit). A domain
        created here stays when its last entry goes; one that came with its first
        account goes with its last, unless it was given limits.
        """
        auth.require_admin()
        body = read_body({"name", *LIMIT_FIELDS})
        limits = {k: v for k, v in body.items() if k != "name"}
        return domain_json(auth.mail().domains.create(body.get("name"), limits)), 201


@ns.route("/<string:name>/")
@ns.doc(responses=documented_errors(ns, ITEM), params={"name": "the domain (any case, IDN)"})
class DomainItem(Resource):
    method_decorators = (auth.authenticated,)

    @ns.response(200, "The domain", models["domain"])
    def get(self, name: str) -> Any:
        """Show a domain

        Its limits, its counts and `quota_allocated`, exact after every change;
        `over_limit` when a limit was lowered below what exists.
        """
        domain = _name(name)
        auth.require_read(domain)
        return domain_json(auth.mail().domains.get(domain))

    @ns.expect(models["limits"])
    @ns.response(200, "The domain with its new limits", models["domain"])
    @ns.doc(responses={403: ("Not the admin token", models["error"])})
    def put(self, name: str) -> Any:
        """Change a domain's limits (admin)

        The limits given change, the others stay; 0 removes one. A limit below
        what the domain holds is allowed: nothing is deleted, the domain is
        `over_limit` and further creates are refused until it is back under.
        """
        domain = _name(name)
        auth.require_admin()
        body = read_body({"name", *LIMIT_FIELDS})
        if "name" in body and body["name"] != domain and (
                not isinstance(body["name"], str) or _name(body["name"]) != domain):
            raise Invalid("invalid input", {"name": "a domain cannot be renamed"})
        limits = {k: v for k, v in body.items() if k != "name"}
        return domain_json(auth.mail().domains.set_limits(domain, limits))

    @ns.doc(params={"cascade": "true: delete its accounts and aliases too"},
            responses={403: ("Not the admin token", ns.models["Error"]),
                       409: ("The domain holds entries (and cascade is not true)",
                             ns.models["Error"])})
    @ns.response(204, "Deleted")
    def delete(self, name: str) -> Any:
        """Delete a domain (admin)

        Refused (409) while it holds accounts or aliases, unless `?cascade=true`:
        then they are deleted too, in batches, recorded as one audit event. An
        interrupted cascade is finished by sending it again.
        """
        domain = _name(name)
        auth.require_admin()
        cascade = as_bool("cascade", request.args.get("cascade"), False)
        auth.mail().domains.delete(domain, cascade)
        return "", 204


@ns.route("/<string:name>/usage/")
@ns.doc(responses=documented_errors(ns, {**ITEM, 503: "Dovecot (or LDAP) unreachable, or "
                                                      "Dovecot not configured"}),
        params={"name": "the domain (any case, IDN)"})
class DomainUsage(Resource):
    method_decorators = (auth.authenticated,)

    @ns.response(200, "What the domain's mailboxes hold", models["usage"])
    def get(self, name: str) -> Any:
        """Show a domain's usage

        The sum of its mailboxes' usage as Dovecot counts it (its doveadm HTTP
        API, asked in batches at each request).
        """
        domain = _name(name)
        auth.require_read(domain)
        mail = auth.mail()
        found = mail.domains.get(domain)
        reader = current().usage_reader()
        total = reader.domain_usage(domain, (address for address, _quota in
                                             mail.mailboxes(domain)))
        return {"name": domain, "accounts": found.accounts,
                "quota_allocated": found.quota_allocated, "used_bytes": total.used_bytes,
                "used_messages": total.used_messages,
                "percent": percent(total.used_bytes, found.max_quota)}
