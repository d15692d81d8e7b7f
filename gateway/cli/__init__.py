"""The ``mailgate`` console script: the top of the import graph.

    mailgate serve                      the HTTPS API (granian + TLS); in embedded
                                        mode also the managed slapd
    mailgate directory                  only the managed slapd, in the foreground
    mailgate backup|restore FILE        the managed directory to an archive and back
    mailgate token create|list|revoke   scoped API tokens (stored hashed in LDAP)
    mailgate audit [--since] [--domain] who changed what, when, from where
    mailgate render-config postfix|dovecot   mail server configuration
    mailgate milter                     the From-header check for submission
    mailgate sync / export              the Basic JSON sync, and its inverse
    mailgate account ... / alias ...    a terminal client of a running gateway's
    mailgate domain ...                 REST API (gateway/client.py; no LDAP), but
                                        domain recount (counters, in LDAP)
    mailgate explain ADDRESS [--from S] why mail to ADDRESS goes where it goes, and
                                        may it send as S (through the API too)

One module per command group, each with ``add_commands(subparsers)`` that
sets ``func`` on its parsers. ``func(args, settings)`` gets the server
settings read from ``MAILGATE_*``; a parser that sets ``needs_settings=False``
(the API client) gets ``func(args)`` and no server setting is read at all, so
a broken or absent LDAP configuration cannot stop it. Nothing in ``gateway``
imports this package. Configuration errors print the variable's name and exit
with status 2; any other mailgate error prints one line and exits with 1 (2
for a set-up error).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import logs
from ..errors import MailgateError, SetupError
from ..settings import ConfigError, Settings
from ..version import __version__
from . import (
    account,
    alias,
    audit,
    backup,
    config,
    directory,
    domain,
    explain,
    milter,
    serve,
    sync,
    token,
)

COMMAND_GROUPS = (serve, directory, backup, token, audit, config, milter, sync, account, alias,
                  domain, explain)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailgate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"mailgate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not getattr(args, "needs_settings", True):
        # The API client: its own configuration (gateway/client.py), no LDAP.
        return int(args.func(args))
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"mailgate: configuration error: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    try:
        return int(args.func(args, settings))
    except SetupError as exc:
        print(f"mailgate: {exc}", file=sys.stderr)
        return 2
    except MailgateError as exc:
        print(f"mailgate: {exc}", file=sys.stderr)
        return 1
