"""``mailgate backup`` and ``mailgate restore``: the managed directory to a file and back.

The archive holds the configuration (``slapcat -n0``), every entry with its
operational attributes (``slapcat -n1``) and the service passwords; it is
written mode 0600. A backup runs while slapd serves; a restore needs the
managed slapd stopped. For a directory that mailgate does not manage, use
slapcat and slapadd directly (docs/deployment.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..access import embedded_slapd
from ..errors import SetupError
from ..settings import Settings


def add_commands(subparsers: Any) -> None:
    backup = subparsers.add_parser(
        "backup", help="write the managed directory (config, data, secrets) to an archive")
    backup.add_argument("archive", type=Path, help="the .tar.gz file to write (mode 0600)")
    backup.set_defaults(func=run_backup)
    restore = subparsers.add_parser(
        "restore", help="replace the managed directory with an archive (slapd stopped)")
    restore.add_argument("archive", type=Path, help="a file written by mailgate backup")
    restore.set_defaults(func=run_restore)


def _managed(settings: Settings) -> None:
    if not settings.embedded:
        raise SetupError("MAILGATE_LDAP_URL is set: the directory is not managed here; back "
                         "it up with slapcat on its own host (docs/deployment.md)")


def run_backup(args: argparse.Namespace, settings: Settings) -> int:
    _managed(settings)
    manifest = embedded_slapd(settings).backup(args.archive)
    print(json.dumps({"archive": str(args.archive), **manifest}))
    return 0


def run_restore(args: argparse.Namespace, settings: Settings) -> int:
    _managed(settings)
    manifest = embedded_slapd(settings).restore(args.archive)
    print(json.dumps({"restored": str(args.archive), **manifest}))
    return 0
