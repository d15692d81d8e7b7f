"""Sync runs in /metrics: runs by result, entries changed, and the deployment's
last success read from LDAP (right whichever process ran it)."""

from __future__ import annotations

from tests.support.api import Client
from tests.support.httpsserver import DocServer
from tests.support.sync import MakeRunner, spec_document
from tests.test_metrics import scrape, value


def test_a_sync_run_shows_in_the_metrics(client: Client, docs: DocServer,
                                         make_runner: MakeRunner) -> None:
    before = scrape(client)
    assert ("mailgate_sync_last_success_age_seconds", ()) not in before   # never ran
    docs.serve("/metrics.json", spec_document())
    report = make_runner("/metrics.json").run("cli")
    assert report.result == "applied", report.reason
    after = scrape(client)
    assert value(after, "mailgate_sync_runs_total", result="applied") \
        - value(before, "mailgate_sync_runs_total", result="applied") == 1
    assert value(after, "mailgate_sync_entries_total", change="created") \
        - value(before, "mailgate_sync_entries_total", change="created") == 3
    age = value(after, "mailgate_sync_last_success_age_seconds")
    assert ("mailgate_sync_last_success_age_seconds", ()) in after and 0 <= age < 60
