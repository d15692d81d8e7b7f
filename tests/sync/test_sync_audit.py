"""A sync run in the audit trail: one event per 500 changes, by the run's id."""

from __future__ import annotations

from tests.support.api import Client
from tests.support.httpsserver import DocServer
from tests.support.sync import MakeRunner, spec_document
from tests.test_audit import events


def test_a_sync_run_is_recorded_with_its_run_id(client: Client, docs: DocServer,
                                                make_runner: MakeRunner) -> None:
    docs.serve("/audit.json", spec_document())
    report = make_runner("/audit.json").run("cli")
    assert report.result == "applied"
    runs = [e for e in events(client) if e["operation"] == "sync.changes"]
    assert runs and runs[-1]["who"] == f"sync run {report.id} (cli)"
    changes = runs[-1]["changes"]
    assert isinstance(changes, list)
    assert {(c["operation"], c["target"]) for c in changes} == {
        ("account.create", "alice@example.com"), ("account.create", "bob@example.com"),
        ("alias.create", "office@example.com")}
    assert all(c.get("fields", {}).get("password", None) is None for c in changes)
