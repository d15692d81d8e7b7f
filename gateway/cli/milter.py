"""``mailgate milter``: the From-header check of authenticated submission."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..access import as_settings, service_access
from ..errors import AccessError
from ..milter import DEFAULT_SOCKET, serve
from ..settings import Settings


def add_commands(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "milter", help="check the From: header of authenticated submissions (Postfix milter)",
        description="Check the From: header of authenticated submissions against the "
                    "spoofing whitelist, as a Postfix milter.")
    parser.add_argument("--socket", default=DEFAULT_SOCKET,
                        help="libmilter socket: inet:PORT@HOST, inet6:PORT@HOST or unix:/path "
                             "(default: %(default)s)")
    parser.add_argument("--timeout", type=int, default=60,
                        help="seconds to wait for Postfix on a connection (default: %(default)s)")
    parser.add_argument("--ldap-url", help="default: MAILGATE_LDAP_URL, else the embedded URL")
    parser.add_argument("--base-dn", help="default: MAILGATE_LDAP_BASE_DN")
    parser.add_argument("--bind-dn", help="default: cn=milter,ou=services,<base DN>")
    parser.add_argument("--password-file", type=Path,
                        help="file holding the bind password (default in embedded mode: "
                             "<data dir>/secrets/ldap-milter.password)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        access = service_access(settings, "milter", url=args.ldap_url, base_dn=args.base_dn,
                                bind_dn=args.bind_dn, password_file=args.password_file)
    except AccessError as exc:
        print(f"mailgate: {exc}", file=sys.stderr)
        return 2
    serve(as_settings(settings, access), args.socket, args.timeout)
    return 0
