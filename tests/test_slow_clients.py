"""Slow clients do not stop the API: 50 connections that send nothing, or half a
request, while other clients are served within a bound (docs/reliability.md)."""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.test_serve import Served

HELD = 50
PROBES = 20
BOUND = 2.0   # seconds a probe may take while the slow connections are held


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    # Few workers and threads: with a thread per connection, 50 stalled
    # connections would take every slot many times over.
    server = Served(tmp_path / "var", MAILGATE_WORKERS="2", MAILGATE_THREADS="2")
    try:
        server.start_ready(30)
        yield server
    finally:
        server.stop()


def test_fifty_slow_connections_do_not_starve_other_clients(served: Served) -> None:
    context = ssl.create_default_context(cafile=str(served.data / "tls" / "cert.pem"))
    held: list[socket.socket] = []
    try:
        for number in range(HELD):
            raw = socket.create_connection(("127.0.0.1", served.port), timeout=5)
            if number % 2:
                # TLS done, then half a request line, and nothing more.
                tls = context.wrap_socket(raw, server_hostname="127.0.0.1")
                tls.sendall(b"GET /mail/account/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthori")
                held.append(tls)
            else:
                held.append(raw)   # connected, nothing sent, not even a TLS hello
        took = []
        for _ in range(PROBES):
            started = time.monotonic()
            answer = requests.get(f"{served.url}/healthz", timeout=10,
                                  verify=str(served.data / "tls" / "cert.pem"))
            took.append(time.monotonic() - started)
            assert answer.status_code == 200
        listed = served.get("/mail/account/")
        assert listed.status_code == 200
        print(f"\n{HELD} slow connections held: {PROBES} probes, slowest "
              f"{max(took) * 1000:.0f} ms, median {sorted(took)[PROBES // 2] * 1000:.0f} ms")
        assert max(took) < BOUND, took
    finally:
        for connection in held:
            with contextlib.suppress(OSError):
                connection.close()
