"""``/metrics``: the numbers after real traffic, and the same total from every worker."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from gateway.slapd import free_port, listening
from gateway.tokens import TokenStore

from tests.support.api import Client
from tests.support.process import terminate
from tests.support.wait import wait_until

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
def served(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    port = free_port()
    data = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}
    env.update(MAILGATE_DATA_DIR=str(data), MAILGATE_LISTEN=f"127.0.0.1:{port}",
               MAILGATE_EMBEDDED_LDAP_URL=f"ldap://127.0.0.1:{free_port()}",
               MAILGATE_PASSWORD_ROUNDS="1000", MAILGATE_WORKERS="3")
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"https://127.0.0.1:{port}"
    try:
        wait_until(lambda: proc.poll() is not None or (
            listening(url) and (data / "admin-token").exists()), "mailgate serve", 60)
        assert proc.poll() is None
        yield url, (data / "admin-token").read_text().strip(), data / "tls" / "cert.pem"
    finally:
        terminate(proc)


def test_every_worker_reports_the_same_deployment_total(
        served: tuple[str, str, Path]) -> None:
    url, token, cert = served

    def ready() -> bool:
        try:
            return requests.get(f"{url}/readyz", verify=cert, timeout=5).status_code == 200
        except requests.RequestException:
            return False

    wait_until(ready, "readiness", 60)
    sent = 60
    for _ in range(sent):   # a new connection each: the workers share them out
        assert requests.get(f"{url}/healthz", verify=cert, timeout=10).status_code == 200
    totals = set()
    for _ in range(6):
        answer = requests.get(f"{url}/metrics", verify=cert, timeout=10,
                              headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200
        samples = parse(answer.text)
        totals.add(value(samples, "mailgate_http_requests_total", route="/healthz",
                         method="GET", status="200"))
    # The readiness probes above also went to /readyz, not /healthz: exactly `sent`.
    assert totals == {float(sent)}, totals
