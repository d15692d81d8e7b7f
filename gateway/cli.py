"""The ``mailgate`` console script.

    mailgate serve                      the HTTPS API (gunicorn + TLS); in embedded
                                        mode also the managed slapd
    mailgate directory                  only the managed slapd, in the foreground
    mailgate token create|list|revoke   scoped API tokens (stored hashed in LDAP)

Other packages of gateway add their commands through ``COMMAND_MODULES``.
Configuration errors print the variable's name and exit with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import logging
import os
import secrets
import signal
import socket
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import MailgateError
from .settings import ConfigError, Settings
from .slapd import ManagedSlapd, SlapdError

log = logging.getLogger("mailgate")

# Modules with ``add_commands(subparsers)``; each sets ``func`` on its parsers.
COMMAND_MODULES: tuple[str, ...] = ("gateway.mailconfig", "gateway.milter", "gateway.sync.cli")


def embedded_slapd(settings: Settings) -> ManagedSlapd:
    return ManagedSlapd(settings.data_dir, settings.ldap_base_dn, url=settings.embedded_ldap_url)


def _listening(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 389), 0.5):
            return True
    except OSError:
        return False


def admin_token(settings: Settings) -> tuple[str, Path | None]:
    """The configured admin token, or the embedded one (made once, mode 0600)."""
    if settings.admin_token:
        return settings.admin_token, None
    path = settings.data_dir / "admin-token"
    if not path.is_file():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(secrets.token_urlsafe(32))
    return path.read_text(encoding="utf-8").strip(), path


@contextlib.contextmanager
def directory_settings(settings: Settings, keep_running: bool = False) \
        -> Iterator[tuple[Settings, ManagedSlapd | None]]:
    """Settings with a reachable LDAP server.

    In embedded mode an already running embedded slapd (one that ``mailgate
    serve`` started) is used; otherwise one is started for the duration.
    """
    if not settings.embedded:
        yield settings, None
        return
    slapd = embedded_slapd(settings)
    slapd.ensure_initialised()
    started = False
    if not _listening(settings.embedded_ldap_url):
        slapd.start()
        started = True
    resolved = settings.replace(ldap_url=settings.embedded_ldap_url,
                                ldap_password=slapd.password("gateway"))
    try:
        yield resolved, slapd if started else None
    finally:
        if started and not keep_running:
            slapd.stop()


# -- serve -------------------------------------------------------------------


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from .tls import ensure_self_signed

    host, _, port = settings.listen.rpartition(":")
    host = host.strip("[]")
    cert, key = settings.tls_cert, settings.tls_key
    if cert is None or key is None:
        cert, key = ensure_self_signed(settings.data_dir / "tls", [host])
    token, token_path = admin_token(settings)
    with directory_settings(settings) as (resolved, _slapd):
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
        _run_gunicorn(resolved.replace(admin_token=token), cert, key)
    return 0


def _run_gunicorn(settings: Settings, cert: Path, key: Path) -> None:
    from gunicorn.app.base import BaseApplication

    from . import create_app
    from .accesslog import AccessLogger

    class Gunicorn(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            options = {
                "bind": settings.listen, "workers": settings.workers,
                "threads": settings.threads, "worker_class": "gthread",
                "certfile": str(cert), "keyfile": str(key),
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
            app = create_app(settings)
            start_background_jobs(app)
            # A list page allocates some 100 000 short-lived containers: with
            # the default thresholds the cyclic GC rescans the heap dozens of
            # times per request. Freeze what start-up made and collect the
            # young generation less often (B6 in docs/benchmarks.md).
            gc.freeze()
            gc.set_threshold(50_000, 20, 20)
            return app

    Gunicorn().run()


def start_background_jobs(app: Any) -> None:
    """Start the JSON sync scheduler in this process when sources are configured."""
    settings = app.extensions["mailgate"].settings
    if not settings.json_urls:
        return
    with contextlib.suppress(ImportError):
        job = importlib.import_module("gateway.sync.job")
        job.start_scheduler(app)


# -- directory -----------------------------------------------------------------


def _directory(args: argparse.Namespace, settings: Settings) -> int:
    """Run only the managed slapd, in the foreground, until SIGTERM or SIGINT."""
    if not settings.embedded:
        print("mailgate: MAILGATE_LDAP_URL is set: the directory is not managed here",
              file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    slapd = embedded_slapd(settings)
    if slapd.ensure_initialised():
        print(f"mailgate: created the directory {settings.ldap_base_dn} in {slapd.root}")
    slapd.start()
    print(f"mailgate: LDAP          {settings.embedded_ldap_url}  base {settings.ldap_base_dn}")
    print(f"mailgate: secrets       {slapd.secrets_dir.resolve()} "
          "(ldap-<service>.password for admin, gateway, postfix, dovecot, milter)")
    sys.stdout.flush()
    try:
        while not stop.is_set() and slapd.pid is not None:
            stop.wait(1.0)
    finally:
        slapd.stop()
    return 0


# -- token ---------------------------------------------------------------------


def _token(args: argparse.Namespace, settings: Settings) -> int:
    from .directory import Directory
    from .tokens import TokenStore

    with directory_settings(settings) as (resolved, _slapd):
        directory = Directory(resolved)
        store = TokenStore(directory, None)
        try:
            if args.action == "create":
                info, token = store.create(args.domain or [], args.read_only, args.description)
                print(json.dumps({"id": info.id, "token": token, "domains": list(info.domains),
                                  "read_only": info.read_only}, indent=2))
                print("Keep the token now: only its hash is stored.", file=sys.stderr)
            elif args.action == "list":
                for item in store.list():
                    print(f"{item.id}  {'read-only ' if item.read_only else 'read-write'}  "
                          f"{','.join(item.domains)}  {item.description}")
            else:
                store.revoke(args.id)
                print(f"revoked {args.id}")
        finally:
            directory.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailgate", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTPS API (and the embedded slapd)")
    serve.set_defaults(func=_serve)
    directory = sub.add_parser("directory", help="run only the embedded slapd (for a "
                               "separate directory service, e.g. in docker-compose.yml)")
    directory.set_defaults(func=_directory)
    token = sub.add_parser("token", help="manage scoped API tokens")
    token_sub = token.add_subparsers(dest="action", required=True)
    create = token_sub.add_parser("create", help="create a token for some domains")
    create.add_argument("--domain", action="append", required=True,
                        help="a domain the token may act on (repeat for more)")
    create.add_argument("--read-only", action="store_true", help="the token may only read")
    create.add_argument("--description", default="", help="a note, e.g. who uses it")
    token_sub.add_parser("list", help="list tokens (ids, domains, never secrets)")
    revoke = token_sub.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("id")
    token.set_defaults(func=_token)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"mailgate: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args, settings))
    except (SlapdError, MailgateError) as exc:
        print(f"mailgate: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
