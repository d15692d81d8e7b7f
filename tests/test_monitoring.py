"""deploy/monitoring/ with real Prometheus (Debian's prometheus package).

``promtool check rules`` and ``promtool test rules`` on the shipped rules, and a
real Prometheus server on loopback that scrapes a real ``mailgate serve`` over
HTTPS with the admin token from a file, evaluates the shipped rules, and
answers for the gateway's series through its HTTP API.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from gateway.slapd import free_port

from tests.support.process import terminate
from tests.support.wait import wait_until
from tests.test_serve import Served

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "deploy" / "monitoring"
RULES = MONITORING / "mailgate-rules.yml"
CASES = MONITORING / "mailgate-rules.test.yml"


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/sbin")
    assert found, f"{name} missing: run `make system-packages` (deploy/install-system-packages.sh)"
    return found


def _alerts() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]
            if "alert" in rule}


def test_promtool_checks_the_rules() -> None:
    done = subprocess.run([_tool("promtool"), "check", "rules", str(RULES)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_explains_its_threshold() -> None:
    alerts = _alerts()
    assert len(alerts) >= 15
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        description = rule["annotations"]["description"]
        assert len(description.split()) >= 25, f"{name}: say why the threshold is what it is"
        assert "{{" not in description, f"{name}: the test fills descriptions literally"


def test_promtool_test_rules_fires_every_alert(tmp_path: Path) -> None:
    alerts = _alerts()
    cases = yaml.safe_load(CASES.read_text(encoding="utf-8"))
    fired: set[str] = set()
    for test in cases["tests"]:
        for check in test["alert_rule_test"]:
            name = check["alertname"]
            assert name in alerts, f"a case for an alert that is not in the rules: {name}"
            for expected in check["exp_alerts"]:
                fired.add(name)
                expected["exp_annotations"]["description"] = \
                    alerts[name]["annotations"]["description"]
    assert sorted(set(alerts) - fired) == [], "alerts no case fires"
    shutil.copy(RULES, tmp_path / RULES.name)
    (tmp_path / CASES.name).write_text(yaml.safe_dump(cases, sort_keys=False),
                                       encoding="utf-8")
    done = subprocess.run([_tool("promtool"), "test", "rules", CASES.name], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_rule_test_catches_a_wrong_threshold(tmp_path: Path) -> None:
    """The cases really pin the thresholds: with one changed, promtool fails."""
    text = RULES.read_text(encoding="utf-8")
    changed = text.replace("mailgate_sync_consecutive_failures >= 3",
                           "mailgate_sync_consecutive_failures >= 4")
    assert changed != text
    (tmp_path / RULES.name).write_text(changed, encoding="utf-8")
    shutil.copy(CASES, tmp_path / CASES.name)
    done = subprocess.run([_tool("promtool"), "test", "rules", CASES.name], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode != 0
    assert "MailgateSyncFailing" in done.stdout + done.stderr


# -- a real Prometheus scraping a real gateway ------------------------------------------


class Prometheus:
    """``prometheus`` on a free loopback port, its data in ``root``; stopped by its pid."""

    def __init__(self, root: Path, config: dict[str, Any]) -> None:
        self.root = root
        self.port = free_port()
        self.config = root / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        check = subprocess.run([_tool("promtool"), "check", "config", str(self.config)],
                               capture_output=True, text=True, timeout=60, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [_tool("prometheus"), f"--config.file={self.config}",
                 f"--storage.tsdb.path={self.root / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}",
                 "--storage.tsdb.retention.time=1h"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.root)

        def ready() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
            try:
                return requests.get(self.url + "/-/ready", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(ready, f"prometheus on port {self.port}", timeout=60, interval=0.2)

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
        self.proc = None

    def api(self, path: str, **params: str) -> Any:
        answer = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self.api("query", query=expr)["result"])


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Served]:
    served = Served(tmp_path / "var")
    try:
        served.start_ready()
        yield served
    finally:
        served.stop()


def scrape_config(gateway: Served, token_file: Path, rules: Path) -> dict[str, Any]:
    """The shipped deploy/monitoring/prometheus.yml, pointed at this gateway."""
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text(encoding="utf-8"))
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(rules)]
    job = config["scrape_configs"][0]
    job["authorization"]["credentials_file"] = str(token_file)
    job["tls_config"]["ca_file"] = str(gateway.data / "tls" / "cert.pem")
    job["static_configs"] = [{"targets": [f"127.0.0.1:{gateway.port}"]}]
    return config


def test_real_prometheus_scrapes_the_gateway_with_the_token_from_a_file(
        gateway: Served, tmp_path: Path) -> None:
    token_file = tmp_path / "prometheus" / "mailgate-token"
    token_file.parent.mkdir()
    shutil.copy(gateway.data / "admin-token", token_file)
    rules = tmp_path / "prometheus" / RULES.name
    shutil.copy(RULES, rules)
    prometheus = Prometheus(token_file.parent, scrape_config(gateway, token_file, rules))
    try:
        prometheus.start()
        target = f"127.0.0.1:{gateway.port}"

        def found(expr: str) -> list[dict[str, Any]]:
            return prometheus.query(expr)

        wait_until(lambda: found(f'up{{job="mailgate", instance="{target}"}} == 1'),
                   "Prometheus to scrape the gateway", timeout=60, interval=0.5)
        for name in ("mailgate_build_info", "mailgate_directory_up",
                     "mailgate_tls_certificate_expiry_timestamp_seconds",
                     "mailgate_http_requests_total"):
            series = found(f'{name}{{job="mailgate"}}')
            assert series and series[0]["metric"]["instance"] == target, name
        assert found("mailgate_directory_up == 1")
        # The readiness probes of the fixture were counted and reached Prometheus.
        ready = found('mailgate_http_requests_total{route="/readyz", status="200"}')
        assert ready and float(ready[0]["value"][1]) >= 1
        # The self-signed certificate's notAfter: 825 days after it was made.
        left = found("mailgate_tls_certificate_expiry_timestamp_seconds - time()")
        assert 824 * 86400 < float(left[0]["value"][1]) <= 825 * 86400
        # The shipped rules are loaded and evaluated against the real series.
        def rules() -> list[dict[str, Any]]:
            groups = prometheus.api("rules")["groups"]
            assert {g["name"] for g in groups} >= {"mailgate-recording", "mailgate-alerts"}
            return [r for g in groups for r in g["rules"]]

        wait_until(lambda: all(r["health"] != "unknown" for r in rules()),
                   "every rule evaluated once", timeout=60, interval=0.5)
        bad = [(r["name"], r.get("lastError")) for r in rules() if r["health"] != "ok"]
        assert bad == []
        wait_until(lambda: found("mailgate:http_requests:rate5m"),
                   "the recording rule's first value", timeout=60, interval=0.5)
        firing = [a for a in prometheus.api("alerts")["alerts"] if a["state"] == "firing"]
        assert firing == [], firing
        # The scrape really used the token: without it the gateway refuses /metrics.
        assert requests.get(f"{gateway.url}/metrics", timeout=10,
                            verify=str(gateway.data / "tls" / "cert.pem")).status_code == 401
    finally:
        prometheus.stop()
