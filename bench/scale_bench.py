"""Scale-out figures (docs/scaling.md): N accounts + N/5 aliases, each figure with its
baseline from the same run, on slapd with production settings (fsync on).

    python bench/scale_bench.py                      100 000 accounts (about 6 min here)
    python bench/scale_bench.py --accounts 1000000   the million (make bench-scale; 30+ min)
    python bench/scale_bench.py --accounts 10000 --out /tmp/scale.md   quick
    python bench/scale_bench.py --accounts 1000000 --seed-only   S6 and S8 alone
    python bench/scale_bench.py --accounts 1000000 --list-only   S3 alone, --runs times
    python bench/scale_bench.py --accounts 1000000 --import-only S1o alone
    python bench/scale_bench.py --lag-only           S9 alone (100 000 accounts)

S1  JSON import into an empty directory (SyncRunner.run) / ``ldapadd -c`` of the
    same entries into an identical fresh slapd.
S1o the same first import by the offline route (``mailgate sync
    --offline-import``: LDIF, ``slapadd -q -w``, start, the full sync run that
    checks it) / the same ``ldapadd -c`` (``--import-only``: S1o and its
    baseline alone).
S2  full re-sync of the same document (every entry read and compared): LDAP
    writes (must be 0) and time / ``ldapsearch -E pr=2000`` of the compared attributes.
S3  every account and alias through GET /mail/account/ and /mail/alias/ in
    pages of 10 000 (Flask test client, no HTTP) / ``ldapsearch -E pr=10000``.
S4  disk: the mdb file (du) per entry, each index's pages (``mdb_stat -a``);
    slapd's resident memory after S1-S3.
S5  Postfix lookups: ``postmap -q - ldap:ldap-mailboxes.cf`` (rendered by mailgate)
    over 20 000 keys against the N-account directory / the same against a
    1 000-account directory (does the rate depend on the size?).
S6  a fresh consumer (ldif/replica.ldif) replicating the whole directory: time
    and bytes on the wire (a counting TCP proxy between consumer and provider)
    / ``ldapsearch`` of every entry with its operational attributes as the replicator.
S7  cost per change while a consumer follows: 1 000 password modifies and 1 000
    adds through the gateway's Directory: bytes on the replication wire, CPU
    of the provider and of the consumer (from /proc), per change.
S8  a new consumer seeded offline (``slapcat`` of the running provider,
    ``slapadd -q -w``, start, caught up) / S6 (the same consumer filled by syncrepl).
S9  replication lag during a first import through LDAP (``--lag-only``): a
    consumer attached from the start, its lag sampled every 0.2 s as the
    gateway's ``mailgate_replica_lag_seconds`` computes it (the provider's
    newest contextCSN time minus the consumer's), p50/p99/max from the import's
    start until the consumer has caught up,
    once with single operations (the default) and once in transactions of
    ``--lag-txn-size`` (MAILGATE_LDAP_TRANSACTION_SIZE), each on a fresh pair;
    slapd's crashes under transactions are counted (its supervisor restarts it
    and the sync is run again until it has applied everything).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import (
    ADMIN_TOKEN,
    BASE_DN,
    HASH,
    ROOT,
    DocumentServer,
    account_ids,
    document,
    ldap_tool_args,
    machine,
    production_slapd,
    write_ldif,
)
from sync_bench import COMPARED, Recorder, _ldapsearch, _offline, _run, _settings

from gateway.access import LdapAccess
from gateway.directory import Directory
from gateway.mailconfig import postfix_files, write_files
from gateway.replication import ReplicaSlapd, replica_lag, share_secrets
from gateway.settings import Settings
from gateway.slapd import ManagedSlapd, free_port
from gateway.sync.runner import SyncRunner

TICK = os.sysconf("SC_CLK_TCK")
Render = Callable[[dict[str, Any], str, float], str]   # figures, command, minutes


class CountingProxy:
    """A loopback TCP proxy that counts the bytes each way (the replication wire)."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.to_consumer = 0
        self.to_provider = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:  # the provider is down: the consumer retries later
                client.close()
                continue
            threading.Thread(target=self._pump, args=(client, upstream, "to_provider"),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, "to_consumer"),
                             daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, counter: str) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
                with self._lock:
                    setattr(self, counter, getattr(self, counter) + len(data))
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    @property
    def total(self) -> int:
        return self.to_consumer + self.to_provider

    def close(self) -> None:
        self.sock.close()


def cpu_seconds(pid: int | None) -> float:
    assert pid is not None
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mb(pid: int | None) -> float:
    assert pid is not None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def as_replicator(server: ManagedSlapd, provider: ManagedSlapd) -> list[str]:
    """ldapsearch options: ``server``'s URL, bound as the replicator of ``provider``."""
    return ["-x", "-H", server.url, "-D", provider.service_dn("replicator"), "-y",
            str(provider.password_file("replicator"))]


