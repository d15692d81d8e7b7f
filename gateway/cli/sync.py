"""``mailgate sync`` and ``mailgate export``.

    mailgate sync --once [--force] [--full]   one run now (waits for nothing:
                                              "busy" if another sync runs)
    mailgate sync --dry-run                   fetch, validate, print the plan;
                                              writes nothing, takes no lock
    mailgate sync --file DOC [--dry-run]      a local document (- for stdin) instead
                                              of MAILGATE_JSON_URLS, under the same
                                              rules: validate, plan, guard, apply
    mailgate sync --offline-import [--file DOC]
                                              the first import into the stopped,
                                              empty embedded directory with slapadd,
                                              then a full sync that checks it
    mailgate sync ... --json                  the run (and the plan) as JSON
    mailgate export [--domain D] [-o FILE]    the directory as Basic JSON

Exit status of ``sync``: 0 applied, unchanged or planned; 1 failed, or
partial (some entries were skipped as invalid or conflicting, or some
changes failed: the rest was applied); 2 configuration error; 3 refused by
the delete guard; 4 another sync is running. Progress of long phases goes
to stderr; skipped entries and ignored unknown keys are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from ..access import embedded_slapd, reachable
from ..addresses import normalize_domain
from ..directory import Directory
from ..errors import SlapdError
from ..settings import Settings
from ..sync import offline
from ..sync.export import export_document
from ..sync.fetch import Fetcher, FetchError, FileFetcher, SourceFetcher
from ..sync.plan import Plan
from ..sync.records import DocumentError, UnknownKey, WantAlias
from ..sync.runner import RunReport, SyncRunner


def add_commands(subparsers: Any) -> None:
    sync = subparsers.add_parser(
        "sync", help="run the Basic JSON sync once, or print its plan",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit status: 0 applied/unchanged/planned, 1 failed or partial (entries "
               "skipped or changes failed), 2 configuration error, "
               "3 refused by the delete guard, 4 another sync is running.")
    mode = sync.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true",
                      help="run one sync now (implied by --file without --dry-run)")
    mode.add_argument("--dry-run", action="store_true",
                      help="fetch and validate every source and print what a sync would "
                           "create, update, delete and skip; write nothing")
    mode.add_argument("--offline-import", action="store_true",
                      help="first import into the empty embedded directory, its slapd "
                           "stopped: the documents as LDIF loaded with slapadd -q "
                           "(docs/sync.md), then a full sync run that checks it")
    sync.add_argument("--force", action="store_true",
                      help="apply even if more than MAILGATE_SYNC_MAX_DELETE_FRACTION of the "
                           "sync-managed entries would be deleted")
    sync.add_argument("--full", action="store_true",
                      help="reconcile even if no source changed (ignore ETag/Last-Modified)")
    sync.add_argument("--file", metavar="DOC",
                      help="sync this local Basic JSON document (- for standard input) "
                           "instead of the MAILGATE_JSON_URLS sources, with the same "
                           "validation, plan, delete guard and lock")
    sync.add_argument("--json", action="store_true",
                      help="print the run as JSON (with --dry-run: and the whole plan)")
    sync.set_defaults(func=_sync)

    export = subparsers.add_parser(
        "export", help="print the directory as a Basic JSON document",
        description="The directory as a Basic JSON document that a sync of it reproduces.")
    export.add_argument("--domain", action="append",
                        help="only this domain (repeat for more; default: all)")
    export.add_argument("-o", "--output", type=Path,
                        help="write to this file (mode 0600) instead of standard output")
    export.set_defaults(func=_export)


class Progress:
    """Throttled progress lines on stderr, only for phases that take a while."""

    def __init__(self, stream: TextIO = sys.stderr, every: float = 2.0) -> None:
        self.stream = stream
        self.every = every
        self.phase = ""
        self.started = self.last = 0.0

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        if phase != self.phase:
            self.phase, self.started, self.last = phase, now, now
        if now - self.started < self.every:
            return  # quick phases stay quiet
        if now - self.last < self.every and not (total and done >= total):
            return
        self.last = now
        rate = done / max(now - self.started, 1e-6)
        of = f"/{total}" if total else ""
        print(f"mailgate sync: {phase} {done}{of} ({rate:.0f}/s)", file=self.stream,
              flush=True)


def _sync(args: argparse.Namespace, settings: Settings) -> int:
    if not (args.once or args.dry_run or args.file or args.offline_import):
        print("mailgate sync: one of --once, --dry-run, --file or --offline-import is "
              "required", file=sys.stderr)
        return 2
    if args.offline_import and not settings.embedded:
        print("mailgate sync: --offline-import: only for the embedded directory "
              "(MAILGATE_LDAP_URL unset): slapadd writes its database files", file=sys.stderr)
        return 2
    if args.offline_import and args.file == "-":
        print("mailgate sync: --offline-import: --file - cannot be read twice (the load, "
              "then the checking sync): give a file", file=sys.stderr)
        return 2
    if args.file is None and not settings.json_urls:
        print("mailgate: configuration error: MAILGATE_JSON_URLS: no sources to sync",
              file=sys.stderr)
        return 2
    if args.file not in (None, "-") and not Path(args.file).is_file():
        print(f"mailgate sync: --file: no such file: {args.file}", file=sys.stderr)
        return 2
    kept: list[str] = []
    if args.offline_import:
        loaded = _offline_import(args, settings)
        if isinstance(loaded, int):
            return loaded
        kept = loaded.kept_domains
    with reachable(settings) as (resolved, _slapd):
        if args.file is None:
            runner = SyncRunner(resolved)
        else:
            runner = SyncRunner(resolved, fetcher=FileFetcher(resolved.json_max_bytes),
                                sources=(args.file,))
        try:
            if args.dry_run:
                report = runner.plan_only(Progress())
            else:
                # After an offline import: the full run that checks it and
                # records the validators.
                report = runner.run("offline-import" if args.offline_import else "cli",
                                    force=args.force, full=args.full or args.offline_import,
                                    progress=Progress())
                if kept:   # domains that were there before the load: count them again
                    runner.mail.domains.recount_all(kept)
        finally:
            runner.close()
    if args.json:
        data = report.as_json()
        if args.dry_run:
            data["plan"] = plan_json(report.plan) if report.plan is not None else None
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return report.exit_code
    if args.dry_run:
        if report.plan is not None:
            print_plan(report.plan, sys.stdout)
    else:
        for skip in report.skipped:
            print(f"skipped {skip.domain} {skip.name!r}: {skip.reason}")
        for unknown in report.unknown_keys:
            print(_unknown_line(unknown))
        for error in report.errors:
            print(f"error: {error}", file=sys.stderr)
    print(summary(report))
    return report.exit_code


def _offline_import(args: argparse.Namespace,
                    settings: Settings) -> int | offline.OfflineImport:
    """Load the documents with slapadd (gateway/sync/offline.py); an exit code if it
    could not, what it loaded to go on with the checking sync."""
    fetcher: SourceFetcher = FileFetcher(settings.json_max_bytes) if args.file \
        else Fetcher(settings)
    try:
        loaded = offline.load(embedded_slapd(settings), fetcher,
                              (args.file,) if args.file else settings.json_urls)
    except SlapdError as exc:
        print(f"mailgate sync: --offline-import: {exc}", file=sys.stderr)
        return 2
    except (FetchError, DocumentError) as exc:
        print(f"mailgate sync: --offline-import: nothing loaded: {exc}", file=sys.stderr)
        return 1
    finally:
        fetcher.close()
    for skip in loaded.skipped:
        print(f"skipped {skip.domain} {skip.name!r}: {skip.reason}")
    seconds = ", ".join(f"{k} {v:.1f} s" for k, v in loaded.seconds.items())
    print(f"offline import: {loaded.domains} domains and {loaded.entries} entries loaded "
          f"with slapadd ({seconds}); checking them with a full sync run")
    return loaded


def summary(report: RunReport) -> str:
    counts = report.counts
    parts = [f"{counts.get(k, 0)} {k.replace('_', ' ')}" for k in
             ("created", "updated", "taken_over", "replaced", "deleted", "skipped",
              "unchanged") if k in counts]
    text = f"sync {report.result}"
    if parts:
        text += ": " + ", ".join(parts)
    if report.reason:
        text += f" ({report.reason})"
    return text


def _unknown_line(unknown: UnknownKey) -> str:
    return (f"ignored unknown {unknown.kind} key {unknown.key!r} in {unknown.count} entries "
            f"(first: {unknown.domain} {unknown.name!r})")


def print_plan(plan: Plan, out: TextIO) -> None:
    for domain in plan.domains:
        print(f"create domain {domain}", file=out)
    for create in plan.creates:
        want = create.want
        extra = f" -> {','.join(want.targets)}" if isinstance(want, WantAlias) else ""
        print(f"create {want.kind} {want.address}{extra}", file=out)
    for replace in plan.replaces:
        print(f"replace {replace.existing.kind} {replace.existing.address} with an "
              f"{replace.want.kind}", file=out)
    for update in plan.updates:
        fields = [f for f in update.changes if f != "origin"]
        what = ", ".join(fields) if fields else "nothing else"
        takeover = ""
        if update.takeover:
            origin = update.existing.origin or "none (made by hand)"
            takeover = f" (takes over the entry, origin {origin})"
        print(f"update {update.existing.kind} {update.existing.address}: {what}{takeover}",
              file=out)
    for delete in plan.deletes:
        print(f"delete {delete.existing.kind} {delete.existing.address}", file=out)
    for skip in plan.skipped:
        print(f"skip {skip.domain} {skip.name!r}: {skip.reason}", file=out)
    for unknown in plan.unknown_keys:
        print(_unknown_line(unknown), file=out)
    c = plan.counts()
    print(f"plan: {len(plan.domains)} domains to create, {c['created']} creates, "
          f"{c['updated']} updates ({c['taken_over']} takeovers), {c['replaced']} replaces, "
          f"{c['deleted']} deletes, {c['skipped']} skipped, {c['unchanged']} unchanged; "
          f"{c['managed']} entries managed by the sync", file=out)


def plan_json(plan: Plan) -> dict[str, Any]:
    """The plan for scripts: addresses and field names, never a value (hashes stay out)."""

    def want(item: Any) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": item.kind, "address": item.address}
        if isinstance(item, WantAlias):
            data["to"] = list(item.targets)
        return data

    return {
        "domains": list(plan.domains),
        "create": [want(c.want) for c in plan.creates],
        "replace": [{"address": r.existing.address, "from": r.existing.kind,
                     "to": r.want.kind} for r in plan.replaces],
        "update": [{"kind": u.existing.kind, "address": u.existing.address,
                    "fields": sorted(f for f in u.changes if f != "origin"),
                    "takeover": u.takeover, "origin": u.existing.origin}
                   for u in plan.updates],
        "delete": [{"kind": d.existing.kind, "address": d.existing.address}
                   for d in plan.deletes],
        "skipped": [s.as_json() for s in plan.skipped],
        "unknown_keys": [u.as_json() for u in plan.unknown_keys],
        "counts": plan.counts(),
    }


def _export(args: argparse.Namespace, settings: Settings) -> int:
    domains = None
    if args.domain:
        try:
            domains = {normalize_domain(d) for d in args.domain}
        except ValueError as exc:
            print(f"mailgate: --domain: {exc}", file=sys.stderr)
            return 2
    with reachable(settings) as (resolved, _slapd):
        directory = Directory(resolved)
        try:
            document, warnings = export_document(directory, domains, Progress())
        finally:
            directory.close()
    for warning in warnings:
        print(f"mailgate export: {warning}", file=sys.stderr)
    text = json.dumps(document, indent=2) + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
    return 0
