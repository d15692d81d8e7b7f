"""``GET /metrics``: Prometheus metrics, for the admin token only.

On the API's own address rather than a second listener: one port to open,
one TLS configuration, and the same token check as everything else
(Prometheus sends it with ``authorization: {credentials_file: ...}``). Only
the admin token may read it, since the figures span every tenant.
"""

from __future__ import annotations

from typing import Any

from flask import Response
from flask_restx import Namespace, Resource

from .. import metrics
from ..errors import DirectoryUnavailable
from ..services import current
from ..sync.state import StateStore
from . import auth
from .models import documented_errors

ns = Namespace("metrics", description="Prometheus metrics (admin token)", path="/")


def _last_success() -> float | None:
    """When the last sync run applied or found nothing to do (from LDAP), or None."""
    state = StateStore(current().directory)
    best: float | None = None
    check = state.load_state().get("last_check")
    if isinstance(check, dict) and check.get("result") in ("applied", "unchanged"):
        best = metrics.parse_time(str(check.get("time", "")))
    for run in state.runs():
        if run.get("result") == "applied":
            started = metrics.parse_time(str(run.get("started", "")))
            if started is not None:
                done = started + float(run.get("duration") or 0)
                best = done if best is None else max(best, done)
    return best


@ns.route("/metrics")
@ns.doc(responses=documented_errors(ns, {403: "Not the admin token"}))
class Metrics(Resource):
    # Errors are JSON, as everywhere: both types are documented.
    @ns.produces([metrics.CONTENT_TYPE, "application/json"])
    @ns.response(200, "The metrics in the Prometheus text format")
    @auth.authenticated
    def get(self) -> Any:
        """Prometheus metrics

        Every worker's counters added up, in the Prometheus text format. Admin token only.
        """
        auth.require_admin()
        return Response(metrics.exposition(_last_success, _domain_limits),
                        mimetype=metrics.CONTENT_TYPE)


def _domain_limits() -> list[metrics.DomainUsage]:
    """Every limit a domain has, with what it holds; none while LDAP is down (the
    scrape still answers, with the directory's error counters)."""
    try:
        return list(current().mail.domains.limited())
    except DirectoryUnavailable:
        return []
