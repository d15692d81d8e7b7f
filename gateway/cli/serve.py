"""``mailgate serve``: the HTTPS API under gunicorn, and in embedded mode the managed slapd.

Prints where everything is (API, Swagger UI, admin token, TLS, LDAP) once the
directory answers, then hands over to gunicorn: TLS with the configured or a
self-signed pair, threaded workers, the access log of :mod:`gateway.accesslog`,
and the JSON sync scheduler in each worker (one run at a time per deployment
through the LDAP lock, :mod:`gateway.sync.job`).
"""

from __future__ import annotations

import argparse
import gc
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication

from .. import metrics
from ..access import admin_token, embedded_slapd, reachable
from ..accesslog import AccessLogger
from ..app import create_app
from ..errors import SetupError
from ..settings import Settings
from ..sync.job import start_scheduler
from ..tls import ensure_self_signed


def add_commands(subparsers: Any) -> None:
    parser = subparsers.add_parser("serve", help="run the HTTPS API (and the embedded slapd)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    host, _, port = settings.listen.rpartition(":")
    host = host.strip("[]")
    cert, key = settings.tls_cert, settings.tls_key
    if cert is None or key is None:
        cert, key = ensure_self_signed(settings.data_dir / "tls", [host])
    token, token_path = admin_token(settings)
    _check_free(settings.listen)
    stop_supervising = threading.Event()
    with reachable(settings) as (resolved, slapd):
        if slapd is not None:
            # A managed slapd that dies is started again. The supervisor
            # thread lives as long as this process: slapd's parent-death
            # signal follows the thread that started it.
            slapd.supervise(stop_supervising)
        shown = f"https://{'[' + host + ']' if ':' in host else host}:{port}"
        print(f"mailgate: API           {shown}/mail/account/  {shown}/mail/alias/")
        print(f"mailgate: Swagger UI    {shown}/docs/   (OpenAPI: {shown}/swagger.json)")
        if token_path is not None:
            print(f"mailgate: admin token   in {token_path.resolve()} "
                  f"(curl -k -u :$(cat {token_path}) {shown}/mail/account/)")
        if settings.tls_cert is None:
            print(f"mailgate: TLS           self-signed certificate {cert.resolve()}")
        if settings.embedded:
            embedded = embedded_slapd(settings)
            print(f"mailgate: LDAP          {settings.embedded_ldap_url}  base "
                  f"{settings.ldap_base_dn}")
            print(f"mailgate: LDAP tools    bind as {embedded.admin_dn} with the password in "
                  f"{embedded.password_file('admin').resolve()}")
            print(f"mailgate:               e.g. ldapsearch -x -H {settings.embedded_ldap_url} "
                  f"-D {embedded.admin_dn} -y {embedded.password_file('admin')} "
                  f"-b ou=domains,{settings.ldap_base_dn}")
        sys.stdout.flush()
        # Every worker counts in files here; a scrape adds them up.
        metrics.enable_multiprocess(settings.data_dir / "metrics")
        try:
            _Gunicorn(resolved.replace(admin_token=token), cert, key).run()
        finally:
            stop_supervising.set()
    return 0


def _check_free(listen: str) -> None:
    """SetupError naming MAILGATE_LISTEN when its address cannot be bound."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, int(port)))
        except OSError as exc:
            raise SetupError(f"MAILGATE_LISTEN: cannot listen on {listen}: {exc.strerror} "
                             "(another process holds the port? choose another with "
                             "MAILGATE_LISTEN=host:port)") from None


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings, cert: Path, key: Path) -> None:
        self.settings = settings
        self.cert, self.key = cert, key
        super().__init__()

    def load_config(self) -> None:
        settings = self.settings
        options = {
            "bind": settings.listen, "workers": settings.workers,
            "threads": settings.threads, "worker_class": "gthread",
            "certfile": str(self.cert), "keyfile": str(self.key),
            "accesslog": "-", "errorlog": "-", "loglevel": settings.log_level.lower(),
            "timeout": 120, "graceful_timeout": 20, "keepalive": 30,
            "proc_name": "mailgate", "preload_app": False,
            "logger_class": AccessLogger,
        }
        # gunicorn 27 opens a control socket in $HOME by default; mailgate
        # has no use for it, and two instances on one machine would share it.
        if "control_socket_disable" in self.cfg.settings:
            options["control_socket_disable"] = True
        for name, value in options.items():
            self.cfg.set(name, value)

    def load(self) -> Any:
        app = create_app(self.settings)
        if self.settings.json_urls:
            start_scheduler(app)
        # A list page allocates some 100 000 short-lived containers: with
        # the default thresholds the cyclic GC rescans the heap dozens of
        # times per request. Freeze what start-up made and collect the
        # young generation less often (B6 in docs/benchmarks.md).
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)
        return app
