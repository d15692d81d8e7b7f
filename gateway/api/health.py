"""``/healthz`` (the process answers) and ``/readyz`` (LDAP answers too)."""

from __future__ import annotations

from typing import Any

from flask_restx import Namespace, Resource

from ..services import current

ns = Namespace("health", description="Liveness and readiness, no authentication", path="/")


@ns.route("/healthz")
class Health(Resource):
    def get(self) -> Any:
        return {"status": "ok"}


@ns.route("/readyz")
class Ready(Resource):
    @ns.response(503, "LDAP unreachable")
    def get(self) -> Any:
        current().directory.ping()
        return {"status": "ready"}
