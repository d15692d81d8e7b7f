"""``/mail/account/``: thin resources over :class:`gateway.mail.MailDirectory`."""

from __future__ import annotations

from typing import Any

from flask_restx import Namespace, Resource

from ..mail import MailDirectory
from ..services import current
from . import auth
from .body import as_bool, list_args, read_body
from .models import LIST_PARAMS, account_json, documented_errors, page_json, percent, register

ns = Namespace("mail/account", description="Mail accounts", path="/mail/account")
models = register(ns)
FORBIDDEN = {403: "No rights on the domain (or a spoofing whitelist reaching outside the "
                  "token's domains)"}
ERRORS = documented_errors(ns, FORBIDDEN)
ITEM_ERRORS = documented_errors(ns, {**FORBIDDEN, 404: "No such account"})


@ns.route("/")
@ns.doc(responses=ERRORS)
class AccountList(Resource):
    method_decorators = (auth.authenticated,)

    @ns.doc(params=LIST_PARAMS)
    @ns.response(200, "A page of accounts ordered by id", models["account_page"])
    @ns.response(404, "Page beyond the last", models["error"])
    def get(self) -> Any:
        """List accounts

        The accounts this token may read (all for the admin token), ordered by id,
        one page at a time: `next` and `previous` link the neighbouring pages.
        """
        domain, page, page_size = list_args()
        result = auth.mail().list_accounts_as(account_json, auth.list_scope(domain), page,
                                              page_size)
        return page_json(result)

    @ns.expect(models["new_account"])
    @ns.response(201, "Created; the account as stored", models["account"])
    @ns.response(409, "The address exists (as an account or an alias), or the domain is at "
                      "a limit (max_accounts, max_quota: named in errors)", models["error"])
    def post(self) -> Any:
        """Create an account

        `name@domain` must not exist yet, as an account or an alias. The password
        is sent in plain text and stored as SHA512-crypt; the answer shows the hash.
        `quota` in bytes (0: none); left out, the domain's `default_quota`.
        JSON or form bodies; unknown fields are refused (400).
        """
        body = read_body({"name", "domain", "password", "submission_disabled",
                          "spoofing_whitelist", "subaddress_extension", "quota"})
        disabled = as_bool("submission_disabled", body.get("submission_disabled"), False)
        subaddress = as_bool("subaddress_extension", body.get("subaddress_extension"), False)
        mail = auth.mail()
        # Authorise on the normalised domain (IDN, case) before anything else.
        domain = body.get("domain")
        auth.require_write_to(domain)
        auth.require_whitelist_in_scope(body.get("spoofing_whitelist"))
        account = mail.create_account(body.get("name"), domain, body.get("password"),
                                      disabled, body.get("spoofing_whitelist"),
                                      subaddress_extension=subaddress,
                                      quota=body.get("quota"))
        return account_json(account), 201


@ns.route("/<path:account_id>/")
@ns.doc(responses=ITEM_ERRORS, params={"account_id": "name@domain (any case)"})
class AccountItem(Resource):
    method_decorators = (auth.authenticated,)

    @ns.response(200, "The account", models["account"])
    def get(self, account_id: str) -> Any:
        """Show an account

        The account `name@domain`; its password is the stored hash.
        """
        auth.require_read(auth.domain_of(account_id))
        return account_json(auth.mail().get_account(account_id))

    @ns.response(204, "Deleted")
    def delete(self, account_id: str) -> Any:
        """Delete an account

        Removes the account from LDAP: mail to it bounces from the next lookup on.
        """
        auth.require_write(auth.domain_of(account_id))
        auth.mail().delete_account(account_id)
        return "", 204


@ns.route("/<path:account_id>/usage/")
@ns.doc(responses=documented_errors(ns, {**FORBIDDEN, 404: "No such account",
                                         503: "Dovecot (or LDAP) unreachable, or Dovecot "
                                              "not configured"}),
        params={"account_id": "name@domain (any case)"})
