"""``GET /sync/status`` and ``POST /sync/run``, and the scheduler inside the app."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from gateway.app import create_app
from gateway.directory import Directory
from gateway.mail import MailDirectory
from gateway.services import current
from gateway.settings import Settings
from gateway.sync import job
from gateway.sync.lock import LdapLock
from gateway.sync.runner import LOCK_NAME, RunReport
from gateway.tokens import TokenStore

from tests.support.api import Client
from tests.support.httpsserver import DocServer
from tests.support.sync import spec_document
from tests.support.wait import wait_until

MakeApp = Callable[..., Flask]


@pytest.fixture
def make_app(settings: Settings, docs: DocServer) -> Iterator[MakeApp]:
    apps: list[Flask] = []

    def make(*paths: str, **changes: Any) -> Flask:
        app = create_app(settings.replace(
            json_urls=tuple(docs.url(p) for p in paths), json_ca_file=docs.ca_file,
            **changes))
        apps.append(app)
        return app

    yield make
    for app in apps:
        services = current(app)
        if services.sync is not None:
            services.sync.close()
        services.directory.close()


def wait_for_run(client: Client, run_id: str | None = None, timeout: float = 20) -> Any:
    def finished() -> Any:
        runs = client.get("/sync/status").json["runs"]
        found = [r for r in runs if run_id is None or r["id"] == run_id]
        return found[0] if found else None

    return wait_until(finished, f"the sync run {run_id or '(any)'} in /sync/status",
                      timeout=timeout)


def test_run_and_status(make_app: MakeApp, docs: DocServer, mail: MailDirectory) -> None:
    docs.serve("/mail.json", spec_document())
    client = Client(make_app("/mail.json"))
    status = client.get("/sync/status")
    assert status.status_code == 200
    assert status.json["runs"] == [] and status.json["running"] is None
    assert status.json["sources"] == [docs.url("/mail.json")]

    started = client.post("/sync/run", json={})
    assert started.status_code == 202, started.json
    assert started.headers["Location"].endswith("/sync/status")
    run = wait_for_run(client, started.json["id"])
    assert run["result"] == "applied" and run["trigger"] == "api"
    assert run["counts"]["created"] == 3 and run["duration"] >= 0
    assert mail.get_account("bob@example.com").origin == "sync"

    # Every process reads the same status from LDAP.
    other = Client(make_app("/mail.json"))
    assert other.get("/sync/status").json["runs"][0]["id"] == started.json["id"]


def test_run_while_a_sync_is_running_is_409(make_app: MakeApp, docs: DocServer,
                                            directory: Directory) -> None:
    docs.serve("/mail.json", spec_document())
    client = Client(make_app("/mail.json"))
    elsewhere = LdapLock(directory, LOCK_NAME)
    assert elsewhere.acquire()
    try:
        answer = client.post("/sync/run")
        assert answer.status_code == 409
        assert answer.json["message"] == "a sync is already running"
        assert client.get("/sync/status").json["running"]["pid"] is not None
    finally:
        elsewhere.release()
    started = client.post("/sync/run")
    assert started.status_code == 202
    assert wait_for_run(client, started.json["id"])["result"] == "applied"


def test_only_the_admin_token(make_app: MakeApp, docs: DocServer,
                              directory: Directory) -> None:
    client = Client(make_app("/mail.json"))
    _info, scoped = TokenStore(directory, None).create(["example.com"])
    for method, path in (("get", "/sync/status"), ("post", "/sync/run")):
        assert getattr(client.with_token(scoped), method)(path).status_code == 403
        assert getattr(client.with_token(None), method)(path).status_code == 401


def test_bad_bodies_and_no_sources(make_app: MakeApp, docs: DocServer) -> None:
    client = Client(make_app("/mail.json"))
    answer = client.post("/sync/run", json={"forse": True})
    assert answer.status_code == 400 and answer.json["errors"] == {"forse": "unknown field"}
    assert client.post("/sync/run", json={"force": "maybe"}).status_code == 400
    no_sources = Client(make_app())
    answer = no_sources.post("/sync/run")
    assert answer.status_code == 409 and "MAILGATE_JSON_URLS" in answer.json["message"]


def test_forced_run_through_the_api(make_app: MakeApp, docs: DocServer,
                                    mail: MailDirectory) -> None:
    docs.serve("/mail.json", spec_document())
    client = Client(make_app("/mail.json"))
    wait_for_run(client, client.post("/sync/run").json["id"])
    docs.serve("/mail.json", {"example.com": {}})
    refused = wait_for_run(client, client.post("/sync/run").json["id"])
    assert refused["result"] == "refused" and "3 of 3" in refused["reason"]
    forced = wait_for_run(client, client.post("/sync/run", data={"force": "true"}).json["id"])
    assert forced["result"] == "applied" and forced["forced"]
    assert mail.list_accounts(None).count == 0


def test_schedulers_in_two_workers_sync_once(
        make_app: MakeApp, docs: DocServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(job, "FIRST_DELAY", (0.05, 0.3))
    docs.serve("/mail.json", spec_document())
    apps = [make_app("/mail.json", json_interval=3600) for _ in range(2)]
    ticks: list[tuple[int, RunReport]] = []   # (worker, what its scheduled run did)
    for worker, app in enumerate(apps):
        runner = job.runner_for(app)

        def counted(*args: Any, _run: Any = runner.run, _worker: int = worker,
                    **kwargs: Any) -> RunReport:
            report: RunReport = _run(*args, **kwargs)
            ticks.append((_worker, report))
            return report

        monkeypatch.setattr(runner, "run", counted)   # tick() calls self.run
        assert job.start_scheduler(app) is not None
        assert job.start_scheduler(app) is current(app).sync.scheduler  # once
    wait_until(lambda: {w for w, _ in ticks} == {0, 1}, "the first tick of both workers",
               timeout=20)
    assert len(ticks) == 2, [(w, r.result) for w, r in ticks]
    first, second = sorted((r for _, r in ticks), key=lambda r: r.result != "applied")
    assert first.result == "applied" and first.trigger == "schedule"
    # The other one found the lock held ("busy") or the run just recorded ("skipped").
    assert second.result in ("busy", "skipped"), second.as_json()
    for app in apps:
        runs = Client(app).get("/sync/status").json["runs"]
        assert [(r["id"], r["result"]) for r in runs] == [(first.id, "applied")]
    assert len(docs.requests_to("/mail.json")) == 1
