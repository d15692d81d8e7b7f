"""The audit trail: every change with who, what, when and from where; never a secret."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from gateway.app import create_app
from gateway.audit import Actor, AuditLog
from gateway.cli import main
from gateway.directory import Directory
from gateway.services import current
from gateway.settings import Settings
from gateway.slapd import ManagedSlapd
from gateway.tokens import TokenStore

from tests.support.api import Client
from tests.support.constants import BASE_DN
from tests.support.slapd import ldap_tool

PASSWORD = "audit-secret-pw-1"


def events(client: Client, **query: str) -> list[dict[str, object]]:
    answer = client.get("/audit/", query_string=query)
    assert answer.status_code == 200, answer.json
    return list(answer.json["results"])


def test_api_changes_are_recorded_without_secrets(client: Client, directory: Directory,
                                                  slapd: ManagedSlapd,
                                                  settings: Settings) -> None:
    env = {"REMOTE_ADDR": "192.0.2.7"}
    assert client.post("/mail/account/", environ_base=env, headers={"X-Request-ID": "r-1"},
                       json={"name": "aud", "domain": "example.com", "password": PASSWORD,
                             "spoofing_whitelist": "example.com"}).status_code == 201
    assert client.post("/mail/account/aud@example.com/set_password/", environ_base=env,
                       json={"password": PASSWORD + "x"}).status_code == 200
    _info, scoped = TokenStore(directory, None).create(["example.net"])
    assert client.with_token(scoped).post("/mail/alias/", environ_base=env, json={
        "name": "team", "domain": "example.net", "to": "aud@example.com"}).status_code == 201
    assert client.delete("/mail/account/aud@example.com/").status_code == 204

    # Read through another app: the trail is in the directory, shared by every instance.
    other = create_app(settings)
    try:
        seen = events(Client(other))
    finally:
        current(other).directory.close()
    mine = [e for e in seen if e.get("target") in ("aud@example.com", "team@example.net")]
    assert [e["operation"] for e in mine] == ["account.create", "account.set_password",
                                              "alias.create", "account.delete"]
    create, password, alias, delete = mine
    assert create["who"] == "admin" and create["client"] == "192.0.2.7"
    assert create["request_id"] == "r-1"
    assert create["fields"] == {"password": None, "spoofing_whitelist": "example.com",
                                "submission_disabled": False, "quota": 0}
    assert password["fields"] == {"password": None}
    assert str(alias["who"]).startswith("token ") and alias["fields"] == {
        "to": "aud@example.com"}
    assert delete["who"] == "admin"
    dump = ldap_tool(slapd, "ldapsearch", "-LLL", "-b", f"ou=audit,ou=gateway,{BASE_DN}").stdout
    assert PASSWORD not in dump and "$6$" not in dump and "{CRYPT}" not in dump
    assert "mailgateState" in dump


def test_scoped_tokens_see_their_domains_only(client: Client, directory: Directory) -> None:
    for domain in ("example.com", "example.net"):
        assert client.post("/mail/alias/", json={"name": "x", "domain": domain,
                                                 "to": "someone@example.org"}).status_code == 201
    _info, scoped = TokenStore(directory, None).create(["example.net"])
    assert client.with_token("wrong-token").get("/mail/alias/").status_code == 401
    visible = events(client.with_token(scoped))
    assert {e["target"] for e in visible} == {"x@example.net"}
    everything = events(client)
    assert {"x@example.com", "x@example.net"} <= {e.get("target") for e in everything}
    assert "auth.failure" in {e["operation"] for e in everything}
    assert events(client, domain="example.com")[0]["target"] == "x@example.com"
    assert client.with_token(scoped).get("/audit/", query_string={
        "domain": "example.com"}).status_code == 403
    assert client.get("/audit/", query_string={"since": "yesterday"}).status_code == 400
    assert client.get("/audit/", query_string={"bogus": "1"}).status_code == 400


def test_failures_and_the_lockout_are_recorded(settings: Settings) -> None:
    app = create_app(settings.replace(auth_fail_limit=2))
    try:
        raw = app.test_client()
        for _ in range(3):
            raw.get("/mail/account/", headers={"Authorization": "Bearer nope"},
                    environ_base={"REMOTE_ADDR": "192.0.2.99"})
        seen = events(Client(app))
    finally:
        current(app).directory.close()
    mine = [e for e in seen if e.get("client") == "192.0.2.99"]
    assert [e["operation"] for e in mine] == ["auth.failure", "auth.failure", "auth.lockout"]
    assert all(e["who"] == "unauthenticated" and e["scheme"] == "bearer" for e in mine[:2])
    assert "nope" not in json.dumps(seen)


def test_the_cli_records_and_reads(settings: Settings, slapd: ManagedSlapd,
                                   monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    for name, value in (("MAILGATE_LDAP_URL", slapd.url), ("MAILGATE_LDAP_BASE_DN", BASE_DN),
                        ("MAILGATE_LDAP_PASSWORD", slapd.password("gateway")),
                        ("MAILGATE_ADMIN_TOKEN", "cli-admin-token-0123456789")):
        monkeypatch.setenv(name, value)
    assert main(["token", "create", "--domain", "example.org"]) == 0
    capsys.readouterr()
    assert main(["audit", "--json"]) == 0
    seen = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    created = [e for e in seen if e["operation"] == "token.create"]
    assert created and str(created[-1]["who"]).startswith("cli ")
    assert created[-1]["fields"] == {"domains": ["example.org"], "read_only": False}
    assert main(["audit", "--since", "not a date"]) == 2


def test_retention_deletes_old_days(directory: Directory) -> None:
    trail = AuditLog(directory, retention_days=30)
    trail.record("account.delete", "old@example.com", who=Actor("admin"))
    # Make a day of 40 days ago, as a trail kept since then would have it.
    old = (dt.date.today() - dt.timedelta(days=40)).isoformat()
    directory.add(f"ou={old},{trail.base}", "organizationalUnit", {"ou": [old]})
    directory.add(f"cn=x,ou={old},{trail.base}", "mailgateStateObject",
                  {"cn": ["x"], "mailgateState": [b'{"operation":"account.delete"}']})
    assert old in trail.days()
    assert trail.prune() == 1
    assert old not in trail.days() and len(trail.days()) == 1
