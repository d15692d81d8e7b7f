"""``GET /audit/``: the audit trail (:mod:`gateway.audit`).

The admin token sees every event; a scoped token sees the events that touch
its domains (a sync run's entry cut down to its changes there), and never
failed authentications, token changes or anything without an address.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import request
from flask_restx import Namespace, Resource, fields

from ..addresses import normalize_domain
from ..errors import Invalid
from ..services import current
from . import auth
from .models import documented_errors

ns = Namespace("audit", description="Who changed what, when and from where", path="/audit")
MAX_EVENTS = 10_000

_event = ns.model("AuditEvent", {
    "time": fields.String(required=True, example="2026-12-01T00:45:12.123Z"),
    "who": fields.String(required=True, example="token 3f2a9c1b7d4e5f60",
                         description="admin, token <id>, sync run <id>, cli <user@host> "
                                     "or unauthenticated"),
    "operation": fields.String(required=True, example="account.create"),
    "target": fields.String(example="alice@example.com"),
    "fields": fields.Raw(description="the fields that changed; values only of fields that "
                                     "are not secret (a password is named, never shown)"),
    "client": fields.String(example="192.0.2.10"),
    "request_id": fields.String(example="5b0c6d2e8f..."),
    "changes": fields.Raw(description="a sync run's changes (500 at most per event)"),
    "scheme": fields.String(example="bearer", description="auth.failure: the scheme used"),
    "prefix": fields.String(example="2001:db8:1:2::/64",
                            description="auth.failure, auth.lockout: the network counted"),
    "window": fields.Integer(description="auth.lockout: seconds the client waits"),
    "since": fields.String(description="an aggregate event (auth.failures, authz.denied): "
                                       "the start of its interval"),
    "until": fields.String(description="an aggregate event: the end of its interval"),
    "failures": fields.Integer(description="auth.failures: failed authentications beyond "
                                           "the budget in the interval, in one process"),
    "denials": fields.Integer(description="authz.denied: 403 answers to this token in the "
                                          "interval, in one process"),
    "addresses": fields.Integer(description="an aggregate event: distinct client addresses"),
    "top": fields.Raw(description="an aggregate event: the prefixes (or paths) seen most, "
                                  "with their counts"),
})
_events = ns.model("AuditEvents", {
    "count": fields.Integer(required=True),
    "truncated": fields.Boolean(required=True,
                                description=f"more than {MAX_EVENTS} events matched"),
    "results": fields.List(fields.Nested(_event), required=True),
})


def _since(raw: str | None) -> dt.datetime | None:
    if raw is None:
        return None
    try:
        when = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise Invalid("invalid since", {"since": "expected an ISO 8601 date or time, "
                                                 "e.g. 2026-12-01 or 2026-12-01T08:00Z"}) \
            from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


@ns.route("/")
@ns.doc(responses=documented_errors(ns, {403: "No rights on the domain"}))
class AuditTrail(Resource):
    method_decorators = (auth.authenticated,)

    @ns.doc(params={"since": "ISO 8601 date or time (UTC unless it says otherwise)",
                    "domain": "only events that touch this domain"})
    @ns.response(200, "The events", _events)
    def get(self) -> Any:
        """Read the audit trail

        Events oldest first, from `since` on (default: the last 24 hours), of one domain
        or of every domain the token sees.
        """
        unknown = sorted(set(request.args) - {"since", "domain"})
        if unknown:
            raise Invalid("invalid query", {name[:100]: "unknown parameter" for name in unknown})
        since = _since(request.args.get("since")) or (
            dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
        domain = request.args.get("domain")
        if domain is not None:
            try:
                domain = normalize_domain(domain)
            except ValueError as exc:
                raise Invalid("invalid domain", {"domain": str(exc)}) from None
        domains = auth.list_scope(domain)
        results: list[dict[str, Any]] = []
        truncated = False
        for event in current().audit.read(since, domains):
            if len(results) >= MAX_EVENTS:
                truncated = True
                break
            results.append(event)
        return {"count": len(results), "truncated": truncated, "results": results}