class AccountUsage(Resource):
    method_decorators = (auth.authenticated,)

    @ns.response(200, "What the mailbox holds", models["usage"])
    def get(self, account_id: str) -> Any:
        """Show a mailbox's usage

        Bytes and messages as Dovecot counts them against the quota, read from
        its doveadm HTTP API at each request (never part of the account's own read).
        """
        auth.require_read(auth.domain_of(account_id))
        found = auth.mail().get_account(account_id)
        usage = current().usage_reader().usage(found.id)
        return {"quota": found.quota, "used_bytes": usage.used_bytes,
                "used_messages": usage.used_messages,
                "percent": percent(usage.used_bytes, found.quota)}


def _action(path: str, summary: str, doc: str, fields: set[str], expect: Any = None,
            errors: dict[int, str] | None = None) -> Any:
    """Register ``POST /mail/account/<id>/<path>/`` around a MailDirectory call."""

    document_body = ns.expect(expect) if expect is not None else (lambda func: func)
    responses = documented_errors(ns, {**FORBIDDEN, 404: "No such account", **(errors or {})})

    def decorate(call: Any) -> Any:
        @ns.route(f"/<path:account_id>/{path}/")
        @ns.doc(responses=responses, params={"account_id": "name@domain (any case)"})
        class Action(Resource):
            method_decorators = (auth.authenticated,)

            @ns.doc(description=doc)
            @ns.response(200, "Done; the account as it is now", models["account"])
            @document_body
            def post(self, account_id: str) -> Any:
                auth.require_write(auth.domain_of(account_id))
                body = read_body(fields)
                return account_json(call(auth.mail(), account_id, body))

        # Flask-RESTX takes an operation's summary from its docstring only.
        Action.post.__doc__ = summary

        Action.__name__ = "Account" + path.title().replace("_", "")
        return call

    return decorate


@_action("set_password", "Set the password",
         "Sent in plain text, stored as SHA512-crypt; the answer shows the new hash.",
         {"password"}, models["password"])
def _set_password(mail: MailDirectory, account_id: str, body: dict[str, Any]) -> Any:
    return mail.set_password(account_id, body.get("password"))


@_action("disable_submission", "Stop the account sending",
         "No more sending through submission; mail to the account still arrives. "
         "No body.", set())
def _disable(mail: MailDirectory, account_id: str, body: dict[str, Any]) -> Any:
    return mail.set_submission_disabled(account_id, True)


@_action("enable_submission", "Let the account send again",
         "Sending through submission is allowed again. No body.", set())
def _enable(mail: MailDirectory, account_id: str, body: dict[str, Any]) -> Any:
    return mail.set_submission_disabled(account_id, False)


@_action("enable_subaddress", "Deliver name+anything to the account",
         "Mail to name+anything@domain is delivered to this account. No body.", set())
def _enable_subaddress(mail: MailDirectory, account_id: str, body: dict[str, Any]) -> Any:
    return mail.set_subaddress_extension(account_id, True)


@_action("disable_subaddress", "Stop delivering name+anything to the account",
         "name+anything@domain is unknown again (unless it exists as an account or alias "
         "of its own). No body.", set())
def _disable_subaddress(mail: MailDirectory, account_id: str, body: dict[str, Any]) -> Any:
    return mail.set_subaddress_extension(account_id, False)


@_action("set_spoofing_whitelist", "Set the addresses the account may send as",
         "Replaces the list: comma-separated addresses and domains besides its own, `*` "
         "for any (admin token only), empty for none. A scoped token may name only its "
         "own domains.", {"spoofing_whitelist"}, models["whitelist"])
def _set_whitelist(mail: MailDirectory, account_id: str, body: dict[str, Any]) -> Any:
    auth.require_whitelist_in_scope(body.get("spoofing_whitelist"))
    return mail.set_spoofing_whitelist(account_id, body.get("spoofing_whitelist"))


@_action("set_quota", "Set the mailbox quota",
         "The quota in bytes (0: no limit), enforced by Dovecot from its next lookup: mail "
         "past it is refused at RCPT (552 5.2.2). Raising it is refused (409) past the "
         "domain's `max_quota`; in a domain with a `max_quota`, 0 is refused too.",
         {"quota"}, models["quota"],
         {409: "The domain's max_quota would be passed (named in errors)"})
def _set_quota(mail: MailDirectory, account_id: str, body: dict[str, Any]) -> Any:
    return mail.set_quota(account_id, body.get("quota"))
