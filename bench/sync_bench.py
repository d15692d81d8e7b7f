"""B1-B4 and B8: the Basic JSON sync against the OpenLDAP tools, same machine, same run.

Run through ``bench/run.py`` (``make bench``); ``--only B1,B2`` picks scenarios.

N accounts (one pre-computed hash for all: hashing is not what a sync does)
and N/5 aliases over N/1000 domains are served as one Basic JSON document
over local HTTPS, with an ETag. Each slapd has production settings (fsync
on, the shipped indexes).

B1  first import into an empty directory: ``SyncRunner.run()`` end to end
    (fetch, validate, read, plan, apply) / ``ldapadd -c`` of the same entries
    as LDIF into an identical fresh slapd. Each run: a fresh pair.
B1o the same first import by the offline route (``mailgate sync
    --offline-import``: validate, LDIF, ``slapadd -q -w`` into the stopped
    directory, start, and the full sync run that checks it and records the
    validators) / the same run's ``ldapadd -c``. Each run: a fresh directory.
B2  the same content served with a new ETag, full reconcile (validators
    ignored: every entry read and compared) / ``ldapsearch -E pr=2000`` of
    the same entries and the attributes the sync compares. Writes counted.
B3  the unchanged document answered 304 / B1's import time; the reads of
    the run are counted by base (none may touch the mail entries).
B4  one account's hash changed in the document: LDAP writes counted (must
    be exactly one).
B9  a partial source: the B1 document with one account's hash replaced by
    plain text (invalid: skipped), run twice. The second run / B1's import
    time; it must be answered 304, read no mail entry, and still list the
    skipped entry in ``GET /sync/status`` (its ``last_check``). The first
    run's time is what every run cost before (a partial run kept no
    validators).
B8  a dry run (fetch, validate, read, plan; ``SyncRunner.plan_only``) of a
    document of 100 000 and of 1 000 000 accounts (plus a fifth as many
    aliases; the bigger is a superset of the smaller) against the B1
    directory, each in a fresh process: peak RSS / document size, and time
    per entry at both sizes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from common import (
    BASE_DN,
    HASH,
    DocumentServer,
    Samples,
    document,
    domains_for,
    ldap_tool_args,
    production_slapd,
    write_ldif,
)
from passlib.hash import sha512_crypt

from gateway.settings import Settings
from gateway.slapd import ManagedSlapd, free_port
from gateway.sync import offline
from gateway.sync.fetch import Fetcher
from gateway.sync.runner import RunReport, SyncRunner

COMPARED = ["objectClass", "dc", "mail", "userPassword", "mailgateSenderAllowed",
            "mailgateSubmissionDisabled", "mailgateAliasTarget", "mailgateOrigin"]


def _settings(slapd: ManagedSlapd, server: DocumentServer) -> Settings:
    return Settings(ldap_url=slapd.url, ldap_base_dn=BASE_DN,
                    ldap_password=slapd.password("gateway"), json_urls=(server.url,),
                    json_ca_file=server.ca_file, json_timeout=300)


class Recorder:
    """Counts what a runner's Directory does: writes (its on_write hook) and reads
    (its public read methods, wrapped here), each with the DN it names."""

    def __init__(self, runner: SyncRunner) -> None:
        self.writes: list[str] = []
        self.reads: list[tuple[str, str]] = []
        directory = runner.directory
        directory.on_write = lambda _op, dn: self.writes.append(dn)
        for name in ("read", "find", "iterate", "sorted_page"):
            setattr(directory, name, self._counting(name, getattr(directory, name)))

    def _counting(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def counted(base: str, *args: Any, **kwargs: Any) -> Any:
            self.reads.append((name, base))
            return method(base, *args, **kwargs)
        return counted

    def clear(self) -> None:
        self.writes.clear()
        self.reads.clear()

    @staticmethod
    def _mail(dn: str) -> bool:
        return dn.endswith(f"ou=domains,{BASE_DN}")

    @property
    def mail_writes(self) -> int:
        return sum(1 for dn in self.writes if self._mail(dn))

    @property
    def mail_reads(self) -> int:
        return sum(1 for _op, dn in self.reads if self._mail(dn))


def _run(runner: SyncRunner, expect: str, **kwargs: Any) -> tuple[RunReport, float]:
    start = time.perf_counter()
    report = runner.run("bench", **kwargs)
    elapsed = time.perf_counter() - start
    if report.result != expect:
        raise RuntimeError(f"sync {report.result} (expected {expect}): {report.reason}")
    return report, elapsed


def _ldapsearch(slapd: ManagedSlapd) -> float:
    start = time.perf_counter()
    subprocess.run(["ldapsearch", *ldap_tool_args(slapd), "-LLL", "-E", "pr=2000/noprompt",
                    "-b", f"ou=domains,{BASE_DN}",
                    "(|(objectClass=mailgateDomain)(objectClass=mailgateAccount)"
                    "(objectClass=mailgateAlias))", *COMPARED],
                   check=True, capture_output=True)
    return time.perf_counter() - start


def _ldapadd(root: Path, ldif: Path) -> float:
    with production_slapd(root) as slapd:
        start = time.perf_counter()
        subprocess.run(["ldapadd", "-c", *ldap_tool_args(slapd), "-f", str(ldif)],
                       check=True, capture_output=True)
        elapsed = time.perf_counter() - start
    shutil.rmtree(root, ignore_errors=True)
    return elapsed


def _phases(report: RunReport) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in report.phases.items())


def _offline(root: Path, server: DocumentServer) -> tuple[float, dict[str, float], int]:
    """B1o: seconds of the offline import and its checking run, its phases, writes."""
    slapd = ManagedSlapd(root, BASE_DN, url=f"ldap://127.0.0.1:{free_port()}", nosync=False)
    slapd.ensure_initialised()
    settings = Settings(ldap_url=slapd.url, ldap_base_dn=BASE_DN, json_urls=(server.url,),
                        ldap_password=slapd.password("gateway"), json_ca_file=server.ca_file,
                        json_timeout=300)
    start = time.perf_counter()
    fetcher = Fetcher(settings)
    try:
        loaded = offline.load(slapd, fetcher, settings.json_urls)
    finally:
        fetcher.close()
    begun = time.perf_counter()
    slapd.start()
    phases = {**loaded.seconds, "start": round(time.perf_counter() - begun, 3)}
    try:
        runner = SyncRunner(settings)
        rec = Recorder(runner)
        try:
            report, _elapsed = _run(runner, "applied", full=True)
        finally:
            runner.close()
        elapsed = time.perf_counter() - start
        phases["check"] = round(sum(report.phases.values()), 3)
    finally:
        slapd.stop()
    shutil.rmtree(root, ignore_errors=True)
    return elapsed, phases, rec.mail_writes


@contextmanager
def _synced(root: Path, server: DocumentServer) -> Iterator[tuple[ManagedSlapd, SyncRunner]]:
    with production_slapd(root) as slapd:
        runner = SyncRunner(_settings(slapd, server))
        try:
            yield slapd, runner
        finally:
            runner.close()
    shutil.rmtree(root, ignore_errors=True)


def b2(slapd: ManagedSlapd, runner: SyncRunner, rec: Recorder, server: DocumentServer,
       body: bytes, runs: int) -> dict[str, Any]:
    ratio, sync_s, search_s, writes, etag_s = (Samples() for _ in range(5))
    phases = ""
    for _ in range(runs):
        server.publish(body)   # same bytes, new ETag: recognised by its SHA-256
        rec.clear()
        report, elapsed = _run(runner, "unchanged")
        etag_s.add(elapsed)
        server.publish(body)
        rec.clear()
        report, elapsed = _run(runner, "applied", full=True)
        writes.add(rec.mail_writes)
        baseline = _ldapsearch(slapd)
        sync_s.add(elapsed)
        search_s.add(baseline)
        ratio.add(elapsed / baseline)
        phases = _phases(report)
    return {"ratio": ratio, "sync_s": sync_s, "ldapsearch_s": search_s, "mail_writes": writes,
            "new_etag_same_bytes_s": etag_s, "note": f"phases of the last run (s): {phases}"}


def b3(runner: SyncRunner, rec: Recorder, b1_time: float, runs: int) -> dict[str, Any]:
    ratio, seconds, mail_reads, operations = (Samples() for _ in range(4))
    for _ in range(runs):
        rec.clear()
        _report, elapsed = _run(runner, "unchanged")
        seconds.add(elapsed)
        ratio.add(elapsed / b1_time)
        mail_reads.add(rec.mail_reads + rec.mail_writes)
        operations.add(len(rec.reads) + len(rec.writes))
    return {"ratio": ratio, "seconds": seconds, "mail_entry_operations": mail_reads,
            "ldap_operations": operations,
            "note": "the LDAP operations are the lock (add, delete) and the sync state "
                    "(read, modify), one entry each under ou=gateway"}


def _change_one(body: bytes, index: int, new_hash: str) -> bytes:
    name = f'{{"name": "user{index:07d}", "password": "'.encode()
    start = body.index(name) + len(name)
    end = body.index(b'"', start)
    return body[:start] + new_hash.encode() + body[end:]


def b4(slapd: ManagedSlapd, runner: SyncRunner, rec: Recorder, server: DocumentServer,
       body: bytes, runs: int) -> dict[str, Any]:
    writes, seconds, ratio = Samples(), Samples(), Samples()
    changed = body
    for run in range(runs):
        changed = _change_one(changed, 42 + run, str(
            sha512_crypt.using(rounds=5000).hash(f"changed-{run}")))
        server.publish(changed)
        rec.clear()
        _report, elapsed = _run(runner, "applied")
        writes.add(rec.mail_writes)
        seconds.add(elapsed)
        ratio.add(elapsed / _ldapsearch(slapd))
    server.publish(body)   # back to the B1 content for B8
    _run(runner, "applied")
    return {"ratio": writes, "seconds": seconds, "time_vs_ldapsearch": ratio}


def _make_invalid(body: bytes, index: int) -> bytes:
    name = f'{{"name": "user{index:07d}", "password": "'.encode()
    start = body.index(name) + len(name)
    end = body.index(b'"', start)
    return body[:start] + b"plain text" + body[end:]


def b9(runner: SyncRunner, rec: Recorder, server: DocumentServer, body: bytes,
       b1_time: float, runs: int) -> dict[str, Any]:
    ratio, first_s, second_s, mail_ops, not_modified, listed = (Samples() for _ in range(6))
    for run in range(runs):
        bad = _make_invalid(body, 4242 + run)
        server.publish(bad)
        _report, elapsed = _run(runner, "partial")
        first_s.add(elapsed)
        rec.clear()
        answers = len(server.answers)
        report, elapsed = _run(runner, "unchanged")
        second_s.add(elapsed)
        ratio.add(elapsed / b1_time)
        mail_ops.add(rec.mail_reads + rec.mail_writes)
        not_modified.add(int(server.answers[answers:] == [304]))
        check = runner.status()["last_check"]
        listed.add(int(check.get("skipped_total") == 1 and len(report.skipped) == 1
                       and check["skipped"][0]["name"] == f"user{4242 + run:07d}"))
    server.publish(body)   # back to the B1 content for B8
    _run(runner, "applied")
    return {"ratio": ratio, "second_s": second_s, "first_s": first_s,
            "mail_entry_operations": mail_ops, "answered_304": not_modified,
            "skip_listed": listed,
            "note": "first_s is the full fetch, read and plan every run cost before a "
                    "partial run kept its validators"}


def _dry_run_worker(args: list[str]) -> int:
    """In a fresh process: SyncRunner.plan_only(); print time, phases, memory as JSON."""
    url, ca_file, ldap_url, password_file = args
    settings = Settings(ldap_url=ldap_url, ldap_base_dn=BASE_DN,
                        ldap_password=Path(password_file).read_text().strip(),
                        json_urls=(url,), json_ca_file=Path(ca_file), json_timeout=300)
    runner = SyncRunner(settings)

    def status(key: str) -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
        return 0.0

    before = status("VmRSS")
    start = time.perf_counter()
    report = runner.plan_only()
    elapsed = time.perf_counter() - start
    runner.close()
    print(json.dumps({"result": report.result, "reason": report.reason, "seconds": elapsed,
                      "phases": report.phases, "counts": report.counts,
                      "rss_before_mb": before, "peak_rss_mb": status("VmHWM")}))
    return 0


def b8(slapd: ManagedSlapd, server: DocumentServer, accounts: int, aliases: int,
       sizes: tuple[int, int], runs: int) -> dict[str, Any]:
    small, big = sizes
    per_entry: dict[int, Samples] = {small: Samples(), big: Samples()}
    validating: dict[int, Samples] = {small: Samples(), big: Samples()}
    memory, peak, growth_mb, doc_mb = Samples(), Samples(), Samples(), 0.0
    notes = []
    for size in sizes:
        extra = max(0, size - accounts)
        body = document(accounts, aliases, extra_accounts=extra, extra_aliases=extra // 5)
        entries = size + (aliases + extra // 5)
        server.publish(body)
        for _ in range(runs):
            out = subprocess.run([sys.executable, __file__, "--dry-run-worker", server.url,
                                  str(server.ca_file), slapd.url,
                                  str(slapd.password_file("gateway"))],
                                 capture_output=True, text=True, check=True)
            result = json.loads(out.stdout)
            if result["result"] != "planned":
                raise RuntimeError(f"dry run {result['result']}: {result['reason']}")
            per_entry[size].add(result["seconds"] / entries * 1e6)
            validating[size].add(result["phases"]["validate"] / entries * 1e6)
            if size == big:
                memory.add(result["peak_rss_mb"] * 2**20 / len(body))
                peak.add(result["peak_rss_mb"])
                growth_mb.add(result["peak_rss_mb"] - result["rss_before_mb"])
        if size == big:
            doc_mb = len(body) / 2**20
        c = result["counts"]
        notes.append(f"{size} accounts + {aliases + extra // 5} aliases "
                     f"({len(body) / 2**20:.0f} MiB): created {c['created']}, unchanged "
                     f"{c['unchanged']}, phases (s) "
                     + ", ".join(f"{k} {v:.2f}" for k, v in result["phases"].items()))
        del body
    growth = Samples([b / s for b, s in zip(per_entry[big].values, per_entry[small].values,
                                            strict=True)])
    return {"ratio": memory, "peak_rss_mb": peak, "above_start_mb": growth_mb,
            "document_mb": Samples([doc_mb]),
            f"us_per_entry_{small}": per_entry[small], f"us_per_entry_{big}": per_entry[big],
            "linearity": growth,
            f"validate_us_per_entry_{small}": validating[small],
            f"validate_us_per_entry_{big}": validating[big], "note": "; ".join(notes)}


def run_all(work: Path, accounts: int, runs: int, b8_sizes: tuple[int, int],
            wanted: set[str]) -> dict[str, dict[str, Any]]:
    """B1-B4 (and B8) as ``wanted``; each B1 run is a fresh pair of directories."""
    aliases = accounts // 5
    body = document(accounts, aliases)
    ldif = write_ldif(work / "entries.ldif", accounts, aliases)
    entries = accounts + aliases + len(domains_for(accounts))
    server = DocumentServer(work, body)
    results: dict[str, dict[str, Any]] = {}
    ratio, sync_s, add_s, writes = Samples(), Samples(), Samples(), Samples()
    off_ratio, off_s, off_writes = Samples(), Samples(), Samples()
    phases = off_phases = ""
    try:
        for run in range(runs if "B1" in wanted else 1):
            if "B1" in wanted:
                add_s.add(_ldapadd(work / f"b1-ldapadd-{run}", ldif))
            if "B1O" in wanted:
                server.publish(body)
                elapsed, parts, mail_writes = _offline(work / f"b1-offline-{run}", server)
                off_s.add(elapsed)
                off_writes.add(mail_writes)
                if add_s.values:
                    off_ratio.add(elapsed / add_s.values[-1])
                off_phases = ", ".join(f"{k} {v:.2f}" for k, v in parts.items())
            with _synced(work / f"b1-sync-{run}", server) as (slapd, runner):
                rec = Recorder(runner)
                server.publish(body)
                report, elapsed = _run(runner, "applied")
                sync_s.add(elapsed)
                writes.add(rec.mail_writes)
                phases = _phases(report)
                if add_s.values:
                    ratio.add(elapsed / add_s.values[-1])
                if run < runs - 1 and "B1" in wanted:
                    continue
                if "B2" in wanted:
                    results["B2"] = b2(slapd, runner, rec, server, body, runs)
                if "B3" in wanted:
                    results["B3"] = b3(runner, rec, sync_s.median, runs)
                if "B4" in wanted:
                    results["B4"] = b4(slapd, runner, rec, server, body, runs)
                if "B9" in wanted:
                    results["B9"] = b9(runner, rec, server, body, sync_s.median, runs)
                if "B8" in wanted:
                    results["B8"] = b8(slapd, server, accounts, aliases, b8_sizes, runs)
    finally:
        server.close()
    if "B1O" in wanted and off_ratio.values:
        results["B1o"] = {"ratio": off_ratio, "offline_s": off_s, "ldapadd_s": add_s,
                          "checking_run_writes": off_writes,
                          "note": f"phases of the last run (s): {off_phases}"}
    if "B1" in wanted:
        results["B1"] = {"ratio": ratio, "sync_s": sync_s, "ldapadd_s": add_s,
                         "mail_writes": writes,
                         "note": f"{entries} entries ({accounts} accounts, {aliases} aliases, "
                                 f"{len(domains_for(accounts))} domains), "
                                 f"{len(body) / 2**20:.1f} MiB document with {HASH[:3]} "
                                 f"hashes; phases of the last run (s): {phases}"}
    return results


if __name__ == "__main__":
    if sys.argv[1:2] == ["--dry-run-worker"]:
        sys.exit(_dry_run_worker(sys.argv[2:]))
    sys.exit("run the sync benchmarks through bench/run.py (make bench), e.g. "
             "bench/run.py --quick --only B1,B2,B3,B4,B8")
