"""Issue 10, items 3, 5, 6, 13 and 14: input that used to cause a 500, a 503,
a reflected Host, a second of CPU, or a scoped token granting too much."""

from __future__ import annotations

from typing import Any

import pytest

from gateway import passwords
from gateway.directory import Directory
from gateway.tokens import TokenStore

from tests.support.api import Client


def create(client: Client, **fields: Any) -> Any:
    body = {"name": "alice", "domain": "example.com", "password": "s3cret"} | fields
    return client.post("/mail/account/", json=body)


# -- item 5: no input produces a 500 ------------------------------------------


@pytest.mark.parametrize("route", ["/mail/account/", "/mail/alias/"])
@pytest.mark.parametrize("name", ["page", "page_size"])
@pytest.mark.parametrize("raw", ["²", "\u0661", "\u0663\u0663", "⁵", "\U0001d7d9"])
def test_unicode_digits_in_paging_are_400(client: Client, route: str, name: str,
                                          raw: str) -> None:
    response = client.get(route, query_string={name: raw})
    assert response.status_code == 400, response.get_data(as_text=True)
    assert name in response.json["errors"]


def test_deeply_nested_json_body_is_400(client: Client) -> None:
    depth = 100_000
    body = '{"name": ' + "[" * depth + "]" * depth + "}"
    response = client.post("/mail/account/", data=body, content_type="application/json")
    assert response.status_code == 400, response.get_data(as_text=True)[:300]
    assert "Traceback" not in response.get_data(as_text=True)
    assert client.get("/mail/account/").json["count"] == 0


@pytest.mark.parametrize("path,field", [
    ("/mail/account/", "password"),
    ("/mail/account/alice@example.com/set_password/", "password"),
    ("/mail/account/", "name"),
    ("/mail/alias/", "to"),
])
def test_lone_surrogates_are_400_naming_the_field(client: Client, path: str,
                                                  field: str) -> None:
    if path != "/mail/account/" or field != "password":
        assert create(client).status_code == 201
    body = {"/mail/account/": {"name": "bob", "domain": "example.com", "password": "pw"},
            "/mail/alias/": {"name": "office", "domain": "example.com", "to": "a@b.example"},
            }.get(path, {"password": "pw"})
    raw = __import__("json").dumps(body).replace(
        f'"{field}": "{body[field]}"', f'"{field}": "x\\ud800y"')
    assert "\\ud800" in raw
    response = client.post(path, data=raw, content_type="application/json")
    assert response.status_code == 400, response.get_data(as_text=True)[:300]
    assert field in response.json["errors"]


# -- item 6: a page beyond anything slapd can count is 404, never 503 ----------


@pytest.mark.parametrize("page,page_size", [("999999999", "100"), ("999999999", "10000"),
                                            ("2147483647", "1"), ("21474837", "100"),
                                            ("214749", "10000")])
def test_huge_page_numbers_are_404_not_503(client: Client, page: str, page_size: str) -> None:
    assert create(client).status_code == 201
    response = client.get("/mail/account/", query_string={"page": page, "page_size": page_size})
    assert response.status_code in (400, 404), response.get_data(as_text=True)
    assert "Retry-After" not in response.headers
    assert "page" in response.json["errors"]
    aliases = client.get("/mail/alias/", query_string={"page": page, "page_size": page_size})
    assert aliases.status_code in (400, 404), aliases.get_data(as_text=True)


# -- item 14: a bounded password length ----------------------------------------