def csn_values(server: ManagedSlapd, as_: ManagedSlapd) -> list[str] | None:
    """The contextCSN values of ``server`` (None: it did not answer)."""
    done = subprocess.run(["ldapsearch", *as_replicator(server, as_), "-o", "nettimeout=2",
                           "-LLL", "-s", "base", "-b", BASE_DN, "contextCSN"],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return None
    return [line.split(": ", 1)[1] for line in done.stdout.splitlines()
            if line.startswith("contextCSN: ")]


def context_csn(server: ManagedSlapd, as_: ManagedSlapd) -> str:
    """``server``'s contextCSN values as one comparable string ("": no answer)."""
    return " ".join(sorted(f"contextCSN: {v}" for v in csn_values(server, as_) or []))


def count_entries(server: ManagedSlapd, as_: ManagedSlapd) -> int:
    out = subprocess.run(["ldapsearch", *as_replicator(server, as_),
                          "-LLL", "-b", BASE_DN, "(objectClass=*)", "1.1"],
                         capture_output=True, text=True, check=True).stdout
    return out.count("dn: ")


def wait_caught_up(consumer: ManagedSlapd, provider: ManagedSlapd, timeout: float) -> float:
    """Seconds until the consumer's contextCSN is the provider's (polled every 50 ms)."""
    start = time.monotonic()
    want = context_csn(provider, provider)
    if not want:
        raise RuntimeError("no contextCSN on the provider")
    while context_csn(consumer, provider) != want:
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"consumer not caught up within {timeout}s")
        time.sleep(0.05)
    return time.monotonic() - start


def mdb_used(db_dir: Path) -> int:
    """Bytes of the pages in use (mdb_stat -e: last page number + 1, times page size)."""
    out = subprocess.run(["mdb_stat", "-e", str(db_dir)], capture_output=True, text=True,
                         check=True).stdout
    fields = dict(line.strip().split(":", 1) for line in out.splitlines() if ":" in line)
    return (int(fields["Number of pages used"]) * int(fields["Page size"]))


def mdb_stat(db_dir: Path) -> dict[str, int]:
    """Bytes of each sub-database (branch + leaf + overflow pages) from mdb_stat -a."""
    out = subprocess.run(["mdb_stat", "-a", str(db_dir)], capture_output=True, text=True,
                         check=True).stdout
    sizes: dict[str, int] = {}
    name, page = "", 4096
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Page size:"):
            page = int(line.split(":")[1])
        elif line.startswith("Status of"):
            name = line.removeprefix("Status of").strip()
            sizes[name] = 0
        elif name and line.split(":")[0] in ("Branch pages", "Leaf pages", "Overflow pages"):
            sizes[name] += int(line.split(":")[1]) * page
    return sizes


def list_all_gateway(slapd: ManagedSlapd) -> tuple[float, int]:
    from gateway.app import create_app
    from gateway.services import current

    app = create_app(Settings(ldap_url=slapd.url, ldap_base_dn=BASE_DN,
                              ldap_password=slapd.password("gateway"),
                              admin_token=ADMIN_TOKEN, data_dir=slapd.data_dir))
    client = app.test_client()
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    start, seen = time.perf_counter(), 0
    for kind in ("account", "alias"):
        page = 1
        while True:
            got = client.get(f"/mail/{kind}/?page={page}&page_size=10000", headers=headers)
            if got.status_code != 200:
                raise RuntimeError(f"list {kind} page {page}: {got.status_code}")
            body = got.get_json()
            seen += len(body["results"])
            if body["next"] is None:
                break
            page += 1
    elapsed = time.perf_counter() - start
    current(app).directory.close()
    return elapsed, seen


def list_all_ldapsearch(slapd: ManagedSlapd) -> float:
    start = time.perf_counter()
    subprocess.run(["ldapsearch", *ldap_tool_args(slapd), "-LLL", "-E", "pr=10000/noprompt",
                    "-b", f"ou=domains,{BASE_DN}",
                    "(|(objectClass=mailgateAccount)(objectClass=mailgateAlias))", *COMPARED],
                   check=True, capture_output=True)
    return time.perf_counter() - start


def postmap_rate(slapd: ManagedSlapd, work: Path, keys: list[str]) -> float:
    access = LdapAccess(slapd.url, BASE_DN, slapd.service_dn("postfix"),
                        slapd.password("postfix"))
    out = work / "postfix"
    write_files(out, postfix_files(access, map_dir=str(out),
                                   proxy_read_maps="$virtual_mailbox_maps"))
    etc = work / "postfix-etc"   # postmap reads a main.cf; this one sets nothing
    etc.mkdir(exist_ok=True)
    (etc / "main.cf").write_text("compatibility_level = 3.6\n")
    start = time.perf_counter()
    done = subprocess.run(["postmap", "-c", str(etc), "-q", "-",
                           f"ldap:{out / 'ldap-mailboxes.cf'}"],
                          input="\n".join(keys) + "\n", capture_output=True, text=True,
                          check=False)
    elapsed = time.perf_counter() - start
    found = len(done.stdout.splitlines())
    if found != len(keys):
        raise RuntimeError(f"postmap found {found} of {len(keys)}: {done.stderr[-500:]}")
    return len(keys) / elapsed


