"""mailgate: mail accounts and aliases in LDAP, for Postfix and Dovecot.

:func:`create_app` wires the pieces; importing this package reads no
environment, opens no connection and starts nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Flask

from .directory import Directory
from .mail import MailDirectory
from .settings import Settings
from .tokens import TokenStore


@dataclass
class Services:
    """What request handlers and jobs share inside one process."""

    settings: Settings
    directory: Directory
    mail: MailDirectory
    tokens: TokenStore
    limiter: Any
    sync: Any = None


def create_app(settings: Settings | None = None) -> Flask:
    """Build the WSGI app. ``settings`` must name a reachable LDAP server."""
    from .api import init_api
    from .api.auth import FailureLimiter

    settings = settings or Settings.from_env()
    if settings.ldap_url is None:
        raise ValueError("create_app needs a resolved LDAP URL (mailgate serve starts the "
                         "embedded slapd and passes it)")
    directory = Directory(settings)
    app = Flask("gateway")
    # "//" in a path is a malformed id, not something to redirect.
    app.url_map.merge_slashes = False
    app.config.update(
        MAX_CONTENT_LENGTH=1024 * 1024,
        RESTX_ERROR_404_HELP=False,
        RESTX_MASK_SWAGGER=False,
        JSON_SORT_KEYS=False,
    )
    app.extensions["mailgate"] = Services(
        settings=settings,
        directory=directory,
        mail=MailDirectory(directory, settings.password_rounds),
        tokens=TokenStore(directory, settings.admin_token),
        limiter=FailureLimiter(settings.auth_fail_limit, settings.auth_fail_window),
    )
    init_api(app)
    return app
