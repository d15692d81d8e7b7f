"""``mailgate serve``: the HTTPS API under granian, and in embedded mode the managed slapd.

Prints where everything is (API, Swagger UI, admin token, TLS, LDAP) once the
directory answers, then hands over to :mod:`gateway.server`: TLS with the
configured or a self-signed pair, worker processes with a few Python threads
each, the access log of :mod:`gateway.accesslog`, and the JSON sync scheduler
in each worker (one run at a time per deployment through the LDAP lock,
:mod:`gateway.sync.job`).
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from .. import metrics
from ..access import admin_token, embedded_slapd, reachable
from ..client import LOCAL_URL_FILE
from ..errors import SetupError
from ..server import serve
from ..settings import Settings
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
    # Every worker counts in files here; a scrape adds them up.
    metrics.enable_multiprocess(settings.data_dir / "metrics")
    stop_supervising = threading.Event()
    supervisor: threading.Thread | None = None
    with reachable(settings) as (resolved, slapd):
        if slapd is not None:
            # A managed slapd that dies is started again. The supervisor
            # thread lives as long as this process: slapd's parent-death
            # signal follows the thread that started it.
            supervisor = slapd.supervise(stop_supervising)
        shown = f"https://{'[' + host + ']' if ':' in host else host}:{port}"
        write_local_url(settings.data_dir, host, port)
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
        try:
            serve(resolved.replace(admin_token=token), cert, key)
        finally:
            stop_supervising.set()
            if supervisor is not None:
                # A restart under way finishes before the slapd is stopped
                # (granian stops in well under a second).
                supervisor.join(timeout=60)
    return 0


def write_local_url(data_dir: Path, host: str, port: str) -> None:
    """``<data dir>/api-url``: where a client on this machine reaches this gateway
    (the terminal client uses it when nothing else names a gateway: gateway/client.py)."""
    local = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104
    url = f"https://{'[' + local + ']' if ':' in local else local}:{port}\n"
    path = data_dir / LOCAL_URL_FILE
    try:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(url, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        print(f"mailgate: warning: cannot write {path}: {exc.strerror}", file=sys.stderr)


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
