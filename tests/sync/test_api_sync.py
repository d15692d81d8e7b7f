"""``GET /sync/status`` and ``POST /sync/run``, and the scheduler inside the app."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from gateway import create_app
from gateway.directory import Directory
from gateway.mail import MailDirectory
from gateway.services import current
from gateway.settings import Settings
from gateway.sync import job
from gateway.sync.lock import LdapLock
from gateway.sync.runner import LOCK_NAME
from gateway.tokens import TokenStore

from .httpsserver import DocServer
from tests.support.api import Client
from tests.support.sync import spec_document

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
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = client.get("/sync/status").json["runs"]
        found = [r for r in runs if run_id is None or r["id"] == run_id]
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError("the run did not finish")


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
    for app in apps:
        assert job.start_scheduler(app) is not None
        assert job.start_scheduler(app) is current(app).sync.scheduler  # once
    run = wait_for_run(Client(apps[0]))
    time.sleep(1.0)   # both first ticks are long past
    runs = Client(apps[1]).get("/sync/status").json["runs"]
    assert [r["id"] for r in runs] == [run["id"]]
    assert run["trigger"] == "schedule" and run["result"] == "applied"
    assert len(docs.requests_to("/mail.json")) == 1
