"""``/healthz`` (the process answers) and ``/readyz`` (LDAP answers too).

``/healthz`` never touches LDAP. ``/readyz`` binds and reads on a fresh
connection within :data:`READY_TIMEOUT` seconds (or ``MAILGATE_LDAP_TIMEOUT``
if lower), else 503: a frozen directory cannot hang a probe.
"""

from __future__ import annotations

from typing import Any

from flask_restx import Namespace, Resource

from ..services import current

READY_TIMEOUT = 2.0

ns = Namespace("health", description="Liveness and readiness, no authentication", path="/")


@ns.route("/healthz")
class Health(Resource):
    def get(self) -> Any:
        return {"status": "ok"}


@ns.route("/readyz")
class Ready(Resource):
    @ns.response(503, "LDAP unreachable")
    def get(self) -> Any:
        services = current()
        services.directory.ping(min(READY_TIMEOUT, services.settings.ldap_timeout))
        return {"status": "ready"}
