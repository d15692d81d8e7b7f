"""What one process shares between requests and jobs, and the one accessor for it.

Like Flask's ``get_db()``: :func:`gateway.app.create_app` builds a :class:`Services`
once per app, and every request handler or job reaches it through
:func:`current`, never through ``app.extensions`` by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from flask import Flask, current_app

from .audit import AuditLog, Budget, Tally
from .directory import Directory
from .dovecot import Dovecot, not_configured
from .limiter import FailureLimiter
from .mail import MailDirectory
from .settings import Settings
from .tokens import TokenStore

KEY = "mailgate"


@dataclass
class Services:
    settings: Settings
    directory: Directory
    audit: AuditLog
    mail: MailDirectory
    tokens: TokenStore
    limiter: FailureLimiter
    # What failed authentications and 403s may write to the trail (gateway/api/auth.py).
    auth_budget: Budget
    auth_tally: Tally
    denials: Tally
    # Dovecot's doveadm HTTP API (mailbox usage); None: MAILGATE_DOVECOT_URL unset
    # (gateway.dovecot.not_configured() is the answer then).
    dovecot: Dovecot | None = None
    sync: Any = None   # the process's SyncRunner, made on first use (gateway.sync.job)

    @classmethod
    def build(cls, settings: Settings) -> Services:
        directory = Directory(settings)
        audit = AuditLog(directory, settings.audit_retention_days)
        interval = settings.audit_interval
        return cls(settings=settings, directory=directory, audit=audit,
                   mail=MailDirectory(directory, settings.password_rounds, audit),
                   tokens=TokenStore(directory, settings.admin_token),
                   limiter=FailureLimiter(directory, settings.auth_fail_limit,
                                          settings.auth_fail_window,
                                          settings.auth_fail_prefix_v4,
                                          settings.auth_fail_prefix_v6),
                   auth_budget=Budget(audit, "auth", settings.auth_fail_budget, interval),
                   auth_tally=Tally(audit, "auth.failures", interval, counted="failures",
                                    grouped_by="prefix"),
                   denials=Tally(audit, "authz.denied", interval, counted="denials",
                                 grouped_by="path"),
                   dovecot=_dovecot(settings))

    def usage_reader(self) -> Dovecot:
        """The Dovecot client; DovecotUnavailable (503) when it is not configured."""
        if self.dovecot is None:
            raise not_configured()
        return self.dovecot

    def install(self, app: Flask) -> None:
        app.extensions[KEY] = self


def _dovecot(settings: Settings) -> Dovecot | None:
    if settings.dovecot_url is None or settings.dovecot_api_key is None:
        return None
    return Dovecot(settings.dovecot_url, settings.dovecot_api_key, settings.dovecot_timeout)


def current(app: Flask | None = None) -> Services:
    """The services of ``app``, or of the app handling this request."""
    return cast(Services, (app or current_app).extensions[KEY])
