"""The hot reads: ``GET /mail/account/{id}/`` and ``GET /mail/alias/{id}/``
answered without Flask's request context and Flask-RESTX's dispatch.

One account or alias by id is what control panels and the original service's
clients ask most (a page view, a mailbox check). Profiled under load
(docs/benchmarks.md, B5), Flask and Flask-RESTX held about 45 % of such a
request's Python time, far more than the token check, the LDAP lookup and the
JSON together. This WSGI layer in front of the app answers these two reads
itself when they go the ordinary way, doing what the resources do with the same
pieces: the token check of :mod:`gateway.api.auth`, the lookup of
:class:`gateway.mail.MailDirectory`, the encoders and the error answer of
:mod:`gateway.api.answers`, the security headers, the request id and the
metrics of :mod:`gateway.app`.

Everything else goes to the app unchanged: other methods and paths, a mount
under a prefix, a path that is not plain ASCII, a missing or invalid token
(failures are counted, rate-limited and audited in one place, the app), an id
that is no address, a token without rights on the domain, and any unexpected
exception (the app answers it, or logs it and answers 500). What this layer
answers itself is a found entry (200), an entry not found (404) or an error of
the directory (503), each exactly as the app answers it:
tests/test_hot_reads.py compares the two paths answer by answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from werkzeug.http import HTTP_STATUS_CODES

from .. import logs, metrics
from ..errors import MailgateError
from ..services import Services
from .answers import JSON, encode, error_answer
from .auth import presented_token
from .models import account_json, alias_json

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


@dataclass(frozen=True)
class _Read:
    rule: str                      # the app's URL rule: the metrics' route label
    get: Callable[[str], Any]      # MailDirectory.get_account / get_alias
    to_json: Callable[[Any], dict[str, Any]]


class HotReads:
    """WSGI middleware: the two hot reads here, every other request to ``app``."""

    def __init__(self, services: Services, app: WSGIApp,
                 security_headers: dict[str, str]) -> None:
        self.app = app
        self.services = services
        self._headers = list(security_headers.items())
        mail = services.mail
        self._reads = {
            "/mail/account/": _Read("/mail/account/<path:account_id>/", mail.get_account,
                                    account_json),
            "/mail/alias/": _Read("/mail/alias/<path:alias_id>/", mail.get_alias, alias_json),
        }

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO", "")
        if (environ.get("REQUEST_METHOD") != "GET" or environ.get("SCRIPT_NAME")
                or not path.endswith("/") or not path.isascii()):
            return self.app(environ, start_response)
        prefix = path[:path.find("/", 6) + 1]   # "/mail/account/", "/mail/alias/", ...
        read = self._reads.get(prefix)
        entry_id = path[len(prefix):-1]
        if read is None or not entry_id or "/" in entry_id:
            return self.app(environ, start_response)
        started = time.perf_counter()
        request_id = logs.new_request_id(environ.get("HTTP_X_REQUEST_ID"))
        context = logs.request_id.set(request_id)
        try:
            answer = self._answer(environ, read, entry_id)
        except Exception:  # the app answers it (and logs it if it fails again)
            answer = None
        finally:
            logs.request_id.reset(context)
        if answer is None:
            # The app answers with the same request id (and logs under it).
            environ["HTTP_X_REQUEST_ID"] = request_id
            return self.app(environ, start_response)
        status, body, extra = answer
        environ["mailgate.request_id"] = request_id   # for the access log
        metrics.record_request(read.rule, "GET", status, time.perf_counter() - started)
        start_response(f"{status} {HTTP_STATUS_CODES[status].upper()}", [
            ("Content-Type", JSON), ("Content-Length", str(len(body))),
            *extra.items(), *self._headers, ("X-Request-ID", request_id)])
        return [body]

    def _answer(self, environ: Environ, read: _Read,
                entry_id: str) -> tuple[int, bytes, dict[str, str]] | None:
        """(status, body, headers), or None: the app answers."""
        token = presented_token(environ.get("HTTP_AUTHORIZATION", ""))
        if not token:
            return None
        services = self.services
        try:
            scope = services.tokens.authenticate(token)
            if scope is None:
                return None
            try:
                domain = services.mail.parse_id(entry_id).domain
            except MailgateError:
                return None
            if not scope.may_read(domain):
                return None
            return 200, encode(read.to_json(read.get(entry_id))), {}
        except MailgateError as exc:
            body, status, headers = error_answer(exc)
            return status, encode(body), headers
