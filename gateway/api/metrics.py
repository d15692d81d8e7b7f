"""``GET /metrics``: Prometheus metrics, for the admin token only.

On the API's own address rather than a second listener: one port to open,
one TLS configuration, and the same token check as everything else
(Prometheus sends it with ``authorization: {credentials_file: ...}``). Only
the admin token may read it, since the figures span every tenant.

A scrape also reads the deployment's state (:func:`_deployment`): the sync's
history from LDAP, the certificate's expiry, and each configured replica's
contextCSN against the provider's. A directory that does not answer makes
``mailgate_directory_up 0`` and leaves out what LDAP would have told, instead
of failing the scrape: the alert on it must still see the counters.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Response
from flask_restx import Namespace, Resource

from .. import metrics
from ..errors import DirectoryUnavailable
from ..replication import replica_lag
from ..services import Services, current
from ..sync.state import StateStore
from ..tls import certificate_expiry
from . import auth
from .models import documented_errors

log = logging.getLogger(__name__)
ns = Namespace("metrics", description="Prometheus metrics (admin token)", path="/")


PROBE_TIMEOUT = 2.0   # seconds for each LDAP server asked during one scrape
FAILED = ("failed", "refused")


def _last_success(state: StateStore, runs: list[dict[str, Any]]) -> float | None:
    """When the last sync run applied or found nothing to do (from LDAP), or None."""
    best: float | None = None
    check = state.load_state().get("last_check")
    # An unchanged check that carries a partial run's skips is no success either.
    if isinstance(check, dict) and check.get("result") in ("applied", "unchanged") \
            and not check.get("skipped_total"):
        best = metrics.parse_time(str(check.get("time", "")))
    for run in runs:
        if run.get("result") == "applied":
            started = metrics.parse_time(str(run.get("started", "")))
            if started is not None:
                done = started + float(run.get("duration") or 0)
                best = done if best is None else max(best, done)
    return best


def _replicas(services: Services) -> tuple[metrics.Replica, ...]:
    urls = services.settings.ldap_replica_urls
    if not urls:
        return ()
    try:
        provider = services.directory.context_csn(timeout=PROBE_TIMEOUT)
    except DirectoryUnavailable:
        return ()   # no provider to compare with: directory_up says so
    if not provider:
        # Nothing to compare with: the directory's ACL (ldif/config.ldif) does not
        # let the gateway read contextCSN yet; a lag of 0 would be a lie.
        log.warning("cannot read the provider's contextCSN as %s: no replica lag "
                    "(upgrade the directory's configuration)", services.directory.bind_dn)
        return ()
    found = []
    for url in urls:
        try:
            lag: float | None = replica_lag(
                provider, services.directory.context_csn(url, PROBE_TIMEOUT))
        except DirectoryUnavailable:
            lag = None
        found.append(metrics.Replica(url, lag))
    return tuple(found)


def _deployment() -> metrics.Deployment:
    services = current()
    settings = services.settings
    cert = settings.tls_cert or settings.data_dir / "tls" / "cert.pem"
    known: dict[str, Any] = {
        "certificate_expiry": certificate_expiry(cert),
        "sync_interval": float(settings.json_interval) if settings.json_urls else None,
    }
    try:
        services.directory.ping(PROBE_TIMEOUT)
        state = StateStore(services.directory)
        runs = state.runs()
        known["last_success"] = _last_success(state, runs)
        known["domains"] = tuple(services.mail.domains.limited())
    except DirectoryUnavailable:
        return metrics.Deployment(directory_up=False, **known)
    if runs:
        known["last_result"] = str(runs[0].get("result", "unknown"))
        known["last_run"] = metrics.parse_time(str(runs[0].get("started", "")))
        streak = 0
        for run in runs:
            if run.get("result") not in FAILED:
                break
            streak += 1
        known["consecutive_failures"] = streak
    elif settings.json_urls:
        known["consecutive_failures"] = 0
    return metrics.Deployment(replicas=_replicas(services), **known)


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
        return Response(metrics.exposition(_deployment), mimetype=metrics.CONTENT_TYPE)