def attach_consumer(provider: ManagedSlapd, work: Path) -> tuple[ReplicaSlapd, CountingProxy]:
    port = int(provider.url.rsplit(":", 1)[1])
    proxy = CountingProxy(port)
    consumer = ReplicaSlapd(work / "consumer", BASE_DN, url=f"ldap://127.0.0.1:{free_port()}",
                            nosync=False, provider_url=f"ldap://127.0.0.1:{proxy.port}")
    share_secrets(provider, consumer, ("replicator",))
    return consumer, proxy


def measure(accounts: int, work: Path, runs_note: str,
            partial: Path | None = None) -> dict[str, Any]:
    r: dict[str, Any] = {"accounts": accounts, "aliases": accounts // 5}

    def step(line: str) -> None:
        """Say a step is done and keep the figures so far: a run that fails an hour in
        still leaves what it measured (``partial``, JSON)."""
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        if partial is not None:
            partial.write_text(json.dumps(r, default=str), encoding="utf-8")

    aliases = accounts // 5
    body = document(accounts, aliases)
    ldif = write_ldif(work / "entries.ldif", accounts, aliases)
    entries = sum(1 for line in ldif.open() if line.startswith("dn: "))
    r["entries"] = entries
    r["document_mb"] = round(len(body) / 2**20, 1)
    step(f"{entries} entries, document {r['document_mb']} MiB")

    # S1 baseline first (its directory is deleted before the gateway's is made).
    with production_slapd(work / "ldapadd") as slapd:
        start = time.perf_counter()
        subprocess.run(["ldapadd", "-c", *ldap_tool_args(slapd), "-f", str(ldif)],
                       check=True, capture_output=True)
        r["s1_ldapadd_s"] = time.perf_counter() - start
    shutil.rmtree(work / "ldapadd")
    step(f"S1 ldapadd {r['s1_ldapadd_s']:.1f} s")
    server = DocumentServer(work, body)
    try:
        with production_slapd(work / "provider") as slapd:
            runner = SyncRunner(_settings(slapd, server))
            rec = Recorder(runner)
            server.publish(body)
            _report, r["s1_sync_s"] = _run(runner, "applied")
            r["s1_writes"] = rec.mail_writes
            step(f"S1 sync {r['s1_sync_s']:.1f} s")
            # S2
            server.publish(body)
            rec.clear()
            _report, r["s2_sync_s"] = _run(runner, "applied", full=True)
            r["s2_writes"] = rec.mail_writes
            r["s2_ldapsearch_s"] = _ldapsearch(slapd)
            runner.close()
            step(f"S2 {r['s2_sync_s']:.2f} s, {r['s2_writes']} writes")
            # S3
            r["s3_gateway_s"], r["s3_listed"] = list_all_gateway(slapd)
            r["s3_ldapsearch_s"] = list_all_ldapsearch(slapd)
            step(f"S3 {r['s3_gateway_s']:.2f} s / {r['s3_ldapsearch_s']:.2f} s")
            # S4
            data = slapd.db_dir / "data.mdb"
            r["s4_mdb_bytes"] = data.stat().st_blocks * 512
            r["s4_mdb_used_bytes"] = mdb_used(slapd.db_dir)
            r["s4_bytes_per_entry"] = r["s4_mdb_bytes"] / entries
            r["s4_subdbs"] = mdb_stat(slapd.db_dir)
            r["s4_ldif_bytes_per_entry"] = ldif.stat().st_size / entries
            r["s4_slapd_rss_mb"] = rss_mb(slapd.pid)
            # S5
            keys = random.Random(7).sample(account_ids(accounts), min(20_000, accounts))
            r["s5_rate"] = postmap_rate(slapd, work, keys)
            step(f"S5 {r['s5_rate']:.0f} lookups/s")
            # S6
            figures, consumer, proxy = replicate_from_scratch(slapd, work, timeout=7200)
            r.update(figures)
            try:
                step(f"S6 {r['s6_refresh_s']:.1f} s, {proxy.total / entries:.0f} B/entry")
                # S7
                r.update(per_change(slapd, consumer, proxy, accounts))
            finally:
                consumer.stop()
                proxy.close()
            step("S7 done")
            # S8
            r.update(seed_offline(slapd, work / "seeded"))
            step(f"S8 {r['s8_total_s']:.1f} s")
    finally:
        server.close()
    # S5 baseline: the same lookups against a 1 000-account directory.
    small = write_ldif(work / "small.ldif", 1000, 200)
    with production_slapd(work / "small", preload=small) as slapd:
        keys = [random.Random(7).choice(account_ids(1000)) for _ in range(min(20_000, accounts))]
        r["s5_small_rate"] = postmap_rate(slapd, work / "small-pf", keys)
    r["note"] = runs_note
    return r


def replicate_from_scratch(provider: ManagedSlapd, work: Path, timeout: float,
                           ) -> tuple[dict[str, Any], ReplicaSlapd, CountingProxy]:
    """S6: a fresh consumer replicates everything through a counting proxy; its
    figures, and the consumer still running (the caller stops it and the proxy)."""
    r: dict[str, Any] = {}
    consumer, proxy = attach_consumer(provider, work)
    base_start = time.perf_counter()
    subprocess.run(["ldapsearch", *ldap_tool_args(provider, "replicator"), "-LLL",
                    "-E", "pr=10000/noprompt", "-b", BASE_DN, "(objectClass=*)",
                    "*", "+"], check=True, capture_output=True)
    r["s6_ldapsearch_s"] = time.perf_counter() - base_start
    started = time.monotonic()
    consumer.start()
    try:
        r["s6_refresh_s"] = (time.monotonic() - started) + wait_caught_up(
            consumer, provider, timeout=timeout)
        r["s6_refresh_bytes"] = proxy.total
        r["s6_refresh_bytes_to_provider"] = proxy.to_provider
        r["s6_entries_equal"] = count_entries(consumer, provider) == count_entries(
            provider, provider)
        if not r["s6_entries_equal"]:
            raise RuntimeError("the consumer does not hold every entry")
        r["s6_consumer_mdb_bytes"] = mdb_used(consumer.db_dir)
        r["s6_consumer_rss_mb"] = rss_mb(consumer.pid)
    except BaseException:
        consumer.stop()
        proxy.close()
        raise
    return r, consumer, proxy


def seed_offline(provider: ManagedSlapd, work: Path) -> dict[str, Any]:
    """S8: a new consumer seeded offline, the standard OpenLDAP way: ``slapcat``
    of the running provider, ``slapadd -q -w`` into the new consumer, start it;
    syncrepl then sends only what changed since the copy. Until caught up (equal
    contextCSN, every entry there)."""
    r: dict[str, Any] = {}
    seed = work / "seed.ldif"
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    subprocess.run(["slapcat", "-n1", "-F", str(provider.config_dir), "-l", str(seed)],
                   check=True, capture_output=True)
    r["s8_slapcat_s"] = time.perf_counter() - start
    consumer, proxy = attach_consumer(provider, work)
    try:
        consumer.ensure_initialised()
        start = time.perf_counter()
        subprocess.run(["slapadd", "-q", "-w", "-n1", "-F", str(consumer.config_dir),
                        "-l", str(seed)], check=True, capture_output=True)
        r["s8_slapadd_s"] = time.perf_counter() - start
        started = time.monotonic()
        consumer.start()
        r["s8_catch_up_s"] = (time.monotonic() - started) + wait_caught_up(
            consumer, provider, timeout=3600)
        r["s8_bytes"] = proxy.total
        if count_entries(consumer, provider) != count_entries(provider, provider):
            raise RuntimeError("the seeded consumer does not hold every entry")
        r["s8_total_s"] = r["s8_slapcat_s"] + r["s8_slapadd_s"] + r["s8_catch_up_s"]
    finally:
        consumer.stop()
        proxy.close()
        seed.unlink(missing_ok=True)
    return r


def measure_seeding(accounts: int, work: Path) -> dict[str, Any]:
    """``--seed-only``: S6 and S8 side by side on a provider loaded with slapadd."""
    aliases = accounts // 5
    ldif = write_ldif(work / "entries.ldif", accounts, aliases)
    r: dict[str, Any] = {"accounts": accounts, "aliases": aliases,
                         "entries": sum(1 for line in ldif.open() if line.startswith("dn: "))}
    with production_slapd(work / "provider", preload=ldif) as slapd:
        figures, consumer, proxy = replicate_from_scratch(slapd, work, timeout=7200)
        consumer.stop()
        proxy.close()
        r.update(figures)
        print(f"S6 {r['s6_refresh_s']:.1f} s", flush=True)
        r.update(seed_offline(slapd, work / "seeded"))
    return r


def measure_listing(accounts: int, work: Path, runs: int) -> dict[str, Any]:
    """``--list-only``: S3 alone, ``runs`` times interleaved with its baseline, on a
    provider loaded with slapadd."""
    aliases = accounts // 5
    ldif = write_ldif(work / "entries.ldif", accounts, aliases)
    r: dict[str, Any] = {"accounts": accounts, "aliases": aliases, "runs": runs,
                         "s3_gateway_s": [], "s3_ldapsearch_s": []}
    with production_slapd(work / "provider", preload=ldif) as slapd:
        for _ in range(runs):
            seconds, r["s3_listed"] = list_all_gateway(slapd)
            r["s3_gateway_s"].append(seconds)
            r["s3_ldapsearch_s"].append(list_all_ldapsearch(slapd))
            print(f"S3 {seconds:.2f} s / {r['s3_ldapsearch_s'][-1]:.2f} s", flush=True)
    return r


def measure_import(accounts: int, work: Path) -> dict[str, Any]:
    """``--import-only``: S1o, the offline import, and ``ldapadd -c`` of the same entries."""
    aliases = accounts // 5
    body = document(accounts, aliases)
    ldif = write_ldif(work / "entries.ldif", accounts, aliases)
    r: dict[str, Any] = {"accounts": accounts, "aliases": aliases,
                         "entries": sum(1 for line in ldif.open() if line.startswith("dn: ")),
                         "document_mb": round(len(body) / 2**20, 1)}
    server = DocumentServer(work, body)
    try:
        server.publish(body)
        r["s1o_offline_s"], r["s1o_phases"], r["s1o_checking_writes"] = _offline(
            work / "offline", server)
        print(f"S1o offline {r['s1o_offline_s']:.1f} s {r['s1o_phases']}", flush=True)
    finally:
        server.close()
    with production_slapd(work / "ldapadd") as slapd:
        start = time.perf_counter()
        subprocess.run(["ldapadd", "-c", *ldap_tool_args(slapd), "-f", str(ldif)],
                       check=True, capture_output=True)
        r["s1_ldapadd_s"] = time.perf_counter() - start
    print(f"S1 ldapadd {r['s1_ldapadd_s']:.1f} s", flush=True)
    r["s1o_ratio"] = r["s1o_offline_s"] / r["s1_ldapadd_s"]
    return r


def wait_binds(server: ManagedSlapd, timeout: float) -> None:
    """Until ``server`` answers a bind (its supervisor restarts it after a crash)."""
    deadline = time.monotonic() + timeout
    while not server.binds():
        if time.monotonic() > deadline:
            raise RuntimeError(f"slapd not back within {timeout}s")
        time.sleep(0.2)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def import_with_lag(accounts: int, work: Path, size: int) -> dict[str, Any]:
    """One S9 run: a fresh provider (supervised) and consumer, the import through
    SyncRunner with ``ldap_transaction_size=size``, the consumer's lag sampled."""
    work.mkdir(parents=True, exist_ok=True)
    body = document(accounts, accounts // 5)
    server = DocumentServer(work, body)
    server.publish(body)
    stop, unsupervised = threading.Event(), threading.Event()
    samples: list[tuple[float, float]] = []     # (monotonic time, lag in seconds)
    pids: set[int] = set()
    unanswered = 0
    r: dict[str, Any] = {"transaction_size": size}
    with production_slapd(work / "provider") as provider:
        supervisor = provider.supervise(unsupervised, check_every=0.2)
        consumer = ReplicaSlapd(work / "consumer", BASE_DN,
                                url=f"ldap://127.0.0.1:{free_port()}", nosync=False,
                                provider_url=provider.url, rid=1)
        share_secrets(provider, consumer, ("replicator",))
        consumer.start()

        def sample() -> None:
            nonlocal unanswered
            for _ in range(100_000):                    # bounded; stop ends it sooner
                if stop.wait(0.2):
                    return
                if provider.pid is not None:
                    pids.add(provider.pid)
                theirs, ours = csn_values(provider, provider), csn_values(consumer, provider)
                if theirs is None or ours is None:
                    unanswered += 1
                elif theirs:
                    samples.append((time.monotonic(), replica_lag(theirs, ours)))

        sampler = threading.Thread(target=sample, daemon=True)
        try:
            if csn_values(provider, provider):
                wait_caught_up(consumer, provider, timeout=120)
            settings = dataclasses.replace(_settings(provider, server),
                                           ldap_transaction_size=size, ldap_timeout=60.0)
            runner = SyncRunner(settings)
            sampler.start()
            start = time.monotonic()
            runs = []
            for _ in range(20):       # a crash fails a run; the next converges
                report = runner.run("bench")
                runs.append(report.result)
                if report.result == "applied":
                    break
                wait_binds(provider, timeout=120)   # the supervisor's restart first
            end = time.monotonic()
            runner.close()
            r["import_s"] = round(end - start, 1)
            r["runs"] = runs
            r["catch_up_after_s"] = round(wait_caught_up(consumer, provider, timeout=1800), 2)
            stop.set()
            sampler.join(10)
            # from the import's start until the consumer has caught up
            during = [lag for when, lag in samples if when >= start]
            r["samples"] = len(during)
            r["unanswered_samples"] = unanswered
            r["lag_p50_s"] = round(percentile(during, 0.50), 3) if during else None
            r["lag_p99_s"] = round(percentile(during, 0.99), 3) if during else None
            r["lag_max_s"] = round(max(during), 3) if during else None
            r["provider_entries"] = count_entries(provider, provider)
            r["consumer_entries"] = count_entries(consumer, provider)
            r["slapd_restarts"] = len(pids) - 1
        finally:
            stop.set()
            unsupervised.set()
            supervisor.join(10)
            consumer.stop()
            server.close()
    return r


def measure_lag(accounts: int, work: Path, txn_size: int,
                modes: tuple[str, ...] = ("single", "transactions")) -> dict[str, Any]:
    """``--lag-only``: S9 with single operations, then in transactions."""
    r: dict[str, Any] = {"accounts": accounts, "aliases": accounts // 5}
    for label, size in (("single", 0), ("transactions", txn_size)):
        if label not in modes:
            continue
        r[label] = import_with_lag(accounts, work / label, size)
        print(f"S9 {label}: {r[label]}", flush=True)
        shutil.rmtree(work / label, ignore_errors=True)
    return r


def render_lag(r: dict[str, Any], command: str, minutes: float) -> str:
    rows = []
    for label, text in (("single", "single operations (the default)"),
                        ("transactions", "transactions (MAILGATE_LDAP_TRANSACTION_SIZE="
                                         f"{r.get('transactions', {}).get('transaction_size')})")):
        if label not in r:
            continue
        x = r[label]
        rows.append(f"| {text} | {x['import_s']} s ({len(x['runs'])} run(s): "
                    f"{', '.join(x['runs'])}) | {x['samples']} | {x['lag_p50_s']} s | "
                    f"**{x['lag_p99_s']} s** | {x['lag_max_s']} s | {x['catch_up_after_s']} s | "
                    f"{x['slapd_restarts']} | {x['consumer_entries']} / "
                    f"{x['provider_entries']} |")
    return "\n".join([
        f"# Replication lag during a first import: {r['accounts']} accounts",
        "",
        f"Written by `{command}` on {datetime.date.today().isoformat()} ({minutes:.0f} min). "
        f"Machine: {machine()}.",
        "",
        f"S9: {r['accounts']} accounts and {r['aliases']} aliases imported by `SyncRunner` "
        "into a fresh provider (production settings, supervised) with one syncrepl "
        "consumer attached from the start; the consumer's lag sampled every 0.2 s as "
        "`mailgate_replica_lag_seconds` computes it (the provider's newest contextCSN "
        "time minus the consumer's), from the import's start until the consumer has "
        "caught up (its contextCSN the provider's).",
        "",
        "| import | time | samples | lag p50 | lag p99 | lag max | caught up after the "
        "import | slapd crashes | consumer / provider entries |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Raw figures: `" + json.dumps(r) + "`",
        "",
    ])


def render_import(r: dict[str, Any], command: str, minutes: float) -> str:
    return "\n".join([
        f"# First import by the offline route: {r['accounts']} accounts",
        "",
        f"Written by `{command}` on {datetime.date.today().isoformat()} ({minutes:.0f} min). "
        f"Machine: {machine()}.",
        "",
        f"S1o: {r['entries']} entries ({r['accounts']} accounts, {r['aliases']} aliases; "
        f"a {r['document_mb']} MiB document over local HTTPS) imported by `mailgate sync "
        "--offline-import` (validate, LDIF, `slapadd -q -w` into the stopped directory, "
        "start, the full sync run that reads and compares every entry and records the "
        f"validators): {r['s1o_offline_s']:.1f} s (phases {r['s1o_phases']}; the checking "
        f"run wrote {r['s1o_checking_writes']} entries), against `ldapadd -c` of the same "
        f"entries into an identical fresh slapd (production settings): "
        f"{r['s1_ldapadd_s']:.1f} s. Ratio **{r['s1o_ratio']:.3f}** (target <= 0.2).",
        "",
        "Raw figures: `" + json.dumps(r) + "`",
        "",
    ])


def render_listing(r: dict[str, Any], command: str, minutes: float) -> str:
    ratios = [g / b for g, b in zip(r["s3_gateway_s"], r["s3_ldapsearch_s"], strict=True)]
    runs = ", ".join(f"{g:.1f} s / {b:.1f} s = {g / b:.2f}"
                     for g, b in zip(r["s3_gateway_s"], r["s3_ldapsearch_s"], strict=True))
    return "\n".join([
        f"# Listing everything: {r['accounts']} accounts",
        "",
        f"Written by `{command}` on {datetime.date.today().isoformat()} ({minutes:.0f} min). "
        f"Machine: {machine()}.",
        "",
        f"S3: every account and alias ({r['s3_listed']} items) through `GET /mail/account/` "
        "and `GET /mail/alias/` in pages of 10 000 (the app in process, no TLS), against "
        "`ldapsearch -E pr=10000` of the same attributes; slapd loaded with slapadd, "
        f"production settings. {r['runs']} runs, interleaved: {runs}; median ratio "
        f"{statistics.median(ratios):.2f}.",
        "",
        "Raw figures: `" + json.dumps(r) + "`",
        "",
    ])


def apply_changes(directory: Directory, ops: list[tuple[str, str]]) -> None:
    """("modify", address): a new password hash; ("add", address): a new account."""
    for i, (op, address) in enumerate(ops):
        dn = f"mail={address},dc={address.split('@')[1]},ou=domains,{BASE_DN}"
        if op == "modify":
            directory.modify(dn, {"userPassword": [f"{{CRYPT}}{HASH}{i % 10}"]})
        else:
            directory.add(dn, "mailgateAccount", {
                "mail": [address], "userPassword": [f"{{CRYPT}}{HASH}"],
                "mailgateOrigin": ["api"]})


def per_change(provider: ManagedSlapd, consumer: ReplicaSlapd, proxy: CountingProxy,
               accounts: int) -> dict[str, float]:
    settings = Settings(ldap_url=provider.url, ldap_base_dn=BASE_DN,
                        ldap_password=provider.password("gateway"))
    directory = Directory(settings)
    out: dict[str, float] = {}
    ids = account_ids(accounts)[:1000]
    changes = {
        "modify": [("modify", a) for a in ids],
        "add": [("add", f"new{i:05d}@{ids[0].split('@')[1]}") for i in range(1000)],
    }
    try:
        for kind, ops in changes.items():
            wire, to_provider = proxy.total, proxy.to_provider
            p_cpu, c_cpu = cpu_seconds(provider.pid), cpu_seconds(consumer.pid)
            start = time.monotonic()
            apply_changes(directory, ops)
            wait_caught_up(consumer, provider, timeout=600)
            n = len(ops)
            out[f"s7_{kind}_wall_ms"] = (time.monotonic() - start) / n * 1000
            out[f"s7_{kind}_bytes"] = (proxy.total - wire) / n
            out[f"s7_{kind}_bytes_to_provider"] = (proxy.to_provider - to_provider) / n
            out[f"s7_{kind}_provider_cpu_ms"] = (cpu_seconds(provider.pid) - p_cpu) / n * 1000
            out[f"s7_{kind}_consumer_cpu_ms"] = (cpu_seconds(consumer.pid) - c_cpu) / n * 1000
    finally:
        directory.close()
    return out


def render(r: dict[str, Any], command: str, minutes: float) -> str:
    e = r["entries"]
    subdbs = ", ".join(f"{name or 'main'} {size / 2**20:.1f} MiB"
                       for name, size in sorted(r["s4_subdbs"].items(), key=lambda x: -x[1])
                       if size)
    rows = [
        ("S1", "JSON import into an empty directory (SyncRunner.run)",
         f"{r['s1_sync_s']:.1f} s ({r['s1_writes']} writes)",
         "`ldapadd -c` of the same LDIF, fresh slapd", f"{r['s1_ldapadd_s']:.1f} s",
         f"{r['s1_sync_s'] / r['s1_ldapadd_s']:.2f}"),
        ("S2", "full re-sync, no change (every entry read and compared)",
         f"{r['s2_sync_s']:.2f} s, {r['s2_writes']} writes",
         "`ldapsearch -E pr=2000` of the compared attributes", f"{r['s2_ldapsearch_s']:.2f} s",
         f"{r['s2_sync_s'] / r['s2_ldapsearch_s']:.2f}"),
        ("S3", f"list every account and alias, pages of 10 000 ({r['s3_listed']} items)",
         f"{r['s3_gateway_s']:.2f} s", "`ldapsearch -E pr=10000`",
         f"{r['s3_ldapsearch_s']:.2f} s", f"{r['s3_gateway_s'] / r['s3_ldapsearch_s']:.2f}"),
        ("S4", "data.mdb on disk per entry (du)", f"{r['s4_bytes_per_entry']:.0f} B",
         "the entry as LDIF", f"{r['s4_ldif_bytes_per_entry']:.0f} B",
         f"{r['s4_bytes_per_entry'] / r['s4_ldif_bytes_per_entry']:.2f}"),
        ("S5", f"`postmap -q -` over ldap-mailboxes.cf, {min(20000, r['accounts'])} keys, "
               f"{e} entries", f"{r['s5_rate']:.0f} lookups/s",
         "the same against 1 200 entries", f"{r['s5_small_rate']:.0f} lookups/s",
         f"{r['s5_rate'] / r['s5_small_rate']:.2f}"),
        ("S6", "a fresh consumer replicates everything (start to equal contextCSN)",
         f"{r['s6_refresh_s']:.1f} s, {r['s6_refresh_bytes'] / e:.0f} B/entry on the wire",
         "`ldapsearch` of every entry with `+` as the replicator",
         f"{r['s6_ldapsearch_s']:.2f} s", f"{r['s6_refresh_s'] / r['s6_ldapsearch_s']:.1f}"),
        seeding_row(r),
    ]
    lines = [
        f"# Scale benchmarks: {r['accounts']} accounts",
        "",
        f"Written by `{command}` on {datetime.date.today().isoformat()} ({minutes:.0f} min), "
        "one run of each (measured here, not extrapolated).",
        "",
        f"Machine: {machine()}.",
        "",
        f"{e} entries: {r['accounts']} accounts, {r['aliases']} aliases, "
        f"{r['accounts'] // 1000 or 1} domains; JSON document {r['document_mb']} MiB. "
        "slapd with production settings (fsync on, the shipped indexes).",
        "",
        "| | what (gateway) | figure | baseline | baseline figure | ratio |",
        "|---|---|---|---|---|---|",
        *(f"| {a} | {b} | {c} | {d} | {f} | {g} |" for a, b, c, d, f, g in rows),
        "",
        f"S4: data.mdb {r['s4_mdb_bytes'] / 2**20:.0f} MiB on disk, "
        f"{r['s4_mdb_used_bytes'] / 2**20:.0f} MiB of pages in use (mdb_stat -e); "
        f"by sub-database (mdb_stat -a, "
        f"pages x page size): {subdbs}. Provider slapd resident memory after S1-S3: "
        f"{r['s4_slapd_rss_mb']:.0f} MiB.",
        "",
        f"S6: consumer pages in use {r['s6_consumer_mdb_bytes'] / 2**20:.0f} MiB, resident "
        f"memory {r['s6_consumer_rss_mb']:.0f} MiB; {r['s6_refresh_bytes'] / 2**20:.1f} MiB "
        "on the wire, of which "
        f"{r['s6_refresh_bytes_to_provider'] / 2**10:.0f} KiB consumer to provider; every "
        "entry there (counted).",
        "",
        "S7, per change with one consumer following (1 000 of each, through the gateway's "
        "Directory, precomputed hashes):",
        "",
        "| change | bytes on the replication wire | provider CPU | consumer CPU | "
        "wall time until the consumer has it |",
        "|---|---|---|---|---|",
    ]
    for kind in ("modify", "add"):
        lines.append(f"| {kind} (userPassword replace) |" if kind == "modify" else
                     f"| {kind} (a new account) |")
        lines[-1] += (f" {r[f's7_{kind}_bytes']:.0f} B | {r[f's7_{kind}_provider_cpu_ms']:.2f} ms"
                      f" | {r[f's7_{kind}_consumer_cpu_ms']:.2f} ms | "
                      f"{r[f's7_{kind}_wall_ms']:.2f} ms |")
    lines += ["", "Raw figures: `" + json.dumps({k: v for k, v in r.items()
                                                   if k != "s4_subdbs"}) + "`", ""]
    return "\n".join(lines)


def seeding_row(r: dict[str, Any]) -> tuple[str, ...]:
    return ("S8", "a new consumer seeded offline: `slapcat` of the provider, `slapadd -q -w`, "
                  "start, caught up",
            f"{r['s8_total_s']:.1f} s (slapcat {r['s8_slapcat_s']:.1f}, slapadd "
            f"{r['s8_slapadd_s']:.1f}, catch-up {r['s8_catch_up_s']:.1f}; "
            f"{r['s8_bytes'] / 2**10:.0f} KiB on the wire)",
            "S6: the same consumer filled by syncrepl from empty", f"{r['s6_refresh_s']:.1f} s",
            f"{r['s8_total_s'] / r['s6_refresh_s']:.2f}")


def render_seeding(r: dict[str, Any], command: str, minutes: float) -> str:
    a, b, c, d, f, g = seeding_row(r)
    return "\n".join([
        f"# Seeding a consumer: {r['accounts']} accounts",
        "",
        f"Written by `{command}` on {datetime.date.today().isoformat()} ({minutes:.0f} min), "
        f"one run. Machine: {machine()}.",
        "",
        f"{r['entries']} entries ({r['accounts']} accounts, {r['aliases']} aliases), loaded "
        "into the provider with slapadd; slapd with production settings (fsync on).",
        "",
        "| | what | figure | baseline | baseline figure | ratio |",
        "|---|---|---|---|---|---|",
        f"| {a} | {b} | {c} | {d} | {f} | {g} |",
        "",
        "Raw figures: `" + json.dumps(r) + "`",
        "",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--seed-only", action="store_true",
                        help="only S6 and S8 (a fresh consumer: syncrepl vs offline seeding)")
    parser.add_argument("--list-only", action="store_true",
                        help="only S3 (listing everything against ldapsearch), --runs times")
    parser.add_argument("--runs", type=int, default=3, help="with --list-only")
    parser.add_argument("--import-only", action="store_true",
                        help="only S1o (the offline first import) against ldapadd -c")
    parser.add_argument("--lag-only", action="store_true",
                        help="only S9 (replication lag during a first import through LDAP)")
    parser.add_argument("--lag-txn-size", type=int, default=100,
                        help="with --lag-only: writes per transaction of the batched run")
    parser.add_argument("--lag-modes", default="single,transactions",
                        help="with --lag-only: which imports (single, transactions)")
    args = parser.parse_args()
    command = ("bench/scale_bench.py " + " ".join(sys.argv[1:])).strip()
    # One part alone: (the name in its file, what measures it, what writes it up).
    alone: tuple[str, Callable[[Path], dict[str, Any]], Render] | None = None
    if args.lag_only:
        alone = ("lag", lambda tmp: measure_lag(args.accounts, tmp, args.lag_txn_size,
                                                tuple(args.lag_modes.split(","))), render_lag)
    elif args.import_only:
        alone = ("import", lambda tmp: measure_import(args.accounts, tmp), render_import)
    elif args.seed_only:
        alone = ("seeding", lambda tmp: measure_seeding(args.accounts, tmp), render_seeding)
    elif args.list_only:
        alone = ("listing", lambda tmp: measure_listing(args.accounts, tmp, args.runs),
                 render_listing)
    if alone is not None:
        name, measured, rendered = alone
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"mailgate-{name}-") as tmp:
            figures = measured(Path(tmp))
        out = args.out or ROOT / "docs" / f"benchmarks-{name}-{args.accounts}.md"
        out.write_text(rendered(figures, command, (time.monotonic() - started) / 60),
                       encoding="utf-8")
        print(out.read_text(encoding="utf-8"))
        return 0
    out = args.out or ROOT / "docs" / f"benchmarks-scale-{args.accounts}.md"
    partial = out.with_suffix(".partial.json")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mailgate-scale-") as tmp:
        result = measure(args.accounts, Path(tmp), "", partial)
    partial.unlink(missing_ok=True)
    text = render(result, command, (time.monotonic() - started) / 60)
    out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
