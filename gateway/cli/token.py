"""``mailgate token create|list|revoke``: scoped API tokens, stored hashed in LDAP."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..access import reachable
from ..audit import AuditLog
from ..directory import Directory
from ..settings import Settings
from ..tokens import TokenStore


def add_commands(subparsers: Any) -> None:
    token = subparsers.add_parser("token", help="manage scoped API tokens")
    token_sub = token.add_subparsers(dest="action", required=True)
    create = token_sub.add_parser("create", help="create a token for some domains")
    create.add_argument("--domain", action="append", required=True,
                        help="a domain the token may act on (repeat for more)")
    create.add_argument("--read-only", action="store_true", help="the token may only read")
    create.add_argument("--description", default="", help="a note, e.g. who uses it")
    listing = token_sub.add_parser("list", help="list tokens (ids, domains, never secrets)")
    listing.add_argument("--json", action="store_true",
                         help="a JSON array of {id, domains, read_only, description}")
    revoke = token_sub.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("id")
    token.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    with reachable(settings) as (resolved, _slapd):
        directory = Directory(resolved)
        store = TokenStore(directory, None)
        audit = AuditLog(directory, settings.audit_retention_days)
        try:
            if args.action == "create":
                info, token = store.create(args.domain or [], args.read_only, args.description)
                audit.record("token.create", f"token {info.id}",
                             {"domains": list(info.domains), "read_only": info.read_only})
                print(json.dumps({"id": info.id, "token": token, "domains": list(info.domains),
                                  "read_only": info.read_only}, indent=2))
                print("Keep the token now: only its hash is stored.", file=sys.stderr)
            elif args.action == "list" and args.json:
                print(json.dumps([{"id": item.id, "domains": list(item.domains),
                                   "read_only": item.read_only,
                                   "description": item.description}
                                  for item in store.list()], indent=2, ensure_ascii=False))
            elif args.action == "list":
                for item in store.list():
                    print(f"{item.id}  {'read-only ' if item.read_only else 'read-write'}  "
                          f"{','.join(item.domains)}  {item.description}")
            else:
                store.revoke(args.id)
                audit.record("token.revoke", f"token {args.id}")
                print(f"revoked {args.id}")
        finally:
            directory.close()
    return 0
