"""What Postfix and the milter will do with an address, read from the directory.

``mailgate explain ADDRESS [--from SENDER]`` and ``GET /mail/explain/`` answer
the mail operator's daily question from the same LDAP data, in the same order,
as the rendered configuration (deploy/postfix, docs/mail-servers.md):

1. ``virtual_mailbox_domains`` (ldap-domains.cf): a domain without a
   mailgateDomain entry is not hosted here; port 25 refuses it (relay access
   denied), submission sends it out;
2. ``virtual_alias_maps``, the first table that answers wins:
   a. ``unionmap`` of ldap-accounts.cf (an account maps to itself) and
      ldap-aliases.cf (an alias, or an account's forwarding, maps to its
      targets): an address that is both gets its mailbox and the targets;
   b. ``pipemap`` of subaddress.pcre (``name+anything@domain`` becomes
      ``name@domain``, the extension starting at the first ``+``) and
      ldap-subaddress.cf (only an account with sub-addressing on);
   c. ldap-catchall.cf: the alias ``*@domain``;
   every result is looked up again, and an address that maps to itself is final;
3. a hosted address no table knows is refused at RCPT: 550 5.1.1;
4. an account whose mailbox is full (Dovecot's usage at or over its
   mailgateQuota) is refused at RCPT by Dovecot's quota-status: 552 5.2.2. A
   full mailbox reached through an alias, a sub-address or the catch-all is
   accepted (quota-status knows no such user) and LMTP defers it at delivery:
   it waits in Postfix's queue until there is room.

For a login (the address as an account) and a sender: submission is refused
for an account with submission disabled (check_sasl_access, 554); the
envelope sender must be one ldap-sender-login.cf gives the login
(reject_authenticated_sender_login_mismatch, 553); the ``From:`` header is
the milter's (:func:`gateway.milter.decide`, 550).

Pure reads; no Flask. Each answer names the rule (map) that decided it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .addresses import CATCH_ALL, WILDCARD, Address, parse_address
from .directory import Directory, eq
from .dovecot import Usage
from .entries import (
    A_DISABLED,
    A_MAIL,
    A_QUOTA,
    A_SENDER,
    A_SUBADDRESS,
    A_TARGET,
    KIND_ALIAS,
    OC_DOMAIN,
    Existing,
    Layout,
    decode_existing,
)
from .errors import DovecotUnavailable, Invalid, NotFound
from .milter import decide

__all__ = ["Explainer", "Explanation"]

_ATTRS = ("objectClass", A_MAIL, A_SENDER, A_DISABLED, A_SUBADDRESS, A_TARGET, A_QUOTA)
MAX_DEPTH = 20        # how deep alias targets are followed (Postfix: 1000; loops end earlier)
MAX_RECIPIENTS = 1000  # Postfix's virtual_alias_expansion_limit

# What each outcome of an address is called, and the SMTP answer on port 25.
MAILBOX = "mailbox"                 # an account: Dovecot's INBOX
MAILBOX_AND_FORWARD = "mailbox_and_forward"   # an account that also forwards
FORWARD = "forward"                 # an alias
SUBADDRESS = "subaddress"           # name+tag to an account with sub-addressing on
CATCH_ALL_ALIAS = "catch_all"       # the domain's catch-all alias
UNKNOWN = "unknown"                 # a hosted domain, no such address: 550
EXTERNAL = "external"               # not a domain of this directory
OVER_QUOTA = "over_quota"           # an account's full mailbox: 552 (deferred via aliases)

ACCEPTED = "250 2.1.5 Ok"
UNKNOWN_REPLY = "550 5.1.1 <{0}>: Recipient address rejected: User unknown in virtual mailbox table"
RELAY_REPLY = "554 5.7.1 <{0}>: Relay access denied"
DISABLED_REPLY = "554 5.7.1 <{0}>: Sender address rejected: sending is disabled for this account"
MISMATCH_REPLY = "553 5.7.1 <{0}>: Sender address rejected: not owned by user {1}"
NO_LOGIN_REPLY = "535 5.7.8 Error: authentication failed"
FULL_REPLY = "552 5.2.2 Mailbox is full"

UNION_MAPS = "ldap-accounts.cf + ldap-aliases.cf"
SUBADDRESS_MAPS = "subaddress.pcre | ldap-subaddress.cf"
CATCHALL_MAP = "ldap-catchall.cf"


@dataclass(frozen=True)
class Recipient:
    """Where one final recipient of the expansion ends."""

    address: str
    delivery: str          # MAILBOX, OVER_QUOTA (deferred), EXTERNAL or UNKNOWN (bounced)
    quota: dict[str, Any] | None = None   # a mailbox with a quota: limit, used, full

    def json(self) -> dict[str, Any]:
        return {"address": self.address, "delivery": self.delivery, "quota": self.quota}


@dataclass
class Explanation:
    address: str
    hosted: bool
    delivery: str
    smtp: str
    rule: str
    lookup_map: str | None = None
    lookup_result: list[str] = field(default_factory=list)
    recipients: list[Recipient] = field(default_factory=list)
    submission: dict[str, Any] = field(default_factory=dict)
    sender: dict[str, Any] | None = None

    def json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "hosted": self.hosted,
            "delivery": self.delivery,
            "smtp": self.smtp,
            "rule": self.rule,
            "lookup": {"map": self.lookup_map, "result": self.lookup_result},
            "recipients": [r.json() for r in self.recipients],
            "submission": self.submission,
            "sender": self.sender,
        }


@dataclass(frozen=True)
class _Step:
    """The virtual_alias_maps answer for one address (None: no table answered)."""

    delivery: str
    map: str
    result: tuple[str, ...]
    rule: str


class Explainer:
    """Reads the entries Postfix's maps would read, and applies their order."""

    def __init__(self, directory: Directory,
                 usage: Callable[[str], Usage] | None = None) -> None:
        """``usage(address)``: the mailbox's usage from Dovecot (None: Dovecot is not
        configured, and a quota's fill is reported as unknown)."""
        self.dir = directory
        self.usage = usage
        self.layout = Layout(directory.base_dn)
        self._entries: dict[str, Existing | None] = {}
        self._domains: dict[str, bool] = {}

    # -- reads ------------------------------------------------------------------

    def _entry(self, address: str) -> Existing | None:
        if address not in self._entries:
            found = self.dir.find(self.layout.domains, eq(A_MAIL, address), list(_ATTRS),
                                  limit=2)
            decoded = [e for e in (decode_existing(f) for f in found) if e is not None]
            self._entries[address] = decoded[0] if decoded else None
        return self._entries[address]

    def hosted(self, domain: str) -> bool:
        if domain not in self._domains:
            self._domains[domain] = self.dir.read(
                self.layout.domain(domain), eq("objectClass", OC_DOMAIN), ["1.1"]) is not None
        return self._domains[domain]

    # -- the recipient path -------------------------------------------------------

    def _step(self, address: Address) -> _Step | None:
        """The first of virtual_alias_maps' tables that answers for ``address``."""
        text = str(address)
        entry = self._entry(text)
        if entry is not None:
            account = entry.kind != KIND_ALIAS
            targets = entry.targets if entry.kind != "account" else ()
            if account and targets:
                return _Step(MAILBOX_AND_FORWARD, UNION_MAPS, (text, *targets),
                             f"{text} is an account (its own mailbox) that also forwards "
                             f"(mailgateForwarding): both maps of the union answer")
            if account:
                return _Step(MAILBOX, UNION_MAPS, (text,),
                             f"{text} is an account: ldap-accounts.cf maps it to itself, "
                             f"Dovecot delivers to its INBOX")
            if targets:
                return _Step(FORWARD, UNION_MAPS, targets,
                             f"{text} is an alias: ldap-aliases.cf gives its targets")
        local, plus, _tag = address.local.partition("+")
        if plus and local:
            base = f"{local}@{address.domain}"
            owner = self._entry(base)
            if owner is not None and owner.kind != KIND_ALIAS and owner.subaddress_extension:
                return _Step(SUBADDRESS, SUBADDRESS_MAPS, (base,),
                             f"no account or alias {text}; {base} is an account with "
                             f"sub-addressing on: subaddress.pcre strips "
                             f"+{_tag}, ldap-subaddress.cf answers {base}")
        catch_all = self._entry(f"{CATCH_ALL}@{address.domain}")
        if catch_all is not None and catch_all.targets:
            why = f"no account or alias {text}"
            if plus and local:
                why += f", and {local}@{address.domain} has no sub-addressing"
            return _Step(CATCH_ALL_ALIAS, CATCHALL_MAP, catch_all.targets,
                         f"{why}: the catch-all *@{address.domain} takes it")
        return None

    def _expand(self, text: str, depth: int, seen: set[str], out: list[Recipient]) -> None:
        """The final recipients of ``text`` (Postfix's recursive alias expansion)."""
        if len(out) >= MAX_RECIPIENTS or any(r.address == text for r in out):
            return
        try:
            address = parse_address(text)
        except ValueError:
            out.append(Recipient(text, EXTERNAL))
            return
        if not self.hosted(address.domain):
            out.append(Recipient(text, EXTERNAL))
            return
        step = self._step(address) if depth < MAX_DEPTH and text not in seen else None
        if step is None:
            entry = self._entry(text)
            account = entry is not None and entry.kind != KIND_ALIAS
            out.append(self._mailbox(text) if account else Recipient(text, UNKNOWN))
            return
        for target in step.result:
            if target == text:   # maps to itself: final
                out.append(self._mailbox(text))
            else:
                self._expand(target, depth + 1, seen | {text}, out)

    def _mailbox(self, text: str) -> Recipient:
        """An account's mailbox as a final recipient, with its quota's fill."""
        entry = self._entry(text)
        limit = entry.quota if entry is not None else 0
        if not limit:
            return Recipient(text, MAILBOX)
        quota: dict[str, Any] = {"limit": limit, "used": None, "full": None}
        if self.usage is None:
            quota["note"] = "Dovecot is not configured (MAILGATE_DOVECOT_URL): fill unknown"
        else:
            try:
                quota["used"] = self.usage(text).used_bytes
            except NotFound:
                quota["used"] = 0   # Dovecot never saw the mailbox: empty
            except DovecotUnavailable as exc:
                quota["note"] = f"fill unknown: {exc.message}"
        if quota["used"] is not None:
            quota["full"] = quota["used"] >= limit
        return Recipient(text, OVER_QUOTA if quota["full"] else MAILBOX, quota)

    def explain(self, address: object, sender: object = None,
                authorize: Callable[[str], None] | None = None) -> Explanation:
        """What happens to mail to ``address``, and (``sender``) may it send as that.

        ``authorize(domain)`` is called with the address's domain once the input
        is valid, before anything is read (the API: the token's rights)."""
        fields: dict[str, str] = {}
        parsed: Address | None = None
        if not isinstance(address, str) or not address:
            fields["address"] = "this field is required"
        else:
            try:
                parsed = parse_address(address.strip())
            except ValueError as exc:
                fields["address"] = str(exc)
        header: str | None = None
        if sender is not None:
            try:
                header = str(parse_address(sender.strip() if isinstance(sender, str) else ""))
            except ValueError as exc:
                fields["from"] = str(exc)
        if fields or parsed is None:
            raise Invalid("invalid input", fields)
        if authorize is not None:
            authorize(parsed.domain)
        text = str(parsed)
        if not self.hosted(parsed.domain):
            found = Explanation(text, False, EXTERNAL, RELAY_REPLY.format(text),
                                f"{parsed.domain} is not a domain of this directory "
                                f"(ldap-domains.cf): port 25 refuses it, submission sends "
                                f"it out by SMTP",
                                recipients=[Recipient(text, EXTERNAL)])
        else:
            step = self._step(parsed)
            if step is None:
                found = Explanation(text, True, UNKNOWN, UNKNOWN_REPLY.format(text),
                                    f"no account or alias {text}, no sub-address and no "
                                    f"catch-all for {parsed.domain}: refused at RCPT")
            else:
                recipients: list[Recipient] = []
                self._expand(text, 0, set(), recipients)
                found = Explanation(text, True, step.delivery, ACCEPTED, step.rule,
                                    step.map, list(step.result), recipients)
                own = [r for r in recipients if r.address == text and r.quota]
                if step.delivery in (MAILBOX, MAILBOX_AND_FORWARD) and own and \
                        own[0].delivery == OVER_QUOTA:
                    quota = own[0].quota or {}
                    found.delivery, found.smtp = OVER_QUOTA, FULL_REPLY
                    found.rule = (f"{text} is an account whose mailbox is full: "
                                  f"{quota.get('used')} of its {quota.get('limit')} bytes "
                                  f"(mailgateQuota) are used; Dovecot's quota-status "
                                  f"refuses it at RCPT")
        found.submission = self._submission(text)
        if header is not None:
            found.sender = self._sender(text, header)
        return found

    # -- the sending path -----------------------------------------------------------

    def _account(self, login: str) -> Existing | None:
        entry = self._entry(login)
        return entry if entry is not None and entry.kind != KIND_ALIAS else None

    def _submission(self, login: str) -> dict[str, Any]:
        account = self._account(login)
        if account is None:
            return {"account": False, "disabled": None, "smtp": NO_LOGIN_REPLY,
                    "rule": f"{login} is no account: it cannot log in (Dovecot's passdb)"}
        if account.submission_disabled:
            return {"account": True, "disabled": True, "smtp": DISABLED_REPLY.format(login),
                    "rule": "mailgateSubmissionDisabled is TRUE: ldap-submission-disabled.cf "
                            "answers REJECT (check_sasl_access)"}
        return {"account": True, "disabled": False, "smtp": None,
                "rule": "submission is enabled (ldap-submission-disabled.cf does not answer)"}

    def _sender(self, login: str, sender: str) -> dict[str, Any]:
        account = self._account(login)
        if account is None:
            no = {"allowed": False, "smtp": NO_LOGIN_REPLY,
                  "rule": f"{login} is no account: it cannot log in to send at all"}
            return {"address": sender, "envelope": no, "from_header": dict(no)}
        why = _whitelist_rule(login, sender, account.whitelist)
        envelope_ok = why is not None
        envelope: dict[str, Any] = {
            "allowed": envelope_ok,
            "smtp": None if envelope_ok else MISMATCH_REPLY.format(sender, login),
            "rule": (f"ldap-sender-login.cf gives {login} for {sender}: {why}" if envelope_ok
                     else f"ldap-sender-login.cf does not give {login} for {sender}: "
                          f"{_not_allowed(login, account.whitelist)} "
                          f"(reject_authenticated_sender_login_mismatch)"),
        }
        verdict = decide(login, [sender], lambda _login: list(account.whitelist))
        header: dict[str, Any] = {
            "allowed": verdict.accepted,
            "smtp": None if verdict.accepted else f"{verdict.code} {verdict.xcode} "
                                                  f"{verdict.text}",
            "rule": (f"the milter accepts From: {sender}: {why}" if verdict.accepted
                     else f"the milter refuses From: {sender}: "
                          f"{_not_allowed(login, account.whitelist)}"),
        }
        if account.submission_disabled:
            refused: dict[str, Any] = {"allowed": False, "smtp": DISABLED_REPLY.format(login),
                       "rule": "submission is disabled for the account, whatever the sender"}
            envelope, header = refused, dict(refused)
        return {"address": sender, "envelope": envelope, "from_header": header}


def _whitelist_rule(login: str, sender: str, whitelist: Iterable[str]) -> str | None:
    """Why ``login`` may use ``sender`` (the rule of addresses.sender_allowed), or None."""
    items = {item.lower() for item in whitelist}
    domain = sender.rpartition("@")[2]
    if sender == login:
        return "it is the account's own address"
    if WILDCARD in items:
        return "the spoofing whitelist holds * (every sender)"
    if sender in items:
        return f"the spoofing whitelist holds {sender}"
    if domain in items:
        return f"the spoofing whitelist holds the domain {domain}"
    return None


def _not_allowed(login: str, whitelist: Iterable[str]) -> str:
    items = sorted(whitelist)
    held = f"its spoofing whitelist holds {', '.join(items)}" if items else \
        "its spoofing whitelist is empty"
    return f"neither {login}'s own address nor allowed by the whitelist ({held})"

