"""Issue 20: what a stranger or a probing token may make the directory write.

Failed authentications are written one by one only within the deployment's
budget, then counted in memory and written as one aggregate event per
interval; clients are counted by prefix; failure counters expire and are
deleted; 403 answers are counted in /metrics and audited once per token and
interval. The flood over real HTTPS is tests/test_flood.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.app import create_app
from gateway.directory import Directory
from gateway.limiter import FailureLimiter
from gateway.services import current
from gateway.settings import Settings
from gateway.slapd import ManagedSlapd
from gateway.tokens import TokenStore

from tests.support.api import Client
from tests.support.constants import BASE_DN
from tests.support.slapd import ldap_tool
from tests.support.wait import wait_until
from tests.test_audit import events
from tests.test_metrics import scrape, value

BAD = {"Authorization": "Bearer wrong"}


@pytest.fixture
def apps(settings: Settings) -> Iterator[list[Any]]:
    made: list[Any] = []
    yield made
    for app in made:
        current(app).directory.close()


def _gateway_entries(slapd: ManagedSlapd, flt: str = "(objectClass=*)") -> list[str]:
    out = ldap_tool(slapd, "ldapsearch", "-LLL", "-o", "ldif-wrap=no", "-b",
                    f"ou=gateway,{BASE_DN}", flt, "1.1").stdout
    return [line[4:] for line in out.splitlines() if line.startswith("dn: ")]


def test_the_key_is_the_address_or_its_prefix(directory: Directory) -> None:
    limiter = FailureLimiter(directory, 10, 60)
    assert limiter.key("192.0.2.7") == "192.0.2.7"
    assert limiter.key("::ffff:192.0.2.7") == "192.0.2.7"
    assert limiter.key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert limiter.key("[2001:db8:1:2::ffff]") == "2001:db8:1:2::/64"
    assert limiter.key("unknown") == "unknown"
    wide = FailureLimiter(directory, 10, 60, prefix_v4=24, prefix_v6=48)
    assert wide.key("192.0.2.7") == "192.0.2.0/24"
    assert wide.key("2001:db8:1:2::1") == "2001:db8:1::/48"
    assert FailureLimiter(directory, 10, 60, prefix_v6=128).key("2001:db8::1") == "2001:db8::1"
    assert Settings.from_env({}).auth_fail_prefix_v6 == 64
    assert Settings.from_env({"MAILGATE_AUTH_FAIL_PREFIX_V4": "24"}).auth_fail_prefix_v4 == 24


def test_an_ipv6_client_is_limited_by_its_64(settings: Settings, apps: list[Any]) -> None:
    apps.append(create_app(settings.replace(auth_fail_limit=3)))
    raw = apps[0].test_client()
    for host in ("a", "b", "c"):   # three addresses of one /64: one count
        assert raw.get("/mail/account/", headers=BAD, environ_base={
            "REMOTE_ADDR": f"2001:db8:5:6::{host}"}).status_code == 401
    assert raw.get("/mail/account/", headers=BAD, environ_base={
        "REMOTE_ADDR": "2001:db8:5:6:ffff::1"}).status_code == 429
    assert raw.get("/mail/account/", headers=BAD, environ_base={
        "REMOTE_ADDR": "2001:db8:5:7::a"}).status_code == 401   # the next /64 is not


def test_beyond_the_budget_failures_are_one_aggregate_event(
        settings: Settings, slapd: ManagedSlapd, apps: list[Any]) -> None:
    # Two apps stand for two gateway processes: the budget is the deployment's.
    apps.extend(create_app(settings.replace(auth_fail_budget=4, audit_interval=3600,
                                            auth_fail_limit=3)) for _ in range(2))
    clients = [app.test_client() for app in apps]
    before = len(_gateway_entries(slapd))
    for n in range(12):
        assert clients[n % 2].get("/mail/account/", headers=BAD, environ_base={
            "REMOTE_ADDR": f"198.51.100.{n}"}).status_code == 401
    # 4 failures were written one by one (an event and a counter entry each),
    # the other 8 cost nothing in the directory yet.
    counters = _gateway_entries(slapd, "(cn=auth-failures *)")
    assert len(counters) == 4
    grown = len(_gateway_entries(slapd)) - before
    assert grown <= 4 + 4 + 2, grown   # events, counters, ou=audit and its day
    # Beyond the budget the limiter still counts, in memory: 429 after 3.
    for _ in range(3):
        assert clients[0].get("/mail/account/", headers=BAD, environ_base={
            "REMOTE_ADDR": "203.0.113.9"}).status_code == 401
    assert clients[0].get("/mail/account/", headers=BAD, environ_base={
        "REMOTE_ADDR": "203.0.113.9"}).status_code == 429
    for app in apps:
        current(app).auth_tally.flush()   # what the interval's end does
    seen = events(Client(apps[0]))
    single = [e for e in seen if e["operation"] == "auth.failure"]
    aggregates = [e for e in seen if e["operation"] == "auth.failures"]
    assert len(single) == 4 and len(aggregates) == 2   # one per process
    assert sum(int(e["failures"]) for e in aggregates) == 8 + 3   # type: ignore[call-overload]
    assert sum(int(e["addresses"]) for e in aggregates) == 8 + 1  # type: ignore[call-overload]
    mine = next(e for e in aggregates if any(t["prefix"] == "203.0.113.9"
                                             for t in e["top"]))  # type: ignore[attr-defined]
    assert mine["top"][0] == {"prefix": "203.0.113.9", "failures": 3}  # type: ignore[index]
    assert mine["who"] == "unauthenticated" and mine["since"] < mine["until"]  # type: ignore[operator]
    assert "wrong" not in json.dumps(seen)


def test_failure_counters_expire_and_are_deleted(settings: Settings, slapd: ManagedSlapd,
                                                 apps: list[Any]) -> None:
    apps.append(create_app(settings.replace(auth_fail_window=1)))
    raw = apps[0].test_client()
    for n in range(3):
        raw.get("/mail/account/", headers=BAD, environ_base={"REMOTE_ADDR": f"192.0.2.{n}"})
    assert len(_gateway_entries(slapd, "(cn=auth-failures *)")) == 3
    # The sweep runs a window after the last write, by itself.
    wait_until(lambda: not _gateway_entries(slapd, "(cn=auth-failures *)"),
               "the expired failure counters to be deleted", timeout=20, interval=0.2)


def test_403_is_counted_and_audited_once_per_token_and_interval(
        settings: Settings, directory: Directory, apps: list[Any]) -> None:
    apps.append(create_app(settings.replace(audit_interval=3600)))
    admin = Client(apps[0])
    info, token = TokenStore(directory, None).create(["example.com"], description="probe")
    prober = admin.with_token(token)
    before = value(scrape(admin), "mailgate_authz_denied_total")
    for name in ("bob", "carol", "dave", "erin", "bob"):
        assert prober.get(f"/mail/account/{name}@other.example/").status_code == 403
    assert prober.get("/metrics").status_code == 403
    assert value(scrape(admin), "mailgate_authz_denied_total") == before + 6
    assert not [e for e in events(admin) if e["operation"] == "authz.denied"]
    current(apps[0]).denials.flush()
    denied = [e for e in events(admin) if e["operation"] == "authz.denied"]
    assert len(denied) == 1
    event = denied[0]
    assert event["who"] == f"token {info.id}" and event["denials"] == 6
    assert event["top"][0] == {"path": "/mail/account/bob@other.example/",  # type: ignore[index]
                               "denials": 2}
