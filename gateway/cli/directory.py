"""``mailgate directory``: the managed slapd alone, in the foreground.

The production way to run the directory built from ``ldif/`` as its own
service (systemd, a container): the gateway, Postfix and Dovecot all read it,
and stopping the gateway never stops mail.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from ..access import embedded_slapd
from ..settings import Settings


def add_commands(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "directory", help="run only the managed slapd (the directory as its own service, "
                          "e.g. in docker-compose.yml or a systemd unit)")
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
