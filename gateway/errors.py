"""Typed errors raised by the domain and directory layers.

The API maps each class to one HTTP status in one place (``gateway.api``);
nothing else builds error bodies.

    MailgateError                    500 (never raised on purpose)
    ├── Invalid                      400  bad input; ``errors`` names each field
    ├── Unauthorized                 401  missing or wrong credentials
    ├── Forbidden                    403  authenticated, but no rights here
    ├── NotFound                     404  no such account, alias or token
    ├── Conflict                     409  the address is taken (account or alias)
    ├── RateLimited                  429  too many failed authentications
    └── DirectoryUnavailable         503  LDAP cannot be reached right now
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


class Invalid(MailgateError):
    """Input that breaks a rule; ``errors`` maps each field to why."""

    status = 400


class Unauthorized(MailgateError):
    status = 401


class Forbidden(MailgateError):
    status = 403


class NotFound(MailgateError):
    status = 404


class Conflict(MailgateError):
    status = 409


class RateLimited(MailgateError):
    status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DirectoryUnavailable(MailgateError):
    """LDAP is down or unreachable; the request may be retried."""

    status = 503
    retry_after = 5
