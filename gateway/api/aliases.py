"""``/mail/alias/``: thin resources over :class:`gateway.mail.MailDirectory`."""

from __future__ import annotations

from typing import Any

from flask_restx import Namespace, Resource

from . import auth
from .accounts import FORBIDDEN
from .body import list_args, read_body
from .models import LIST_PARAMS, alias_json, documented_errors, page_json, register

ns = Namespace("mail/alias", description="Mail aliases", path="/mail/alias")
models = register(ns)
ERRORS = documented_errors(ns, FORBIDDEN)
ITEM_ERRORS = documented_errors(ns, {**FORBIDDEN, 404: "No such alias"})


@ns.route("/")
@ns.doc(responses=ERRORS)
class AliasList(Resource):
    method_decorators = (auth.authenticated,)

    @ns.doc(params=LIST_PARAMS)
    @ns.response(200, "A page of aliases ordered by id", models["alias_page"])
    @ns.response(404, "Page beyond the last", models["error"])
    def get(self) -> Any:
        """List aliases

        The aliases this token may read (all for the admin token), ordered by id,
        one page at a time: `next` and `previous` link the neighbouring pages.
        """
        domain, page, page_size = list_args()
        result = auth.mail().list_aliases_as(alias_json, auth.list_scope(domain), page,
                                             page_size)
        return page_json(result)

    @ns.expect(models["new_alias"])
    @ns.response(201, "Created; the alias as stored", models["alias"])
    @ns.response(409, "The address exists (as an account or an alias)", models["error"])
    def post(self) -> Any:
        """Create an alias

        Mail to `name@domain` goes to every address in `to` (comma-separated, here or
        elsewhere). The address must not exist yet, as an account or an alias.
        """
        body = read_body({"name", "domain", "to"})
        domain = body.get("domain")
        auth.require_write_to(domain)
        alias = auth.mail().create_alias(body.get("name"), domain, body.get("to"))
        return alias_json(alias), 201


@ns.route("/<path:alias_id>/")
@ns.doc(responses=ITEM_ERRORS, params={"alias_id": "name@domain (any case)"})
class AliasItem(Resource):
    method_decorators = (auth.authenticated,)

    @ns.response(200, "The alias", models["alias"])
    def get(self, alias_id: str) -> Any:
        """Show an alias

        The alias `name@domain` and where its mail goes.
        """
        auth.require_read(auth.domain_of(alias_id))
        return alias_json(auth.mail().get_alias(alias_id))

    @ns.expect(models["alias_update"])
    @ns.response(200, "Updated; the alias as it is now", models["alias"])
    def put(self, alias_id: str) -> Any:
        """Change where an alias goes

        Replaces the recipients with `to` (comma-separated).
        """
        auth.require_write(auth.domain_of(alias_id))
        body = read_body({"to"})
        return alias_json(auth.mail().set_alias_targets(alias_id, body.get("to")))

    @ns.response(204, "Deleted")
    def delete(self, alias_id: str) -> Any:
        """Delete an alias

        Removes the alias from LDAP: mail to it bounces from the next lookup on.
        """
        auth.require_write(auth.domain_of(alias_id))
        auth.mail().delete_alias(alias_id)
        return "", 204
