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


def test_limit_skips_of_a_run_are_counted_with_source_sync(
        client: Client, docs: DocServer, make_runner: MakeRunner) -> None:
    runner = make_runner(docs.serve("/limits.json", spec_document()))   # alice and bob
    runner.mail.domains.create("example.com", {"max_accounts": 1})
    before = scrape(client)
    report = runner.run("cli")
    assert report.result == "partial"
    after = scrape(client)
    labels = {"limit": "max_accounts", "source": "sync"}
    assert value(after, "mailgate_limit_refusals_total", **labels) \
        - value(before, "mailgate_limit_refusals_total", **labels) == 1
