"""The From-header check of authenticated submission: ``mailgate milter``.

Postfix checks the envelope sender of a submission against the spoofing
whitelist (``smtpd_sender_login_maps``); it cannot check the message's
``From:`` header. This milter does, with the same rule
(:func:`gateway.addresses.sender_allowed`) and the same LDAP data, read as the
``cn=milter`` service identity:

* unauthenticated mail (no ``{auth_authen}`` macro: the port-25 path) passes;
* an authenticated message needs exactly one ``From:`` header holding exactly
  one address; none, several, or an unparsable one is refused with 550 5.6.0;
* that address must be the login's own or one its whitelist allows, else
  550 5.7.1;
* when the directory cannot be read the message is deferred (451 4.3.0): the
  milter fails safe, and the client retries. A bug in the check defers too.

Postfix runs the milter on the submission service with
``milter_default_action=tempfail``, so a milter that is down defers as well.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.errors import InvalidHeaderDefect, NonPrintableDefect
from email.headerregistry import AddressHeader, HeaderRegistry
from typing import Any

from .addresses import normalize_domain, parse_address, sender_allowed
from .directory import Directory, all_of, eq
from .entries import A_MAIL, A_SENDER, OC_ACCOUNT, Layout, decode_whitelist
from .errors import DirectoryUnavailable
from .settings import Settings

log = logging.getLogger(__name__)

DEFAULT_SOCKET = "inet:10031@127.0.0.1"
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_HEADERS = HeaderRegistry()


@dataclass(frozen=True)
class Verdict:
    """What to answer: ``accept``, or a reply for ``reject`` / ``tempfail``."""

    action: str
    code: str = ""
    xcode: str = ""
    text: str = ""

    @property
    def accepted(self) -> bool:
        return self.action == "accept"


ACCEPT = Verdict("accept")


def _reject(xcode: str, text: str) -> Verdict:
    return Verdict("reject", "550", xcode, text)


def _tempfail(text: str) -> Verdict:
    return Verdict("tempfail", "451", "4.3.0", text)


def header_sender(values: Sequence[str]) -> str | Verdict:
    """The one address of the ``From:`` header(s), normalised; else a reject Verdict."""
    if not values:
        return _reject("5.6.0", "the message has no From: header")
    if len(values) > 1:
        return _reject("5.6.0", "the message has several From: headers")
    header = _HEADERS("From", _FOLD.sub("", values[0]))
    if any(isinstance(d, InvalidHeaderDefect | NonPrintableDefect) for d in header.defects):
        return _reject("5.6.0", "the From: header cannot be parsed")
    addresses = header.addresses if isinstance(header, AddressHeader) else ()
    if len(addresses) != 1:
        return _reject("5.6.0", "the From: header must hold exactly one address")
    local, domain = addresses[0].username, addresses[0].domain
    if not local or not domain:
        return _reject("5.6.0", "the From: address is not of the form name@domain")
    try:
        return str(parse_address(f"{local}@{domain}"))
    except ValueError:
        pass
    # Not a dot-atom (a quoted local part, say): it can never be a login, but
    # a whitelisted domain or "*" may still allow it.
    try:
        return f"{local.lower()}@{normalize_domain(domain)}"
    except ValueError:
        return _reject("5.6.0", "the From: address has an invalid domain")


def decide(login: str | None, from_values: Sequence[str],
           whitelist: Callable[[str], list[str] | None]) -> Verdict:
    """The verdict for one message.

    ``login`` is the SASL login (None: not authenticated); ``whitelist(login)``
    returns the account's whitelist items, None if there is no such account,
    and may raise DirectoryUnavailable.
    """
    if not login:
        return ACCEPT
    login = login.lower()
    sender = header_sender(from_values)
    if isinstance(sender, Verdict):
        return sender
    if sender == login:
        return ACCEPT  # one's own address needs no lookup
    try:
        items = whitelist(login)
    except DirectoryUnavailable:
        return _tempfail("sender policy unavailable, try again later")
    if sender_allowed(login, sender, items or []):
        return ACCEPT
    return _reject("5.7.1", f"{login} may not send as {sender} (From: header)")


class SenderPolicy:
    """Reads an account's spoofing whitelist from the directory."""

    def __init__(self, directory: Directory) -> None:
        self.directory = directory
        self.base = Layout(directory.base_dn).domains

    def whitelist(self, login: str) -> list[str] | None:
        found = self.directory.find(
            self.base, all_of(eq("objectClass", OC_ACCOUNT), eq(A_MAIL, login)),
            [A_SENDER], limit=1)
        return decode_whitelist(found[0]) if found else None


def _printable(text: str) -> str:
    # libmilter drops a reply with a single "%"; keep the reply one ASCII line.
    text = "".join(c if " " <= c <= "~" else "?" for c in text)
    return text.replace("%", "%%")


def make_milter_class(policy: SenderPolicy) -> type[Any]:
    """The pymilter class bound to ``policy`` (pymilter imported only here)."""
    import Milter

    class MailgateMilter(Milter.Base):  # type: ignore[misc]
        def __init__(self) -> None:
            self.login: str | None = None
            self.from_values: list[str] = []
            self.decided = False

        def envfrom(self, mailfrom: str, *params: str) -> int:
            self.login = self.getsymval("{auth_authen}") or None
            self.from_values = []
            self.decided = False
            return int(Milter.CONTINUE)

        def header(self, name: str, value: str | bytes) -> int:
            if self.login and name.lower() == "from":
                if isinstance(value, bytes):
                    value = value.decode("utf-8", "replace")
                self.from_values.append(value)
            return int(Milter.CONTINUE)

        def eoh(self) -> int:
            return self._verdict()

        def eom(self) -> int:
            return self._verdict()

        def _verdict(self) -> int:
            if self.decided:
                return int(Milter.CONTINUE)
            self.decided = True
            try:
                verdict = decide(self.login, self.from_values, policy.whitelist)
            except Exception:
                log.exception("milter: check failed; deferring the message")
                verdict = _tempfail("sender check failed, try again later")
            if verdict.accepted:
                return int(Milter.CONTINUE)
            log.info("milter: %s login=%s from=%r: %s %s %s", verdict.action, self.login,
                     self.from_values, verdict.code, verdict.xcode, verdict.text)
            self.setreply(verdict.code, verdict.xcode, _printable(verdict.text))
            return int(Milter.REJECT if verdict.action == "reject" else Milter.TEMPFAIL)

    return MailgateMilter


def serve(settings: Settings, socket: str, timeout: int = 60) -> None:
    """Run the milter until SIGTERM/SIGINT (libmilter's own signal handling)."""
    import Milter

    directory = Directory(settings)
    try:
        milter_class = make_milter_class(SenderPolicy(directory))
        Milter.factory = milter_class
        log.info("milter: listening on %s, directory %s as %s", socket, settings.ldap_url,
                 settings.gateway_dn)
        Milter.runmilter("mailgate", socket, timeout)
    finally:
        directory.close()
