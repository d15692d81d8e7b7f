"""``/metrics``: the numbers after real traffic, and the same total from every worker."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from gateway.directory import Directory
from gateway.services import current
from gateway.settings import Settings
from gateway.sync.state import StateStore
from gateway.tls import ensure_self_signed
from gateway.tokens import TokenStore

from tests.support.api import Client
from tests.support.slapd import RunningSlapd
from tests.support.wait import wait_until
from tests.test_serve import Served

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(client: Client) -> Samples:
    answer = client.get("/metrics")
    assert answer.status_code == 200, answer.data
    assert answer.headers["Content-Type"].startswith("text/plain")
    return parse(answer.get_data(as_text=True))


def test_metrics_count_real_traffic(client: Client, directory: object) -> None:
    before = scrape(client)
    assert client.post("/mail/account/", json={"name": "m1", "domain": "example.com",
                                               "password": "pw-m1"}).status_code == 201
    for _ in range(3):
        assert client.get("/mail/account/").status_code == 200
    assert client.get("/mail/account/nobody@example.com/").status_code == 404
    assert client.with_token("wrong").get("/mail/account/").status_code == 401
    after = scrape(client)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    requests_total = "mailgate_http_requests_total"
    assert grew(requests_total, route="/mail/account/", method="GET", status="200") == 3
    assert grew(requests_total, route="/mail/account/", method="POST", status="201") == 1
    assert grew(requests_total, route="/mail/account/<path:account_id>/", method="GET",
                status="404") == 1
    assert grew(requests_total, route="/mail/account/", method="GET", status="401") == 1
    assert grew("mailgate_http_request_duration_seconds_count", route="/mail/account/",
                method="GET") == 4
    assert grew("mailgate_auth_failures_total") == 1
    assert grew("mailgate_ldap_operations_total", operation="add") >= 1   # domain, account
    assert grew("mailgate_ldap_operations_total", operation="search") >= 4
    build = [k for k in after if k[0] == "mailgate_build_info"]
    assert build and after[build[0]] == 1.0


def test_metrics_need_the_admin_token(client: Client, directory: object) -> None:
    assert client.with_token(None).get("/metrics").status_code == 401
    _info, scoped = TokenStore(directory, None).create(["example.com"])  # type: ignore[arg-type]
    assert client.with_token(scoped).get("/metrics").status_code == 403


# -- several worker processes ----------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    server = Served(tmp_path / "var", MAILGATE_WORKERS="3")
    try:
        server.start()
        yield server
    finally:
        server.stop()


def test_every_worker_reports_the_same_deployment_total(served: Served) -> None:
    def ready() -> bool:
        try:
            return served.get("/readyz").status_code == 200
        except requests.RequestException:
            return False

    wait_until(ready, "readiness", 60)
    sent = 60
    for _ in range(sent):   # a new connection each: the workers share them out
        assert served.get("/healthz").status_code == 200
    totals = set()
    for _ in range(6):
        answer = served.get("/metrics")
        assert answer.status_code == 200
        samples = parse(answer.text)
        totals.add(value(samples, "mailgate_http_requests_total", route="/healthz",
                         method="GET", status="200"))
    # The readiness probes above also went to /readyz, not /healthz: exactly `sent`.
    assert totals == {float(sent)}, totals


# -- what a scrape reads of the deployment ------------------------------------------------


def test_a_scrape_while_ldap_is_down_still_answers_and_says_so(
        client: Client, slapd: RunningSlapd) -> None:
    assert value(scrape(client), "mailgate_directory_up") == 1.0
    with slapd.stopped():
        down = scrape(client)
    assert value(down, "mailgate_directory_up") == 0.0
    assert ("mailgate_build_info" in {name for name, _ in down})
    # The counters are still there for the alerts (the failed readiness probe above too).
    assert ("mailgate_http_requests_total" in {name for name, _ in down})
    assert ("mailgate_tls_certificate_expiry_timestamp_seconds", ()) not in down  # no file


def test_the_sync_history_makes_the_last_result_and_the_failure_streak(
        settings: Settings, directory: Directory, tmp_path: Path) -> None:
    ensure_self_signed(tmp_path / "tls", [])
    app = create_app(settings.replace(json_urls=("https://source.example/users.json",),
                                      json_interval=120))
    try:
        client = Client(app)
        never = scrape(client)
        assert value(never, "mailgate_sync_interval_seconds") == 120.0
        assert value(never, "mailgate_sync_consecutive_failures") == 0.0
        assert ("mailgate_sync_last_success_age_seconds", ()) not in never
        expiry = value(never, "mailgate_tls_certificate_expiry_timestamp_seconds")
        assert 824 * 86400 < expiry - time.time() <= 825 * 86400
        state = StateStore(directory)
        now = time.time()
        results = ["applied", "partial", "failed", "refused", "failed"]   # oldest first
        for number, result in enumerate(results):
            started = dt.datetime.fromtimestamp(now - 600 + 60 * number, dt.UTC)
            assert state.record_run({"id": f"r{number}", "result": result, "duration": 1.0,
                                     "started": started.isoformat().replace("+00:00", "Z")})
        after = scrape(client)
        assert value(after, "mailgate_sync_consecutive_failures") == 3.0
        assert value(after, "mailgate_sync_last_result", result="failed") == 1.0
        assert [k for k in after if k[0] == "mailgate_sync_last_result"] == [
            ("mailgate_sync_last_result", (("result", "failed"),))]
        assert abs(value(after, "mailgate_sync_last_run_timestamp_seconds") - (now - 360)) < 1
        age = value(after, "mailgate_sync_last_success_age_seconds")   # the applied run
        assert 599 - 1 <= age < 599 + 30
    finally:
        current(app).directory.close()
