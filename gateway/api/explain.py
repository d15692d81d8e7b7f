"""``GET /mail/explain/``: what Postfix and the milter do with an address (:mod:`gateway.explain`).

Read-only: any token with rights on the address's domain (read-only tokens too).
"""

from __future__ import annotations

from typing import Any

from flask import request
from flask_restx import Namespace, Resource, fields

from ..errors import Invalid
from ..explain import (
    CATCH_ALL_ALIAS,
    EXTERNAL,
    FORWARD,
    MAILBOX,
    MAILBOX_AND_FORWARD,
    OVER_QUOTA,
    SUBADDRESS,
    UNKNOWN,
    Explainer,
)
from ..services import current
from . import auth
from .models import NullableString, documented_errors

ns = Namespace("mail/explain", description="Why mail to an address goes where it goes",
               path="/mail/explain")
DELIVERIES = [MAILBOX, MAILBOX_AND_FORWARD, FORWARD, SUBADDRESS, CATCH_ALL_ALIAS, UNKNOWN,
              EXTERNAL, OVER_QUOTA]

_lookup = ns.model("ExplainLookup", {
    "map": NullableString(description="the virtual_alias_maps table that answered (null: none)",
                          example="ldap-accounts.cf + ldap-aliases.cf"),
    "result": fields.List(fields.String, description="its answer",
                          example=["office@example.com", "alice@example.com"]),
})
_quota = ns.model("ExplainQuota", {
    "limit": fields.Integer(description="mailgateQuota, bytes", example=1073741824),
    "used": fields.Integer(description="bytes in the mailbox, from Dovecot (null: unknown)",
                           example=52428800),
    "full": fields.Boolean(description="used reached the limit (null: unknown)"),
    "note": fields.String(description="why the fill is unknown"),
})
_recipient = ns.model("ExplainRecipient", {
    "address": fields.String(example="alice@example.com"),
    "delivery": fields.String(enum=[MAILBOX, OVER_QUOTA, EXTERNAL, UNKNOWN], example=MAILBOX,
                              description="mailbox: Dovecot's INBOX; over_quota: the mailbox "
                                          "is full, delivery waits in the queue; external: "
                                          "sent out by SMTP; unknown: accepted, then bounced"),
    "quota": fields.Nested(_quota, allow_null=True,
                           description="only for a mailbox with a quota"),
})
_submission = ns.model("ExplainSubmission", {
    "account": fields.Boolean(description="the address is an account (may log in)"),
    "disabled": fields.Boolean(description="submission disabled (null: no account)"),
    "smtp": NullableString(description="the refusal, null when it may send",
                           example=None),
    "rule": fields.String(description="what decided it"),
})
_check = ns.model("ExplainSenderCheck", {
    "allowed": fields.Boolean(),
    "smtp": NullableString(description="the refusal, null when allowed"),
    "rule": fields.String(description="what decided it",
                          example="ldap-sender-login.cf gives alice@example.com for "
                                  "office@example.com: the spoofing whitelist holds "
                                  "office@example.com"),
})
_sender = ns.model("ExplainSender", {
    "address": fields.String(example="office@example.com"),
    "envelope": fields.Nested(_check, description="MAIL FROM on submission (Postfix)"),
    "from_header": fields.Nested(_check, description="the From: header (the milter)"),
})
_explanation = ns.model("Explanation", {
    "address": fields.String(required=True, example="alice+news@example.com"),
    "hosted": fields.Boolean(required=True, description="its domain is in the directory"),
    "delivery": fields.String(required=True, enum=DELIVERIES, example=SUBADDRESS),
    "smtp": fields.String(required=True, description="the answer to RCPT TO on port 25",
                          example="250 2.1.5 Ok"),
    "rule": fields.String(required=True, description="the rule (map) that decided it"),
    "lookup": fields.Nested(_lookup, required=True),
    "recipients": fields.List(fields.Nested(_recipient),
                              description="every final recipient, aliases followed"),
    "submission": fields.Nested(_submission, required=True,
                                description="the address as a login on submission"),
    "sender": fields.Nested(_sender, allow_null=True,
                            description="with from=: may the account send as it (null "
                                        "without from)"),
})


@ns.route("/")
@ns.doc(responses=documented_errors(ns, {403: "No rights on the address's domain"}))
class Explain(Resource):
    method_decorators = (auth.authenticated,)

    @ns.doc(params={"address": {"description": "the recipient (and login) to explain",
                                "required": True, "example": "alice+news@example.com"},
                    "from": "a sender address: may the account `address` use it as "
                            "envelope sender and in From:?"})
    @ns.response(200, "What Postfix and the milter do", _explanation)
    def get(self) -> Any:
        """Explain an address

        From the directory, in the order of the rendered Postfix maps: is mail to
        `address` delivered to a mailbox, forwarded, taken by a sub-address or the
        catch-all, refused as unknown (550) or over quota (552, with Dovecot's usage)
        or not hosted here; may the address log
        in to send; and with `from`, may it use that sender as envelope and in From:,
        each with the rule that decided it. Read-only.
        """
        unknown = sorted(set(request.args) - {"address", "from"})
        if unknown:
            raise Invalid("invalid query", {name[:100]: "unknown parameter" for name in unknown})
        services = current()
        reader = services.dovecot.usage if services.dovecot is not None else None
        explainer = Explainer(services.directory, reader)
        return explainer.explain(request.args.get("address"), request.args.get("from"),
                                 authorize=auth.require_read).json()
