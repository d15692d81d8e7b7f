"""``/sync/``: the JSON sync's status and a manual trigger (admin token only).

``GET /sync/status`` reads LDAP, so every worker and host shows the same.
``POST /sync/run`` answers 202 when it started a run (in a thread of this
process; its id is in the answer and, when done, in ``/sync/status``), 409
when a sync is already running anywhere (the lock is taken before answering,
so 202 really means "started") or when no sources are configured.
"""

from __future__ import annotations

from typing import Any

from flask import current_app, url_for
from flask_restx import Namespace, Resource, fields

from ..sync.job import runner_for
from . import auth
from .body import as_bool, read_body
from .models import NullableRaw, documented_errors, error_model

ns = Namespace("sync", description="Basic JSON sync: status and manual runs (admin only)",
               path="/sync")
ERRORS = documented_errors(ns, {403: "Not the admin token"})

_skip = ns.model("SyncSkip", {
    "domain": fields.String(), "name": fields.String(), "reason": fields.String(),
    "source": fields.String(description="the source URL, credentials masked"),
})
_unknown = ns.model("SyncUnknownKey", {
    "key": fields.String(example="subaddress_extension"),
    "kind": fields.String(enum=["account", "alias"]),
    "count": fields.Integer(description="how many entries carried it"),
    "example": fields.Raw(description="the first entry that carried it: domain, name, source"),
})
_run = ns.model("SyncRun", {
    "id": fields.String(example="20260101T120000Z-a1b2c3"),
    "trigger": fields.String(enum=["schedule", "cli", "api"]),
    "started": fields.String(description="ISO 8601, UTC"),
    "duration": fields.Float(description="seconds"),
    "result": fields.String(enum=["applied", "partial", "failed", "refused"]),
    "reason": fields.String(),
    "forced": fields.Boolean(), "full": fields.Boolean(),
    "counts": fields.Raw(example={"created": 2, "updated": 1, "taken_over": 0, "replaced": 0,
                                  "deleted": 0, "skipped": 1, "unchanged": 40,
                                  "managed": 43}),
    "sources": fields.Raw(), "skipped": fields.List(fields.Nested(_skip)),
    "skipped_total": fields.Integer(),
    "unknown_keys": fields.List(fields.Nested(_unknown),
                                description="entry keys ignored (the entries were applied)"),
    "errors": fields.List(fields.String()),
    "errors_total": fields.Integer(),
})
_status = ns.model("SyncStatus", {
    "sources": fields.List(fields.String(), description="credentials masked"),
    "interval": fields.Integer(), "max_delete_fraction": fields.Float(),
    "running": NullableRaw(description="host, pid and lock expiry of the running sync, "
                                       "or null"),
    "last_check": NullableRaw(description="when a process last checked the sources, or "
                                          "null if none did yet"),
    "runs": fields.List(fields.Nested(_run), description="newest first, at most 20"),
})
_request = ns.model("SyncRunRequest", {
    "force": fields.Boolean(default=False, description="pass the delete guard"),
    "full": fields.Boolean(default=False,
                           description="reconcile even if no source changed"),
})
_started = ns.model("SyncStarted", {"message": fields.String(), "id": fields.String()})


@ns.route("/status")
@ns.doc(responses=ERRORS)
class SyncStatus(Resource):
    method_decorators = (auth.authenticated,)

    @ns.response(200, "The sync's state and its last runs", _status)
    def get(self) -> Any:
        """Show the sync's state

        Its sources (credentials masked), whether a run is going on and the last
        runs, newest first. The same on every gateway process: it is read from LDAP.
        """
        auth.require_admin()
        return runner_for(current_app).status()


@ns.route("/run")
@ns.doc(responses=ERRORS)
class SyncRun(Resource):
    method_decorators = (auth.authenticated,)

    @ns.expect(_request)
    @ns.response(202, "A run started; see /sync/status", _started)
    @ns.response(409, "A sync is already running, or no sources are configured",
                 error_model(ns))
    def post(self) -> Any:
        """Start a sync run

        Fetches the configured sources and applies them now, in the background:
        202 means the run has started (its id is in the answer and, when it is done,
        in `/sync/status`). `force` passes the guard against deleting many entries;
        `full` reconciles even if no source changed.
        """
        auth.require_admin()
        body = read_body({"force", "full"})
        force = as_bool("force", body.get("force"), False)
        full = as_bool("full", body.get("full"), False)
        run_id = runner_for(current_app).start_in_background(force=force, full=full)
        return {"message": "sync started; its result appears in /sync/status",
                "id": run_id}, 202, {"Location": url_for("sync_sync_status")}
