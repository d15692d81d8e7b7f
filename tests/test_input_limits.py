"""Issue 10, items 3, 5, 6, 13 and 14: input that used to cause a 500, a 503,
a reflected Host, a second of CPU, or a scoped token granting too much."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import Client


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
