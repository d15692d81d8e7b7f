"""``/healthz`` (the process answers) and ``/readyz`` (LDAP answers too).

``/healthz`` never touches LDAP. ``/readyz`` binds and reads on a fresh
connection within :data:`READY_TIMEOUT` seconds (or ``MAILGATE_LDAP_TIMEOUT``
if lower), else 503: a frozen directory cannot hang a probe.
"""

from __future__ import annotations

from typing import Any

from flask_restx import Namespace, Resource, fields

from ..services import current
from .models import error_model

READY_TIMEOUT = 2.0

ns = Namespace("health", description="Liveness and readiness, no authentication", path="/")


_status = ns.model("HealthStatus", {"status": fields.String(example="ok")})
_error = error_model(ns)


@ns.route("/healthz")
@ns.doc(security=[])
class Health(Resource):
    @ns.response(200, "The process answers (LDAP is not asked)", _status)
    def get(self) -> Any:
        """Liveness: the process answers

        Never asks LDAP, so a directory outage does not get the gateway restarted.
        No token needed.
        """
        return {"status": "ok"}


@ns.route("/readyz")
@ns.doc(security=[])
class Ready(Resource):
    @ns.response(200, "LDAP answered within the bound", _status)
    @ns.response(503, "LDAP did not answer within 2 s (Retry-After)", _error)
    def get(self) -> Any:
        """Readiness: LDAP answers too

        Binds and reads on a fresh LDAP connection within 2 s; 503 otherwise.
        No token needed.
        """
        services = current()
        services.directory.ping(min(READY_TIMEOUT, services.settings.ldap_timeout))
        return {"status": "ready"}
