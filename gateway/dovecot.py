"""Mailbox usage read from Dovecot's doveadm HTTP API.

Dovecot enforces the quota (``deploy/dovecot/mailgate.conf.in``: the quota
plugin, backend ``count`` with virtual sizes) and is the only one that knows
how full a mailbox is. This client asks its doveadm HTTP API
(``POST <url>/doveadm/v1``, ``Authorization: X-Dovecot-API <base64 key>``, a
JSON list of ``[command, parameters, tag]``), for one mailbox two commands in
one request:

* ``mailboxStatus`` (``vsize``, ``messages`` summed over every folder): the
  bytes and messages the quota counts, to the byte (``quota get`` reports
  kilobytes);
* ``quotaGet``: the limit as Dovecot applies it (from the LDAP userdb's
  ``mailgateQuota``), in kilobytes, so ``limit_bytes`` is a multiple of 1024.

A domain's total (:meth:`Dovecot.domain_usage`) asks for the addresses it is
given (the directory's accounts of that domain), :data:`BATCH` mailboxes per
request, under one deadline. Not a doveadm user mask (``*@domain``): Dovecot
would iterate its whole userdb, every account of every domain, to match it.
An address holding ``*`` or ``?`` (both are atext) would itself be read as a
mask, so it is asked with ``quotaGet`` alone and the row naming it is kept
(its bytes then in Dovecot's kilobytes).

Every failure to get an answer (not configured, connection refused, timeout,
a non-2xx status, the key refused, an answer that is not doveadm's) is
:class:`~gateway.errors.DovecotUnavailable` (503, naming Dovecot, never the
directory). A mailbox Dovecot does not know (doveadm's exit code 67) is
:class:`~gateway.errors.NotFound`. The key is never logged nor put in a message.

Imports only the standard library and :mod:`gateway.errors`: the bottom floor,
beside :mod:`gateway.directory`.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .errors import DovecotUnavailable, NotFound

__all__ = ["BATCH", "DomainUsage", "Dovecot", "Usage"]

API_PATH = "/doveadm/v1"
# Mailboxes per request of a domain's total: two commands each.
BATCH = 50
EX_NOUSER = 67          # doveadm's exit code for a user the userdb does not know
_MAX_ANSWER = 8 << 20   # bytes; a batch of 50 mailboxes answers in under 10 kB
_WILDCARDS = frozenset("*?")


@dataclass(frozen=True)
class Usage:
    """One mailbox as Dovecot counts it. ``limit_bytes`` None: no limit."""

    used_bytes: int
    used_messages: int
    limit_bytes: int | None


@dataclass(frozen=True)
class DomainUsage:
    """The sum over the mailboxes of one domain that Dovecot knows.

    ``unknown``: the addresses asked for that Dovecot does not know (not
    counted): accounts its userdb does not see (yet).
    """

    domain: str
    mailboxes: int
    used_bytes: int
    used_messages: int
    unknown: tuple[str, ...] = ()


class Dovecot:
    """A client of one doveadm HTTP API; safe to share between threads (one
    connection per request)."""

    def __init__(self, url: str, api_key: str, timeout: float = 5.0,
                 ca_file: str | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http:// or https:// URL: {url!r}")
        self.url = url
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._path = parts.path.rstrip("/") or API_PATH
        self._auth = "X-Dovecot-API " + base64.b64encode(api_key.encode()).decode("ascii")
        self.timeout = timeout
        self._context = ssl.create_default_context(cafile=ca_file) if self._https else None

    def __repr__(self) -> str:   # never the key
        return f"Dovecot({self.url!r}, timeout={self.timeout})"

    # -- the questions ---------------------------------------------------------------

    def usage(self, address: str) -> Usage:
        """The usage of ``address``'s mailbox; NotFound if Dovecot does not know it."""
        answers = self._ask(_commands(address, "0"), time.monotonic() + self.timeout)
        usage = _usage(address, answers, "0")
        if usage is None:
            raise NotFound(f"Dovecot does not know the mailbox {address}")
        return usage

    def domain_usage(self, domain: str, addresses: Iterable[str],
                     deadline: float = 30.0) -> DomainUsage:
        """The total of ``addresses`` (the domain's accounts), :data:`BATCH` a
        request, all within ``deadline`` seconds (else DovecotUnavailable)."""
        end = time.monotonic() + deadline
        wanted = list(dict.fromkeys(addresses))
        used = messages = mailboxes = 0
        unknown: list[str] = []
        late = DovecotUnavailable(f"Dovecot did not give the usage of the {len(wanted)} "
                                  f"mailboxes of {domain} within {deadline:g} s")
        for start in range(0, len(wanted), BATCH):
            if time.monotonic() >= end:
                raise late
            batch = wanted[start:start + BATCH]
            commands = [c for i, a in enumerate(batch) for c in _commands(a, str(i))]
            try:
                answers = self._ask(commands, end)
            except DovecotUnavailable:
                if time.monotonic() >= end:
                    raise late from None
                raise
            for i, address in enumerate(batch):
                usage = _usage(address, answers, str(i))
                if usage is None:
                    unknown.append(address)
                    continue
                mailboxes += 1
                used += usage.used_bytes
                messages += usage.used_messages
        return DomainUsage(domain, mailboxes, used, messages, tuple(unknown))

    # -- the transport ---------------------------------------------------------------

    def _ask(self, commands: list[list[Any]], end: float) -> dict[str, list[Any]]:
        """POST ``commands``; {tag: [kind, body]} of doveadm's answer."""
        timeout = max(0.1, min(self.timeout, end - time.monotonic()))
        body = json.dumps(commands).encode()
        connection: http.client.HTTPConnection
        if self._context is not None:
            connection = http.client.HTTPSConnection(self._host, self._port, timeout=timeout,
                                                     context=self._context)
        else:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        try:
            connection.request("POST", self._path, body=body, headers={
                "Authorization": self._auth, "Content-Type": "application/json",
                "Accept": "application/json"})
            response = connection.getresponse()
            status = response.status
            raw = response.read(_MAX_ANSWER + 1)
        except TimeoutError:
            raise DovecotUnavailable(f"Dovecot's doveadm API at {self.url} did not answer "
                                     f"within {timeout:.3g} s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise DovecotUnavailable(f"Dovecot's doveadm API at {self.url} cannot be reached "
                                     f"({_why(exc)})") from None
        finally:
            connection.close()
        if status in (401, 403):
            raise DovecotUnavailable(f"Dovecot's doveadm API at {self.url} refused the API "
                                     "key (MAILGATE_DOVECOT_API_KEY)")
        if not 200 <= status < 300:
            raise DovecotUnavailable(f"Dovecot's doveadm API at {self.url} answered HTTP "
                                     f"{status}")
        return _answers(raw, {c[2] for c in commands}, self.url)


