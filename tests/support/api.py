"""Clients of the gateway app: the Flask test client, and the app served over HTTPS."""

from __future__ import annotations

import contextlib
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from .constants import ADMIN_TOKEN


class Client:
    """Flask test client that sends the admin token unless told otherwise."""

    def __init__(self, app: object, token: str | None = ADMIN_TOKEN) -> None:
        self.raw = app.test_client()  # type: ignore[attr-defined]
        self.token = token

    def with_token(self, token: str | None) -> Client:
        other = Client.__new__(Client)
        other.raw, other.token = self.raw, token
        return other

    def __getattr__(self, method: str) -> object:
        call = getattr(self.raw, method)

        def request(path: str, **kwargs: object) -> object:
            headers = dict(kwargs.pop("headers", {}) or {})  # type: ignore[call-overload]
            if self.token is not None:
                headers.setdefault("Authorization", f"Bearer {self.token}")
            return call(path, headers=headers, **kwargs)

        return request


class LiveGateway:
    """The gateway app served over real HTTPS on a loopback port, in a thread.

    ``live_gateway("POST", "/mail/account/", json={...})`` -> requests.Response.
    """

    def __init__(self, app: object, url: str, ca: Path, token: str) -> None:
        self.app = app
        self.url = url
        self.ca = ca
        self.admin_token = token
        self.session = requests.Session()
        self.session.verify = str(ca)
        self.session.headers["Authorization"] = f"Bearer {token}"

    def __call__(self, method: str, path: str, **kwargs: object) -> object:
        # verify per request: requests lets REQUESTS_CA_BUNDLE override session.verify
        kwargs.setdefault("verify", str(self.ca))
        return self.session.request(method, self.url + path, timeout=30, **kwargs)  # type: ignore[arg-type]


@contextlib.contextmanager
def serving(app: Any, tls_dir: Path, token: str = ADMIN_TOKEN) -> Iterator[LiveGateway]:
    """Serve ``app`` over HTTPS (self-signed certificate in ``tls_dir``) for the block."""
    from werkzeug.serving import make_server

    from gateway.tls import ensure_self_signed

    cert, key = ensure_self_signed(tls_dir, ["127.0.0.1"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = make_server("127.0.0.1", 0, app, threaded=True, ssl_context=context)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield LiveGateway(app, f"https://127.0.0.1:{server.server_port}", cert, token)
    finally:
        server.shutdown()
        thread.join(10)
