"""``mailgate audit``: the audit trail, read from the directory (:mod:`gateway.audit`)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any

from ..access import reachable
from ..addresses import normalize_domain
from ..audit import AuditLog
from ..directory import Directory
from ..settings import Settings


def add_commands(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "audit", help="show who changed what, when and from where",
        description="The audit trail kept in the directory, oldest first.")
    parser.add_argument("--since", default=None,
                        help="ISO 8601 date or time (default: the last 24 hours)")
    parser.add_argument("--domain", action="append",
                        help="only events that touch this domain (repeat for more)")
    parser.add_argument("--json", action="store_true", help="one JSON object a line")
    parser.set_defaults(func=run)


def _since(raw: str | None) -> dt.datetime:
    if raw is None:
        return dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    when = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _line(event: dict[str, Any]) -> str:
    where = f" from {event['client']}" if event.get("client") else ""
    fields = event.get("fields") or {}
    changed = ", ".join(name if value is None else f"{name}={value}"
                        for name, value in fields.items())
    text = (f"{event.get('time', '')}  {event.get('who', '')}{where}  "
            f"{event.get('operation', '')} {event.get('target', '')}".rstrip())
    if changed:
        text += f" ({changed})"
    for change in event.get("changes") or ():
        text += f"\n    {change.get('operation', '')} {change.get('target', '')}"
    return text


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        since = _since(args.since)
        domains = frozenset(normalize_domain(d) for d in args.domain) if args.domain \
            else None
    except ValueError as exc:
        print(f"mailgate: {exc}", file=sys.stderr)
        return 2
    with reachable(settings) as (resolved, _slapd):
        directory = Directory(resolved)
        try:
            for event in AuditLog(directory, settings.audit_retention_days).read(since,
                                                                                 domains):
                print(json.dumps(event) if args.json else _line(event))
        finally:
            directory.close()
    return 0
