"""``mailgate directory``: the managed slapd alone, in the foreground.

The production way to run the directory built from ``ldif/`` as its own
service (systemd, a container): the gateway, Postfix and Dovecot all read it,
and stopping the gateway never stops mail.

``--replica-of URL`` runs a read-only consumer of that provider instead (a
mail host's local replica, ldif/replica.ldif): created empty, filled and kept
current by syncrepl, writes referred to the provider. Postfix and Dovecot on
that host then read it (``render-config postfix|dovecot --ldap-url``).

A slapd that dies (a crash, the OOM killer, SIGKILL) is started again by this
process, with the backoff ``serve`` uses for the embedded one
(:meth:`ManagedSlapd.supervise`: 1 s doubling to 30 s while it fails to
start), each death and each recovery logged once. Restarting here rather
than exiting keeps the directory's recovery the same under systemd, compose
and a terminal, and keeps it seconds long: slapd's state is on disk, so a
restart is all a supervisor could do anyway.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from ..access import embedded_slapd
from ..errors import RenderError, SlapdError
from ..replication import ReplicaSlapd, syncrepl_values
from ..settings import Settings


def add_commands(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "directory", help="run only the managed slapd (the directory as its own service, "
                          "e.g. in docker-compose.yml or a systemd unit)")
    parser.add_argument("--replica-of", metavar="URL",
                        help="run a read-only replica (syncrepl consumer) of this provider")
    parser.add_argument("--replicator-password-file", type=Path,
                        help="with --replica-of: the password of cn=replicator,ou=services,"
                             "<base> (the provider's <data dir>/secrets/ldap-replicator.password)")
    parser.add_argument("--rid", type=int, default=1, help="syncrepl replica ID (default 1)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the managed slapd until SIGTERM or SIGINT."""
    if not settings.embedded:
        print("mailgate: MAILGATE_LDAP_URL is set: the directory is not managed here",
              file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    slapd = embedded_slapd(settings)
    if getattr(args, "replica_of", None):
        try:
            slapd = _replica(args, settings)
        except (OSError, RenderError, SlapdError) as exc:
            print(f"mailgate: {exc}", file=sys.stderr)
            return 2
    if slapd.ensure_initialised():
        print(f"mailgate: created the directory {settings.ldap_base_dn} in {slapd.root}")
    slapd.start()
    print(f"mailgate: LDAP          {settings.embedded_ldap_url}  base {settings.ldap_base_dn}")
    print(f"mailgate: secrets       {slapd.secrets_dir.resolve()} "
          "(ldap-<service>.password for admin, gateway, postfix, dovecot, milter)")
    sys.stdout.flush()
    # The supervisor starts the replacement slapd from its own thread, which
    # lives until ``stop``: slapd's parent-death signal follows that thread.
    supervisor = slapd.supervise(stop)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        # A restart under way finishes before the slapd is stopped.
        supervisor.join(timeout=60)
        slapd.stop()
    return 0


def _replica(args: argparse.Namespace, settings: Settings) -> ReplicaSlapd:
    """The managed consumer of ``--replica-of``, its replicator password in place."""
    replica = ReplicaSlapd(settings.data_dir, settings.ldap_base_dn,
                           url=settings.embedded_ldap_url, provider_url=args.replica_of,
                           rid=args.rid)
    if args.replicator_password_file is not None:
        password = args.replicator_password_file.read_text(encoding="utf-8").strip()
        syncrepl_values(settings.ldap_base_dn, args.replica_of, password, rid=args.rid)
        replica.secrets_dir.mkdir(parents=True, exist_ok=True)
        replica.secrets_dir.chmod(0o700)
        path = replica.password_file("replicator")
        path.write_text(password, encoding="utf-8")
        path.chmod(0o600)
    elif not replica.password_file("replicator").is_file():
        raise RenderError("--replica-of needs --replicator-password-file the first time")
    if replica.initialised and not (replica.root / "rendered" / "config-change-0.ldif").is_file():
        raise SlapdError(f"{replica.root} holds a provider's directory, not a replica: use "
                         "another MAILGATE_DATA_DIR")
    return replica
