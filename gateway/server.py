"""The HTTPS server of ``mailgate serve``: granian (Rust, its own TLS) with the WSGI app.

granian parses HTTP and terminates TLS in Rust threads and hands each request
to a small pool of Python threads per worker process; on this 2-core machine it
served ``GET /mail/account/{id}/`` and ``/healthz`` well ahead of gunicorn's
gthread workers, and kept answering while 50 connections stalled mid-request
(``bench/servers.py``, docs/benchmarks.md).

Each worker process builds its own app (own LDAP pool), starts the JSON sync
scheduler (the LDAP lock keeps it to one run per deployment), tunes the
cyclic GC and writes the access log of :mod:`gateway.accesslog`. SIGTERM or
SIGINT stop the workers gracefully (granian's main process), then
``mailgate serve`` stops the embedded slapd.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from functools import partial
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from granian.constants import HTTPModes, Interfaces, SSLProtocols
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.server import Server

from . import logs
from .accesslog import AccessLog
from .app import create_app
from .settings import Settings
from .sync.job import start_scheduler

# How long a client may take to send a request's headers (ms): a stalled
# connection costs a Rust task, not a Python thread, but it is not kept forever.
HEADER_READ_TIMEOUT_MS = 30_000
# How long workers get to finish requests in flight at SIGTERM (s).
GRACEFUL_TIMEOUT = 20


def load_app(settings: Settings) -> Any:
    """The WSGI callable of one worker process (granian calls this in the worker)."""
    # granian set up logging for its own lines in this process: the gateway's
    # go where and how MAILGATE_LOG_FORMAT says, as in the main process.
    logs.configure(settings.log_level, settings.log_format)
    app = create_app(settings)
    if settings.json_urls:
        start_scheduler(app)
    # A list page allocates some 100 000 short-lived containers: with the
    # default thresholds the cyclic GC rescans the heap dozens of times per
    # request. Freeze what start-up made and collect the young generation
    # less often (B6 in docs/benchmarks.md).
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    return AccessLog(app.wsgi_app, sys.stdout, settings.log_format)


def pkcs8_key(key: Path, directory: Path) -> Path:
    """``key`` itself when it is PEM PKCS#8 (what granian reads), else a PKCS#8
    copy in ``directory`` (mode 0600)."""
    data = key.read_bytes()
    if b"-----BEGIN PRIVATE KEY-----" in data:
        return key
    private = serialization.load_pem_private_key(data, password=None)
    directory.mkdir(parents=True, exist_ok=True)
    converted = directory / "key.pkcs8.pem"
    fd = os.open(converted, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return converted


def serve(settings: Settings, cert: Path, key: Path, backpressure: int | None = None,
          **options: Any) -> None:
    """Serve the API over HTTPS until SIGTERM or SIGINT.

    ``backpressure``: connections a worker takes in at once (granian counts
    connections, idle keep-alive ones too, not requests in flight); by default
    granian's, the socket backlog (1024) over the workers. ``options``: more
    arguments of ``granian.server.Server`` (bench/servers.py tries some).
    """
    host, _, port = settings.listen.rpartition(":")
    level = settings.log_level.lower()
    server = Server(
        "mailgate", address=host.strip("[]"), port=int(port),
        interface=Interfaces.WSGI, http=HTTPModes.http1,
        workers=settings.workers, blocking_threads=settings.threads,
        backpressure=backpressure,
        http1_settings=HTTP1Settings(header_read_timeout=HEADER_READ_TIMEOUT_MS),
        ssl_cert=cert, ssl_key=pkcs8_key(key, settings.data_dir / "tls"),
        ssl_protocol_min=SSLProtocols.tls12,
        log_level=LogLevels(level if level != "warning" else "warn"),
        log_access=False,  # AccessLog writes the lines (no secrets, gateway.accesslog)
        # granian's own lines go to the root handler, in the gateway's format.
        log_dictconfig={"version": 1, "disable_existing_loggers": False, "loggers": {
            name: {"handlers": [], "propagate": True} for name in logs.SERVER_LOGGERS}},
        workers_kill_timeout=GRACEFUL_TIMEOUT,
        **options,
    )
    logging.getLogger("granian").setLevel(settings.log_level)
    logs.configure(settings.log_level, settings.log_format)  # Server() replaced it
    server.serve(target_loader=partial(load_app, settings), wrap_loader=False)
