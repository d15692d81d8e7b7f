"""The Basic JSON sync against ``ldapadd -c`` / ``ldapsearch``, production slapd settings.

    .venv/bin/python bench/sync_bench.py                    10 000 accounts
    .venv/bin/python bench/sync_bench.py --accounts 100000
    .venv/bin/python bench/sync_bench.py --out docs/sync-benchmark.md

N accounts (one pre-computed hash for all: hashing is not what a sync does)
spread over N/1000 domains are served as one Basic JSON document over local
HTTPS. Measured, each on a fresh slapd with fsync on and the shipped indexes:

* first import: ``SyncRunner.run()`` end to end (fetch, validate, read, plan,
  apply) against ``ldapadd -c`` of the same entries as LDIF;
* unchanged re-run, full reconcile (validators ignored: every entry read and
  compared) against ``ldapsearch -E pr=2000`` of the same entries and
  attributes; its LDAP writes are counted (must be 0);
* unchanged re-run as scheduled (ETag answered 304): no mail entry read.
"""

from __future__ import annotations

import argparse
import json
import resource
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import trustme
from common import (
    BASE_DN,
    HASH,
    account_ids,
    directory_ldif,
    domains_for,
    ldap_tool_args,
    machine,
    production_slapd,
)

from gateway.settings import Settings
from gateway.sync.runner import SyncRunner


def document(accounts: int) -> bytes:
    doc: dict[str, dict[str, list[dict[str, str]]]] = {
        d: {"account": [], "alias": []} for d in domains_for(accounts)}
    for address in account_ids(accounts):
        name, domain = address.split("@")
        doc[domain]["account"].append({"name": name, "password": HASH})
    return json.dumps(doc).encode()


def serve(body: bytes, tmp: Path) -> tuple[str, Path, ThreadingHTTPServer]:
    etag = f'"{len(body)}-{hash(body) & 0xffffffff:x}"'

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.send_header("ETag", etag)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("ETag", etag)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    ca = trustme.CA()
    ca_file = tmp / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"https://127.0.0.1:{server.server_address[1]}/mail.json", ca_file, server


def run_sync(root: Path, url: str, ca_file: Path, accounts: int) -> dict[str, Any]:
    with production_slapd(root) as slapd:
        settings = Settings(ldap_url=slapd.url, ldap_base_dn=BASE_DN,
                            ldap_password=slapd.password("gateway"), json_urls=(url,),
                            json_ca_file=ca_file, json_timeout=300)
        runner = SyncRunner(settings)
        writes: list[str] = []
        runner.directory.on_write = lambda op, dn: writes.append(dn)
        try:
            first = runner.run("bench")
            assert first.result == "applied", first.reason
            mail_writes_first = sum(1 for dn in writes if ",ou=domains," in dn)
            writes.clear()
            full = runner.run("bench", full=True)
            assert full.result == "applied", full.reason
            full_writes = sum(1 for dn in writes if ",ou=domains," in dn)
            conditional = runner.run("bench")
            assert conditional.result == "unchanged", conditional.result
            attrs = ["objectClass", "dc", "mail", "userPassword", "mailgateSenderAllowed",
                     "mailgateSubmissionDisabled", "mailgateAliasTarget", "mailgateOrigin"]
            start = time.perf_counter()
            subprocess.run(["ldapsearch", *ldap_tool_args(slapd), "-LLL", "-E",
                            "pr=2000/noprompt", "-b", f"ou=domains,{BASE_DN}",
                            "(|(objectClass=mailgateDomain)(objectClass=mailgateAccount)"
                            "(objectClass=mailgateAlias))", *attrs],
                           check=True, capture_output=True)
            ldapsearch = time.perf_counter() - start
        finally:
            runner.close()
    return {"first": first, "first_writes": mail_writes_first, "full": full,
            "full_writes": full_writes, "conditional": conditional,
            "ldapsearch": ldapsearch, "entries": accounts + len(domains_for(accounts))}


def run_ldapadd(root: Path, accounts: int) -> float:
    ldif = root / "entries.ldif"
    root.mkdir(parents=True, exist_ok=True)
    ldif.write_text("".join(directory_ldif(accounts)), encoding="utf-8")
    with production_slapd(root / "slapd") as slapd:
        start = time.perf_counter()
        subprocess.run(["ldapadd", "-c", *ldap_tool_args(slapd), "-f", str(ldif)],
                       check=True, capture_output=True)
        return time.perf_counter() - start


def render(accounts: int, body: int, r: dict[str, Any], ldapadd: float, rss: float) -> str:
    first, full, cond = r["first"], r["full"], r["conditional"]
    entries = r["entries"]

    def phases(report: Any) -> str:
        return ", ".join(f"{k} {v:.2f}" for k, v in report.phases.items())

    return "\n".join([
        "# Sync benchmark",
        "",
        f"`.venv/bin/python bench/sync_bench.py --accounts {accounts}` on {machine()}.",
        "",
        f"{accounts} accounts in {len(domains_for(accounts))} domains "
        f"({entries} entries with the domain entries), one {body / 1e6:.1f} MB document "
        "over local HTTPS; slapd with production settings (fsync on, shipped indexes), a "
        "fresh one for the sync and one for the baseline.",
        "",
        "| run | time (s) | entries/s | baseline | ratio | LDAP writes to mail entries |",
        "|---|---|---|---|---|---|",
        f"| first import (sync) | {first.duration:.2f} | {entries / first.duration:.0f} | "
        f"`ldapadd -c` {ldapadd:.2f} s, {entries / ldapadd:.0f}/s | "
        f"{ldapadd / first.duration:.2f} | {r['first_writes']} |",
        f"| unchanged, full reconcile | {full.duration:.2f} | {entries / full.duration:.0f} | "
        f"`ldapsearch -E pr=2000` {r['ldapsearch']:.2f} s | "
        f"{r['ldapsearch'] / full.duration:.2f} | {r['full_writes']} |",
        f"| unchanged, scheduled (ETag, 304) | {cond.duration:.3f} | | | | 0 |",
        "",
        f"Phases (s): first import: {phases(first)}; full reconcile: {phases(full)}.",
        f"Peak resident memory of the benchmark process (the sync ran in it): {rss:.0f} MiB.",
        "ratio = baseline time / sync time (1.0: as fast as the OpenLDAP tool).",
        "",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--out", type=Path, help="also write the Markdown table here")
    args = parser.parse_args()
    body = document(args.accounts)
    with tempfile.TemporaryDirectory(prefix="mailgate-sync-bench-") as tmp:
        root = Path(tmp)
        url, ca_file, server = serve(body, root)
        try:
            result = run_sync(root / "sync", url, ca_file, args.accounts)
        finally:
            server.shutdown()
        ldapadd = run_ldapadd(root / "ldapadd", args.accounts)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    text = render(args.accounts, len(body), result, ldapadd, rss)
    print(text)
    if args.out:
        args.out.parent.mkdir(exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
