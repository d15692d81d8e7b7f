"""Authentication, per-domain scope, read-only tokens, rate limiting, token CLI."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

from gateway.app import create_app
from gateway.directory import Directory
from gateway.services import current
from gateway.settings import Settings
from gateway.slapd import ManagedSlapd
from gateway.tokens import TokenStore

from tests.support.api import Client, LiveGateway
from tests.support.constants import ADMIN_TOKEN, BASE_DN
from tests.support.slapd import ldap_tool


def seed(client: Client) -> None:
    for domain in ("example.com", "example.org"):
        assert client.post("/mail/account/", json={"name": "alice", "domain": domain,
                                                   "password": "pw"}).status_code == 201


def test_missing_or_wrong_token_is_401(client: Client) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer "},
                    {"Authorization": "Basic !!!"}, {"Authorization": "Token " + ADMIN_TOKEN},
                    {"Authorization": "Bearer " + ADMIN_TOKEN[:-1]},
                    {"Authorization": "Bearer mgt_0123456789abcdef_" + "A" * 43}):
        response = client.with_token(None).get("/mail/account/", headers=headers)
        assert response.status_code == 401, headers
        assert response.json == {"message": "missing or invalid API token"}
        assert "Bearer" in response.headers["WWW-Authenticate"]


def test_basic_auth_with_the_token_as_password(client: Client) -> None:
    anonymous = client.with_token(None)
    for user in ("", "anyone"):
        credentials = base64.b64encode(f"{user}:{ADMIN_TOKEN}".encode()).decode()
        response = anonymous.get("/mail/account/",
                                 headers={"Authorization": f"Basic {credentials}"})
        assert response.status_code == 200


def test_bare_token_in_authorization_as_swagger_ui_sends_it(client: Client,
                                                            directory: Directory) -> None:
    """Swagger UI's "Authorize" sends its field as the whole header: the bare
    token and "Bearer <token>" both work; a wrong bare token is a plain 401."""
    _info, scoped = TokenStore(directory, None).create(["example.com"], description="ui")
    anonymous = client.with_token(None)
    for value in (ADMIN_TOKEN, f" {ADMIN_TOKEN} ", f"Bearer {ADMIN_TOKEN}",
                  f"bearer   {ADMIN_TOKEN}", scoped, f"Bearer {scoped}"):
        response = anonymous.get("/mail/account/", headers={"Authorization": value})
        assert response.status_code == 200, value
    for value in ("Bearer", "Basic", ADMIN_TOKEN[:-1], scoped[:-1], f"{ADMIN_TOKEN}x"):
        response = anonymous.get("/mail/account/", headers={"Authorization": value})
        assert response.status_code == 401, value
        assert response.json == {"message": "missing or invalid API token"}


def test_health_needs_no_token(client: Client) -> None:
    anonymous = client.with_token(None)
    assert anonymous.get("/healthz").json == {"status": "ok"}
    assert anonymous.get("/readyz").json == {"status": "ready"}


def test_scoped_token_sees_and_changes_only_its_domains(client: Client,
                                                       directory: Directory) -> None:
    seed(client)
    _info, token = TokenStore(directory, None).create(["Example.COM"], description="team a")
    scoped = client.with_token(token)
    listing = scoped.get("/mail/account/").json
    assert [a["id"] for a in listing["results"]] == ["alice@example.com"]
    assert scoped.get("/mail/account/alice@example.com/").status_code == 200
    assert scoped.get("/mail/account/alice@example.org/").status_code == 403
    assert scoped.get("/mail/account/?domain=example.org").status_code == 403
    assert scoped.get("/mail/alias/?domain=example.org").status_code == 403
    created = scoped.post("/mail/account/", json={"name": "bob", "domain": "example.com",
                                                  "password": "pw"})
    assert created.status_code == 201
    denied = scoped.post("/mail/account/", json={"name": "bob", "domain": "EXAMPLE.org",
                                                 "password": "pw"})
    assert denied.status_code == 403
    assert scoped.post("/mail/alias/", json={"name": "x", "domain": "example.org",
                                             "to": "a@example.com"}).status_code == 403
    assert scoped.delete("/mail/account/alice@example.org/").status_code == 403
    assert scoped.post("/mail/account/alice@example.org/disable_submission/").status_code == 403
    assert client.get("/mail/account/bob@example.org/").status_code == 404


def test_read_only_token(client: Client, directory: Directory) -> None:
    seed(client)
    _info, token = TokenStore(directory, None).create(["example.com"], read_only=True)
    reader = client.with_token(token)
    assert reader.get("/mail/account/alice@example.com/").status_code == 200
    assert reader.get("/mail/alias/").status_code == 200
    for response in (
        reader.post("/mail/account/", json={"name": "b", "domain": "example.com",
                                            "password": "x"}),
        reader.post("/mail/account/alice@example.com/set_password/", json={"password": "x"}),
        reader.post("/mail/account/alice@example.com/disable_submission/"),
        reader.delete("/mail/account/alice@example.com/"),
        reader.post("/mail/alias/", json={"name": "o", "domain": "example.com",
                                          "to": "a@example.com"}),
    ):
        assert response.status_code == 403
        assert response.json["message"] == "this token is read-only"
    assert client.get("/mail/account/alice@example.com/").json["submission_disabled"] is False


def test_revoked_token_fails_at_once(client: Client, directory: Directory) -> None:
    store = TokenStore(directory, None)
    info, token = store.create(["example.com"])
    assert client.with_token(token).get("/mail/account/").status_code == 200
    store.revoke(info.id)
    assert client.with_token(token).get("/mail/account/").status_code == 401


def test_only_the_hash_is_stored(directory: Directory, slapd: ManagedSlapd) -> None:
    info, token = TokenStore(directory, None).create(["example.com"])
    secret = token.rsplit("_", 1)[1]
    dump = ldap_tool(slapd, "ldapsearch", "-LLL", "-b", f"ou=tokens,ou=gateway,{BASE_DN}").stdout
    assert f"cn: {info.id}" in dump
    assert secret not in dump and token not in dump


def test_failed_attempts_are_rate_limited_per_address(settings: Settings) -> None:
    app = create_app(settings.replace(auth_fail_limit=3, auth_fail_window=60))
    try:
        raw = app.test_client()
        attacker = {"REMOTE_ADDR": "127.0.0.9"}
        for _ in range(3):
            response = raw.get("/mail/account/", headers={"Authorization": "Bearer bad"},
                               environ_base=attacker)
            assert response.status_code == 401
        blocked = raw.get("/mail/account/", headers={"Authorization": "Bearer bad2"},
                          environ_base=attacker)
        assert blocked.status_code == 429
        assert int(blocked.headers["Retry-After"]) >= 1
        assert "message" in blocked.json
        # The real admin behind the same address (a proxy, a NAT) is not locked out.
        admin = raw.get("/mail/account/", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                        environ_base=attacker)
        assert admin.status_code == 200
        assert raw.get("/mail/account/", environ_base=attacker).status_code == 429
        other = raw.get("/mail/account/", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                        environ_base={"REMOTE_ADDR": "127.0.0.10"})
        assert other.status_code == 200
    finally:
        current(app).directory.close()


def _cli(slapd: ManagedSlapd, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MAILGATE_LDAP_URL=slapd.url, MAILGATE_LDAP_BASE_DN=BASE_DN,
               MAILGATE_LDAP_PASSWORD_FILE=str(slapd.password_file("gateway")),
               MAILGATE_ADMIN_TOKEN=ADMIN_TOKEN)
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_token_cli_create_list_revoke(client: Client, slapd: ManagedSlapd) -> None:
    seed(client)
    created = _cli(slapd, "token", "create", "--domain", "example.org", "--read-only",
                   "--description", "monitoring")
    assert created.returncode == 0, created.stderr
    token = json.loads(created.stdout)
    assert token["domains"] == ["example.org"] and token["read_only"] is True
    reader = client.with_token(token["token"])
    assert reader.get("/mail/account/").json["results"][0]["id"] == "alice@example.org"
    listed = _cli(slapd, "token", "list")
    assert token["id"] in listed.stdout and "monitoring" in listed.stdout
    assert token["token"] not in listed.stdout
    assert _cli(slapd, "token", "revoke", token["id"]).returncode == 0
    assert reader.get("/mail/account/").status_code == 401
    again = _cli(slapd, "token", "revoke", token["id"])
    assert again.returncode == 1 and "no token" in again.stderr
    bad = _cli(slapd, "token", "create", "--domain", "not a domain")
    assert bad.returncode == 1 and "invalid domain" in bad.stderr


def test_bad_configuration_names_the_variable(slapd: ManagedSlapd) -> None:
    env = dict(os.environ, MAILGATE_LDAP_URL="http://nope", MAILGATE_ADMIN_TOKEN=ADMIN_TOKEN,
               MAILGATE_LDAP_PASSWORD="x")
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "token", "list"], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "MAILGATE_LDAP_URL" in result.stderr


def test_the_failure_count_is_one_per_deployment(settings: Settings, slapd: ManagedSlapd) -> None:
    # Two apps stand for two workers (or two gateway hosts) on one directory:
    # failures sent to either count together, and both refuse the next one.
    apps = [create_app(settings.replace(auth_fail_limit=4, auth_fail_window=60))
            for _ in range(2)]
    attacker = {"REMOTE_ADDR": "192.0.2.44"}
    try:
        clients = [app.test_client() for app in apps]
        for attempt in range(4):
            assert clients[attempt % 2].get(
                "/mail/account/", headers={"Authorization": "Bearer wrong"},
                environ_base=attacker).status_code == 401, attempt
        for client in clients:
            refused = client.get("/mail/account/", headers={"Authorization": "Bearer wrong"},
                                 environ_base=attacker)
            assert refused.status_code == 429
            assert 1 <= int(refused.headers["Retry-After"]) <= 61
        # The count is in the directory, where an operator can see and clear it.
        dump = ldap_tool(slapd, "ldapsearch", "-LLL", "-b", f"ou=gateway,{BASE_DN}",
                         "(cn=auth-failures 192.0.2.44)", "description").stdout
        assert dump.count("description:") == 4
        ldap_tool(slapd, "ldapdelete", f"cn=auth-failures 192.0.2.44,ou=gateway,{BASE_DN}")
        assert clients[0].get("/mail/account/", headers={"Authorization": "Bearer wrong"},
                              environ_base=attacker).status_code == 401
    finally:
        for app in apps:
            current(app).directory.close()


def test_the_original_clients_basic_auth_admin_and_token_with_curl(
        live_gateway: LiveGateway) -> None:
    """The original sat behind nginx Basic auth; its clients send user ``admin``
    and the token as password (``curl -u admin:TOKEN``), form bodies, and ask for
    pages of 10000. The same commands work against mailgate with its token."""

    def curl(*args: str) -> tuple[int, object]:
        done = subprocess.run(
            ["curl", "-sS", "--cacert", str(live_gateway.ca), "-u",
             f"admin:{live_gateway.admin_token}", "-o", "-", "-w", "\n%{http_code}", *args],
            capture_output=True, text=True, timeout=30, check=True)
        body, _, code = done.stdout.rpartition("\n")
        return int(code), json.loads(body) if body else None

    url = live_gateway.url
    code, made = curl(f"{url}/mail/account/", "-d", "name=alice", "-d", "domain=example.com",
                      "-d", "password=secret")
    assert code == 201 and made["id"] == "alice@example.com"  # type: ignore[index]
    code, page = curl(f"{url}/mail/account/?domain=example.com&page_size=10000")
    assert code == 200 and page["count"] == 1  # type: ignore[index]
    code, done = curl("-X", "POST", f"{url}/mail/account/alice@example.com/enable_subaddress/")
    assert code == 200 and done["subaddress_extension"] is True  # type: ignore[index]
    wrong = subprocess.run(["curl", "-sS", "--cacert", str(live_gateway.ca), "-u",
                            "admin:not-the-token", "-o", "/dev/null", "-w", "%{http_code}",
                            f"{url}/mail/account/"], capture_output=True, text=True,
                           timeout=30, check=True)
    assert wrong.stdout == "401"