def _why(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return type(exc).__name__ + (f": {exc.strerror}" if isinstance(exc, OSError)
                                 and exc.strerror else "")


def _commands(address: str, tag: str) -> list[list[Any]]:
    quota = ["quotaGet", {"user": address}, "q" + tag]
    if _WILDCARDS.intersection(address):
        return [quota]
    return [quota, ["mailboxStatus", {"user": address, "field": ["vsize", "messages"],
                                      "mailboxMask": ["*"], "totalSum": True}, "s" + tag]]


def _answers(raw: bytes, tags: set[str], url: str) -> dict[str, list[Any]]:
    """doveadm's ``[[kind, body, tag], ...]`` by tag; every tag asked must be there."""
    try:
        if len(raw) > _MAX_ANSWER:
            raise ValueError("too long")
        data = json.loads(raw)
        found = {}
        for item in data:
            kind, body, tag = item
            if kind not in ("doveadmResponse", "error") or not isinstance(tag, str):
                raise ValueError(kind)
            found[tag] = [kind, body]
        if not tags <= found.keys():
            raise ValueError("missing tags")
    except (ValueError, TypeError) as exc:
        raise DovecotUnavailable(f"Dovecot's doveadm API at {url} gave an answer that is not "
                                 f"doveadm's ({type(exc).__name__})") from None
    return found


def _usage(address: str, answers: dict[str, list[Any]], tag: str) -> Usage | None:
    """The Usage in the answers to ``_commands(address, tag)``; None for no such user."""
    quota = _result(answers["q" + tag], address)
    if quota is None:
        return None
    try:
        rows = {r["type"]: r for r in quota
                if r.get("username", address) == address}
        if not rows and "s" + tag not in answers:   # a mask that matched no one
            return None
        storage, count = rows["STORAGE"], rows["MESSAGE"]
        limit = None if storage["limit"] in ("-", "0", "") else int(storage["limit"]) * 1024
        status = answers.get("s" + tag)
        if status is None:   # an address that doveadm reads as a mask: quotaGet alone
            return Usage(int(storage["value"]) * 1024, int(count["value"]), limit)
        totals = _result(status, address)
        if totals is None:
            return None
        total = _one(totals)
        return Usage(int(total["vsize"]), int(total["messages"]), limit)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise DovecotUnavailable("Dovecot's doveadm API gave an answer that is not "
                                 f"doveadm's for {address}") from None


def _result(answer: list[Any], address: str) -> Sequence[dict[str, Any]] | None:
    kind, body = answer
    if kind == "doveadmResponse" and isinstance(body, list):
        return body
    code = body.get("exitCode") if isinstance(body, dict) else None
    if code == EX_NOUSER:
        return None
    raise DovecotUnavailable(f"Dovecot could not read the mailbox {address} "
                             f"(doveadm exit code {code})")


def _one(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    if len(rows) != 1:
        raise ValueError("expected one total")
    return rows[0]


def not_configured() -> DovecotUnavailable:
    """The error of a usage question when MAILGATE_DOVECOT_URL is not set."""
    return DovecotUnavailable("Dovecot's doveadm API is not configured "
                              "(MAILGATE_DOVECOT_URL and MAILGATE_DOVECOT_API_KEY)",
                              retry_after=None)