def test_passwords_longer_than_the_limit_are_400_with_the_number(client: Client) -> None:
    limit = passwords.MAX_PLAIN
    assert limit <= 256
    too_long = "p" * (limit + 1)
    response = create(client, password=too_long)
    assert response.status_code == 400
    assert str(limit) in response.json["errors"]["password"]
    assert client.get("/mail/account/alice@example.com/").status_code == 404
    assert create(client, password="p" * limit).status_code == 201
    changed = client.post("/mail/account/alice@example.com/set_password/",
                          json={"password": too_long})
    assert changed.status_code == 400 and str(limit) in changed.json["errors"]["password"]
    # Multi-byte characters cost per octet: the octet bound holds too.
    wide = "\U0001f600" * (passwords.MAX_PLAIN_OCTETS // 4 + 1)
    assert len(wide) <= limit
    response = client.post("/mail/account/alice@example.com/set_password/",
                           json={"password": wide})
    assert response.status_code == 400
    assert str(passwords.MAX_PLAIN_OCTETS) in response.json["errors"]["password"]


def test_crypt_hashes_from_the_sync_are_bounded() -> None:
    yescrypt = "$y$j9T$" + "F" * 2000 + "$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7"
    with pytest.raises(ValueError, match=str(passwords.MAX_HASH)):
        passwords.check_crypt_hash(yescrypt)


# -- item 3: a scoped token grants sending only as its own domains ----------------


@pytest.fixture
def tenant_a(client: Client, directory: Directory) -> Client:
    assert create(client, domain="tenant-a.example").status_code == 201
    assert create(client, domain="tenant-b.example", name="ceo").status_code == 201
    _info, token = TokenStore(directory, None).create(["tenant-a.example", "Tenant-A2.example"])
    return client.with_token(token)


@pytest.mark.parametrize("whitelist", [
    "*", "ceo@tenant-b.example", "tenant-b.example", "office@tenant-a.example,tenant-b.example",
    "sub.tenant-a.example", "CEO@Tenant-B.Example"])
def test_scoped_token_cannot_whitelist_outside_its_domains(
        tenant_a: Client, client: Client, whitelist: str) -> None:
    created = tenant_a.post("/mail/account/", json={
        "name": "bob", "domain": "tenant-a.example", "password": "pw",
        "spoofing_whitelist": whitelist})
    assert created.status_code == 403, created.json
    assert "spoofing_whitelist" in created.json["errors"]
    assert client.get("/mail/account/bob@tenant-a.example/").status_code == 404
    changed = tenant_a.post("/mail/account/alice@tenant-a.example/set_spoofing_whitelist/",
                            json={"spoofing_whitelist": whitelist})
    assert changed.status_code == 403, changed.json
    assert "spoofing_whitelist" in changed.json["errors"]
    stored = client.get("/mail/account/alice@tenant-a.example/").json
    assert stored["spoofing_whitelist"] == ""


def test_scoped_token_may_whitelist_inside_its_domains(tenant_a: Client,
                                                       client: Client) -> None:
    inside = "office@tenant-a.example,tenant-a2.example,Info@TENANT-A.example"
    created = tenant_a.post("/mail/account/", data={
        "name": "bob", "domain": "tenant-a.example", "password": "pw",
        "spoofing_whitelist": inside})
    assert created.status_code == 201, created.json
    assert created.json["spoofing_whitelist"] == \
        "office@tenant-a.example,tenant-a2.example,info@tenant-a.example"
    changed = tenant_a.post("/mail/account/bob@tenant-a.example/set_spoofing_whitelist/",
                            json={"spoofing_whitelist": "tenant-a.example"})
    assert changed.status_code == 200
    # Invalid input is still a 400 naming the field, not a 403.
    bad = tenant_a.post("/mail/account/bob@tenant-a.example/set_spoofing_whitelist/",
                        json={"spoofing_whitelist": "not a domain!"})
    assert bad.status_code == 400 and "spoofing_whitelist" in bad.json["errors"]
    # The admin token is unrestricted.
    admin = client.post("/mail/account/bob@tenant-a.example/set_spoofing_whitelist/",
                        json={"spoofing_whitelist": "*"})
    assert admin.status_code == 200 and admin.json["spoofing_whitelist"] == "*"


# -- item 13, corrected by issue 20 (SPEC section 9): absolute links, never to a foreign Host


def _three_accounts(client: Client) -> None:
    for name in ("a1", "a2", "a3"):
        assert create(client, name=name).status_code == 201


def test_page_links_are_absolute_and_never_to_a_foreign_host(client: Client) -> None:
    _three_accounts(client)
    # The test client's Host (localhost) is one of the gateway's names here.
    page = client.get("/mail/account/?page_size=1&page=2",
                      headers={"X-Forwarded-Host": "evil.example"}).json
    assert page["next"] == "http://localhost/mail/account/?page_size=1&page=3"
    assert page["previous"] == "http://localhost/mail/account/?page_size=1&page=1"
    for host in ("evil.example", "evil.example:8443", "localhost.evil.example",
                 "localhost@evil.example", "[::2]:8443", "exa mple", "", "localhost:99999"):
        answer = client.get("/mail/account/?page_size=1&page=2", headers={"Host": host})
        assert answer.status_code == 400, host
        assert "Host" in answer.json["errors"] and "evil" not in answer.get_data(as_text=True)


@pytest.mark.parametrize(("host", "listen", "allowed", "served"), [
    ("127.0.0.1:8443", "127.0.0.1:8443", (), True),
    ("localhost:8443", "127.0.0.1:8443", (), True),
    ("[::1]:8443", "127.0.0.1:8443", (), True),
    ("localhost:8444", "127.0.0.1:8443", (), False),
    ("192.0.2.1:8443", "0.0.0.0:8443", (), False),
    ("localhost:8443", "0.0.0.0:8443", (), True),
    ("[::1]:8443", "[::]:8443", (), True),
    ("api.example.com", "0.0.0.0:8443", ("api.example.com",), True),
    ("API.Example.com:9000", "0.0.0.0:8443", ("api.example.com",), True),
    ("api.example.com", "0.0.0.0:8443", ("api.example.com:8443",), False),
    ("api.example.com:8443", "0.0.0.0:8443", ("api.example.com:8443",), True),
    ("[2001:db8::1]:8443", "[2001:db8::1]:8443", (), True),
    ("api.example.com.evil", "0.0.0.0:8443", ("api.example.com",), False),
])
def test_the_gateway_names(host: str, listen: str, allowed: tuple[str, ...],
                           served: bool) -> None:
    from gateway.api.models import serves_host

    assert serves_host(host.lower(), "https", listen, allowed) is served


def test_allowed_hosts_are_validated() -> None:
    from gateway.settings import ConfigError, Settings

    assert Settings.from_env({"MAILGATE_ALLOWED_HOSTS": "API.example.com, [::1]:8443"}) \
        .allowed_hosts == ("api.example.com", "[::1]:8443")
    for bad in ("https://api.example.com", "a.example:x", "user@a.example", "a.example/x"):
        with pytest.raises(ConfigError, match="MAILGATE_ALLOWED_HOSTS"):
            Settings.from_env({"MAILGATE_ALLOWED_HOSTS": bad})


def test_page_links_use_the_public_url(settings: Any) -> None:
    from gateway.app import create_app

    app = create_app(settings.replace(public_url="https://mail-api.example.com/gw"))
    try:
        client = Client(app)
        _three_accounts(client)
        page = client.get("/mail/alias/?page_size=1", headers={"Host": "evil.example"}).json
        assert page["next"] is None
        page = client.get("/mail/account/?page_size=1", headers={"Host": "evil.example"}).json
        assert page["next"] == "https://mail-api.example.com/gw/mail/account/?page_size=1&page=2"
    finally:
        app.extensions["mailgate"].directory.close()


@pytest.mark.parametrize("value,ok", [
    ("https://mail-api.example.com", "https://mail-api.example.com"),
    ("https://mail-api.example.com:8443/gw/", "https://mail-api.example.com:8443/gw"),
    ("ftp://x.example", None), ("https://", None), ("https://x.example/?a=b", None),
    ("https://u:p@x.example", None), ("https://x.example:99999", None), ("x.example", None)])
def test_public_url_is_validated(value: str, ok: str | None) -> None:
    from gateway.settings import ConfigError, Settings

    if ok is None:
        with pytest.raises(ConfigError, match="MAILGATE_PUBLIC_URL"):
            Settings.from_env({"MAILGATE_PUBLIC_URL": value})
    else:
        assert Settings.from_env({"MAILGATE_PUBLIC_URL": value}).public_url == ok
