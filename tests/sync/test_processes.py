"""Interrupted and concurrent syncs: real processes, SIGKILL, slapd going down."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from gateway.settings import Settings
from gateway.slapd import ManagedSlapd
from gateway.sync.runner import RunReport, SyncRunner
from gateway.sync.state import StateStore

from tests.support.constants import ADMIN_TOKEN, BASE_DN
from tests.support.httpsserver import DocServer
from tests.support.slapd import ldap_tool, running_slapd
from tests.support.sync import CHEAP_HASH, MakeRunner, spec_document
from tests.support.wait import wait_until


def mailgate(settings: Settings, docs: DocServer, tmp_path: Path, *args: str,
             urls: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}
    env.update(MAILGATE_LDAP_URL=settings.ldap_url or "", MAILGATE_LDAP_BASE_DN=BASE_DN,
               MAILGATE_LDAP_PASSWORD=settings.ldap_password or "",
               MAILGATE_ADMIN_TOKEN=ADMIN_TOKEN, MAILGATE_DATA_DIR=str(tmp_path),
               MAILGATE_JSON_URLS=urls, MAILGATE_JSON_CA_FILE=str(docs.ca_file),
               MAILGATE_LOG_LEVEL="WARNING")
    return subprocess.Popen([sys.executable, "-m", "gateway.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def count_accounts(slapd: ManagedSlapd, domain: str) -> int:
    out = ldap_tool(slapd, "ldapsearch", "-LLL", "-b", f"dc={domain},ou=domains,{BASE_DN}",
                    "(objectClass=mailgateAccount)", "1.1", check=False).stdout
    return out.count("dn: ")


def test_two_processes_never_sync_at_once(
        settings: Settings, docs: DocServer, tmp_path: Path, directory: object) -> None:
    # The document arrives slowly, so the first process holds the lock while
    # the second one tries.
    url = docs.serve("/slow.json", spec_document(), delay=2.0)
    procs = [mailgate(settings, docs, tmp_path, "sync", "--once", urls=url)
             for _ in range(2)]
    results = sorted((p.wait(60), *p.communicate()) for p in procs)

    (ok, out_ok, err_ok), (busy, out_busy, _err_busy) = results
    assert ok == 0, out_ok + err_ok
    assert "sync applied" in out_ok and "3 created" in out_ok
    assert busy == 4 and "another sync is running" in out_busy
    runs = StateStore(directory).runs()  # type: ignore[arg-type]
    assert [r["result"] for r in runs] == ["applied"]
    assert len(docs.requests_to("/slow.json")) == 1   # the busy one did not even fetch


def test_a_sync_killed_half_way_converges_on_the_next_run(
        settings: Settings, docs: DocServer, tmp_path: Path, slapd: ManagedSlapd,
        make_runner: MakeRunner) -> None:
    total = 6000
    document = {"big.example": {
        "account": [{"name": f"user{i:05d}", "password": CHEAP_HASH,
                     "spoofing_whitelist": "big.example"} for i in range(total)],
        "alias": [{"name": f"alias{i:05d}", "to": f"user{i:05d}@big.example"}
                  for i in range(200)]}}
    url = docs.serve("/big.json", document)
    proc = mailgate(settings, docs, tmp_path, "sync", "--once", urls=url)

    def half_way() -> bool:
        assert proc.poll() is None, proc.communicate()
        return count_accounts(slapd, "big.example") >= 500

    wait_until(half_way, "500 accounts written by the sync process", timeout=60, interval=0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    halfway = count_accounts(slapd, "big.example")
    assert 500 <= halfway < total

    # The next run (another process) takes over the dead process's lock at
    # once, and finishes the job.
    again = mailgate(settings, docs, tmp_path, "sync", "--once", urls=url)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, out + err
    assert f"{total + 200 - halfway} created" in out
    assert count_accounts(slapd, "big.example") == total

    # Converged: a full reconcile finds nothing to write, nothing is duplicated.
    runner = make_runner(url)
    report = runner.run(full=True)
    assert report.result == "applied"
    assert report.counts["unchanged"] == total + 200
    assert runner.writes.mail() == []  # type: ignore[attr-defined]


def test_a_sync_cut_off_by_ldap_going_down_converges_after(
        tmp_path: Path, settings: Settings, docs: DocServer) -> None:
    total = 3000
    docs.serve("/big.json", {"down.example": {"account": [
        {"name": f"u{i:05d}", "password": CHEAP_HASH} for i in range(total)]}})
    with running_slapd(tmp_path / "down") as server:
        private = settings.replace(ldap_url=server.url, ldap_password=server.password("gateway"),
                                   ldap_timeout=2.0, json_ca_file=docs.ca_file,
                                   json_urls=(docs.url("/big.json"),))
        runner = SyncRunner(private, lock_ttl=2)
        try:
            reports: list[RunReport] = []
            thread = threading.Thread(target=lambda: reports.append(runner.run()))
            thread.start()

            def some_written() -> bool:
                assert thread.is_alive(), "the sync ended before slapd was stopped"
                return count_accounts(server, "down.example") >= 300

            wait_until(some_written, "300 accounts written by the sync", timeout=60,
                       interval=0.02)
            with server.stopped():
                thread.join(60)
            assert reports[0].result == "failed", reports[0].as_json()
            assert "LDAP" in reports[0].reason

            # The lock it could not release expires (TTL 2 s, stored rounded up).
            def not_busy() -> RunReport | None:
                report = runner.run()
                return None if report.result == "busy" else report

            report = wait_until(not_busy, "the lock of the cut-off run to expire", timeout=10,
                                interval=0.2)
            assert report.result == "applied", report.reason
            assert count_accounts(server, "down.example") == total
            writes: list[str] = []
            runner.directory.on_write = lambda op, dn: writes.append(dn)
            report = runner.run(full=True)
            assert report.counts["unchanged"] == total
            assert [dn for dn in writes if ",ou=domains," in dn] == []
        finally:
            runner.close()
