"""The WSGI app: :func:`create_app` wires the pieces (Flask's application factory).

Importing this module reads no environment, opens no connection and starts
nothing.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from flask import Flask, current_app, g, request

from . import logs, metrics
from .api import init_api
from .api.hot import HotReads
from .errors import DirectoryUnavailable, DovecotUnavailable
from .proxies import TrustedProxies
from .services import Services, current
from .settings import Settings


class _Flask(Flask):
    def log_exception(self, exc_info: Any) -> None:
        """No traceback for an unavailable directory or Dovecot: it is an expected
        answer (503). The pool logs each directory outage once; the error handler
        logs each Dovecot failure as one warning line (gateway.api.answers)."""
        if isinstance(exc_info[1], (DirectoryUnavailable, DovecotUnavailable)):
            return
        super().log_exception(exc_info)


def create_app(settings: Settings | None = None) -> Flask:
    """Build the WSGI app. ``settings`` must name a reachable LDAP server."""
    settings = settings or Settings.from_env()
    if settings.ldap_url is None:
        raise ValueError("create_app needs a resolved LDAP URL (mailgate serve starts the "
                         "embedded slapd and passes it)")
    app = _Flask("gateway")
    # "//" in a path is a malformed id, not something to redirect.
    app.url_map.merge_slashes = False
    app.config.update(
        MAX_CONTENT_LENGTH=1024 * 1024,
        RESTX_ERROR_404_HELP=False,
        RESTX_MASK_SWAGGER=False,
        JSON_SORT_KEYS=False,
    )
    Services.build(settings).install(app)
    init_api(app)
    app.before_request(_begin)
    app.after_request(_security_headers)
    app.after_request(_count)
    app.teardown_request(_end)
    # One account or alias by id: answered in front of Flask (gateway.api.hot).
    app.wsgi_app = HotReads(current(app), app.wsgi_app,  # type: ignore[method-assign]
                            SECURITY_HEADERS)
    if settings.trusted_proxies:
        # Outermost: the client's address is known before either path (and the
        # access log, outside the app) sees the request.
        app.wsgi_app = TrustedProxies(app.wsgi_app,  # type: ignore[method-assign]
                                      settings.trusted_proxies)
    return app


def _begin() -> None:
    g.started = time.perf_counter()
    g.request_id = logs.new_request_id(request.headers.get("X-Request-ID"))
    g.request_id_token = logs.request_id.set(g.request_id)
    # For the access log line, written outside the app.
    request.environ["mailgate.request_id"] = g.request_id


def _count(response: Any) -> Any:
    """The request in the metrics, and its id in the answer."""
    route = request.url_rule.rule if request.url_rule is not None else "unmatched"
    started = g.get("started")
    metrics.record_request(route, request.method, response.status_code,
                           None if started is None else time.perf_counter() - started)
    if "request_id" in g:
        response.headers["X-Request-ID"] = g.request_id
    return response


def _end(_exc: BaseException | None) -> None:
    token = g.pop("request_id_token", None)
    if token is not None:
        logs.request_id.reset(token)


# On every answer (account data, errors, docs alike): HTTPS only from now on,
# no MIME sniffing, and nothing kept in any cache (pages hold password hashes).
SECURITY_HEADERS = {
    "Strict-Transport-Security": "max-age=31536000",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def _security_headers(response: Any) -> Any:
    response.headers.update(SECURITY_HEADERS)
    if response.status_code == 405 and "Allow" not in response.headers:
        # The API's error handler answers 405 without werkzeug's Allow header.
        with contextlib.suppress(Exception):
            adapter = current_app.url_map.bind_to_environ(request.environ)
            allowed = adapter.allowed_methods(request.path)
            if allowed:
                response.headers["Allow"] = ", ".join(sorted(allowed))
    return response
