"""Typed errors raised by every layer of mailgate, and only these.

The API maps each class to its HTTP status in one place (``gateway.api``);
nothing else builds error bodies. An error carries the extra headers its
answer needs (:meth:`MailgateError.headers`), so that handler needs no
``isinstance`` chain. The console script prints any of them as one line.

    MailgateError                    500  (never raised on purpose)
    ├── Invalid                      400  bad input; ``errors`` names each field
    ├── Unauthorized                 401  missing or wrong credentials (WWW-Authenticate)
    ├── Forbidden                    403  authenticated, but no rights here
    ├── NotFound                     404  no such account, alias, token or page
    ├── Conflict                     409  the address is taken (account or alias)
    │   ├── AssertionFailed          409  a conditional write found the entry changed
    │   └── LimitExceeded            409  a domain's limit (``limit``) would be passed
    ├── LockLost                     409  the sync lock was taken over or expired
    ├── UnsupportedMediaType         415  a body that is not JSON or a form
    ├── RateLimited                  429  too many failed authentications (Retry-After)
    ├── DirectoryUnavailable         503  LDAP cannot be reached right now (Retry-After)
    ├── DovecotUnavailable           503  Dovecot's doveadm API: down, refusing, not configured
    └── SetupError                   ---  a command cannot start (the CLI exits 2)
        ├── SlapdError                    the managed slapd cannot be made, started, stopped
        ├── AccessError                   a service's way to the directory is not known
        └── RenderError                   a mail server configuration cannot be rendered
"""

from __future__ import annotations

from collections.abc import Mapping


class MailgateError(Exception):
    """Base of every error mailgate raises on purpose."""

    status = 500

    def __init__(self, message: str, errors: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors: dict[str, str] = dict(errors or {})

    def headers(self) -> dict[str, str]:
        """HTTP headers the answer to this error carries."""
        return {}


class Invalid(MailgateError):
    """Input that breaks a rule; ``errors`` maps each field to why."""

    status = 400


class Unauthorized(MailgateError):
    status = 401

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="mailgate", Basic realm="mailgate"'}


class Forbidden(MailgateError):
    status = 403


class NotFound(MailgateError):
    status = 404


class Conflict(MailgateError):
    status = 409


class AssertionFailed(Conflict):
    """A write's assertion (RFC 4528) no longer matched the entry; nothing changed."""


class LimitExceeded(Conflict):
    """A create or quota change would take a domain past one of its limits
    (``limit``: max_accounts, max_aliases or max_quota); nothing changed."""

    def __init__(self, message: str, limit: str, value: int) -> None:
        super().__init__(message, {limit: f"the domain's limit is {value}"})
        self.limit = limit
        self.value = value


class LockLost(MailgateError):
    """The sync lock was taken over or could not be renewed before it expired."""

    status = 409


class UnsupportedMediaType(MailgateError):
    status = 415


class RateLimited(MailgateError):
    status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class DirectoryUnavailable(MailgateError):
    """LDAP is down or unreachable; the request may be retried.

    ``outage``: why, when the directory itself is down (unreachable, not
    answering, refusing the gateway's credentials) rather than one request
    failing; the connection pool keeps that as its outage state.
    """

    status = 503
    retry_after = 5

    def __init__(self, message: str, errors: Mapping[str, str] | None = None,
                 outage: str | None = None) -> None:
        super().__init__(message, errors)
        self.outage = outage

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class DovecotUnavailable(MailgateError):
    """Dovecot's doveadm HTTP API gave no usable answer (:mod:`gateway.dovecot`):
    not configured, unreachable, too slow, refusing the key, or an answer
    that is not doveadm's. The message names Dovecot, never the directory.
    ``retry_after`` None: retrying will not help (not configured)."""

    status = 503

    def __init__(self, message: str, retry_after: int | None = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}


class SetupError(MailgateError):
    """A command cannot start; the message says what to change."""


class SlapdError(SetupError):
    """The managed slapd could not be prepared, started or stopped."""


class AccessError(SetupError):
    """How a service reaches the directory (URL, identity, password) is not known."""


class RenderError(SetupError):
    """A Postfix or Dovecot template or option cannot be rendered; the message says which."""
