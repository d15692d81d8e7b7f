"""``/mail/alias/``: thin resources over :class:`gateway.mail.MailDirectory`."""

from __future__ import annotations

from typing import Any

from flask_restx import Namespace, Resource

from . import auth
from .accounts import ERRORS
from .body import list_args, read_body
from .models import alias_json, page_json, register

ns = Namespace("mail/alias", description="Mail aliases", path="/mail/alias")
models = register(ns)


@ns.route("/")
@ns.doc(responses=ERRORS)
class AliasList(Resource):
    method_decorators = (auth.authenticated,)

    @ns.doc(params={"domain": "only this domain", "page": "from 1, or last",
                    "page_size": "default 100; above 10000 means 10000"})
    @ns.response(200, "A page of aliases ordered by id", models["alias_page"])
    @ns.response(404, "Page beyond the last")
    def get(self) -> Any:
        domain, page, page_size = list_args()
        result = auth.mail().list_aliases(auth.list_scope(domain), page, page_size)
        return page_json(result, [alias_json(a) for a in result.results])

    @ns.expect(models["alias"])
    @ns.response(201, "Created", models["alias"])
    @ns.response(409, "The address exists (as an account or an alias)")
    def post(self) -> Any:
        body = read_body({"name", "domain", "to"})
        domain = body.get("domain")
        auth.require_write_to(domain)
        alias = auth.mail().create_alias(body.get("name"), domain, body.get("to"))
        return alias_json(alias), 201


@ns.route("/<path:alias_id>/")
@ns.doc(responses={**ERRORS, 404: "No such alias"})
class AliasItem(Resource):
    method_decorators = (auth.authenticated,)

    @ns.response(200, "The alias", models["alias"])
    def get(self, alias_id: str) -> Any:
        auth.require_read(auth.domain_of(alias_id))
        return alias_json(auth.mail().get_alias(alias_id))

    @ns.expect(models["alias_update"])
    @ns.response(200, "Updated", models["alias"])
    def put(self, alias_id: str) -> Any:
        auth.require_write(auth.domain_of(alias_id))
        body = read_body({"to"})
        return alias_json(auth.mail().set_alias_targets(alias_id, body.get("to")))

    @ns.response(204, "Deleted")
    def delete(self, alias_id: str) -> Any:
        auth.require_write(auth.domain_of(alias_id))
        auth.mail().delete_alias(alias_id)
        return "", 204
