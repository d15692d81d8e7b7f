"""A real HTTPS server on loopback serving Basic JSON documents for the sync tests.

TLS with a certificate from a throw-away ``trustme`` CA; per path a route
says what to answer: a body with ETag / Last-Modified (304 on a matching
conditional request), a redirect, a delay, a required header, a status, or a
body without Content-Length (close-delimited, for the streaming size limit).
Every request is recorded (path with query, headers).
"""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import trustme


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    etag: str | None = None
    last_modified: str | None = None
    redirect: str | None = None
    delay: float = 0.0
    require: tuple[str, str] | None = None     # header name, exact value
    content_length: bool = True
    trickle: float = 0.0                       # seconds between single body bytes


@dataclass
class Seen:
    path: str
    headers: dict[str, str]


@dataclass
class DocServer:
    ca: trustme.CA
    ca_file: Path
    routes: dict[str, Route] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    port: int = 0

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def reset(self) -> None:
        self.routes.clear()
        self.seen.clear()

    def serve(self, path: str, document: Any, etag: str | None = "auto",
              **options: Any) -> str:
        """Serve ``document`` (JSON-encoded unless bytes) at ``path``; return its URL."""
        body = document if isinstance(document, bytes) else json.dumps(document).encode()
        if etag == "auto":
            etag = f'"{abs(hash(body)):x}"'
        self.routes[path.split("?")[0]] = Route(body=body, etag=etag, **options)
        return self.url(path)

    def requests_to(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path.split("?")[0] == path]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    docs: DocServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        docs = self.server.docs  # type: ignore[attr-defined]
        docs.seen.append(Seen(self.path, dict(self.headers.items())))
        route = docs.routes.get(self.path.split("?")[0])
        if route is None:
            return self._send(404, b"not found")
        if route.delay:
            time.sleep(route.delay)
        if route.require is not None and self.headers.get(route.require[0]) != route.require[1]:
            return self._send(401, b"unauthorised")
        if route.redirect is not None:
            return self._send(302, b"", {"Location": route.redirect})
        headers = {}
        if route.etag:
            headers["ETag"] = route.etag
            if self.headers.get("If-None-Match") == route.etag:
                return self._send(304, b"", headers)
        if route.last_modified:
            headers["Last-Modified"] = route.last_modified
            if self.headers.get("If-Modified-Since") == route.last_modified:
                return self._send(304, b"", headers)
        if route.trickle:
            self.send_response(route.status)
            self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            for index in range(len(route.body)):    # bounded by the body's length
                try:
                    self.wfile.write(route.body[index:index + 1])
                    self.wfile.flush()
                except OSError:
                    return None                       # the client gave up
                time.sleep(route.trickle)
            return None
        if not route.content_length:
            self.send_response(route.status)
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.wfile.write(route.body)
            return None
        return self._send(route.status, route.body, {**headers,
                                                     "Content-Type": "application/json"})

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if status != 304:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and status != 304:
            with contextlib.suppress(OSError):
                self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    docs: DocServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up early (size limit tests) are expected


def start(tmp: Path) -> tuple[DocServer, _Server]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file = tmp / "test-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(context)
    server = _Server(("127.0.0.1", 0), _Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    docs = DocServer(ca, ca_file, port=server.server_address[1])
    server.docs = docs
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return docs, server
