"""The account routes of SPEC.md section 1, against the real slapd."""

from __future__ import annotations

import time
from typing import Any

import pytest
from passlib.hash import sha512_crypt

from gateway.directory import Directory, views

from tests.support.api import Client
from tests.support.constants import BASE_DN

ACCOUNT_KEYS = {"id", "name", "domain", "password", "spoofing_whitelist", "submission_disabled",
                "subaddress_extension", "quota"}


def create(client: Client, **fields: Any) -> Any:
    body = {"name": "alice", "domain": "example.com", "password": "s3cret"} | fields
    return client.post("/mail/account/", json=body)


def user_dn(address: str) -> str:
    return f"mail={address},dc={address.split('@')[1]},ou=domains,{BASE_DN}"


def test_create_returns_201_and_the_account(client: Client) -> None:
    response = create(client, name="Alice", domain="Example.COM")
    assert response.status_code == 201, response.json
    body = response.json
    assert set(body) == ACCOUNT_KEYS
    assert body["id"] == "alice@example.com"
    assert (body["name"], body["domain"]) == ("alice", "example.com")
    assert body["spoofing_whitelist"] == "" and body["submission_disabled"] is False
    assert body["password"].startswith("$6$rounds=1000$")
    assert sha512_crypt.verify("s3cret", body["password"])
    assert "s3cret" not in response.get_data(as_text=True)


def test_create_from_form_body(client: Client) -> None:
    response = client.post("/mail/account/", data={
        "name": "bob", "domain": "example.com", "password": "pw",
        "submission_disabled": "true", "spoofing_whitelist": "example.org"})
    assert response.status_code == 201, response.json
    assert response.json["submission_disabled"] is True
    assert response.json["spoofing_whitelist"] == "example.org"
    multipart = client.post("/mail/account/", data={
        "name": "carol", "domain": "example.com", "password": "pw"},
        content_type="multipart/form-data")
    assert multipart.status_code == 201, multipart.json


def test_idn_domain_in_the_body_and_in_the_url(client: Client) -> None:
    # How it is stored (A-label DNs): test_mail.test_idn_domains_are_stored_as_a_labels
    response = create(client, name="jurgen", domain="Bücher.example")
    assert response.status_code == 201
    assert response.json["id"] == "jurgen@xn--bcher-kva.example"
    assert client.get("/mail/account/jurgen@bücher.example/").status_code == 200


def test_the_password_set_through_the_api_binds_in_slapd(client: Client,
                                                         directory: Directory) -> None:
    assert create(client).status_code == 201
    dn = user_dn("alice@example.com")
    assert directory.compare_password(dn, "s3cret")
    assert not directory.compare_password(dn, "wrong")
    changed = client.post("/mail/account/alice@example.com/set_password/",
                          json={"password": "n3w pässword"})
    assert changed.status_code == 200
    assert sha512_crypt.verify("n3w pässword", changed.json["password"])
    assert directory.compare_password(dn, "n3w pässword")
    assert not directory.compare_password(dn, "s3cret")


# The rules for each field are in test_mail.py; these check the 400 answer,
# a JSON type, and what only the HTTP layer knows (booleans in bodies, unknown fields).
@pytest.mark.parametrize(("body", "field"), [
    ({"domain": "example.com", "password": "x"}, "name"),
    ({"name": "a", "domain": "nodot", "password": "x"}, "domain"),
    ({"name": 5, "domain": "example.com", "password": "x"}, "name"),
    ({"name": "a", "domain": "example.com", "password": "x", "submission_disabled": "maybe"},
     "submission_disabled"),
    ({"name": "a", "domain": "example.com", "password": "x", "id": "a@example.com"}, "id"),
    ({"name": "a", "domain": "example.com", "password": "x", "quota": -5}, "quota"),
    ({"name": "a", "domain": "example.com", "password": "x", "size": 5}, "size"),
])
def test_invalid_input_is_400_naming_the_field(client: Client, body: dict[str, Any],
                                               field: str) -> None:
    response = client.post("/mail/account/", json=body)
    assert response.status_code == 400, response.json
    assert field in response.json["errors"], response.json
    assert response.json["message"]
    assert client.get("/mail/account/").json["count"] == 0


@pytest.mark.parametrize(("data", "content_type", "status"), [
    ("{not json", "application/json", 400),
    ("[1, 2]", "application/json", 400),
    ('"text"', "application/json", 400),
    ("\xff\xfe", "application/json", 400),
    ("name=a", "text/plain", 415),
    ("<xml/>", "application/xml", 415),
])
def test_malformed_bodies(client: Client, data: str, content_type: str, status: int) -> None:
    response = client.post("/mail/account/", data=data, content_type=content_type)
    assert response.status_code == status
    assert "message" in response.json


def test_oversized_body_is_413_not_500(client: Client) -> None:
    response = client.post("/mail/account/", json={"name": "a", "domain": "example.com",
                                                   "password": "x" * (2 * 1024 * 1024)})
    assert response.status_code == 413
    assert "message" in response.json


def test_duplicate_address_is_409(client: Client) -> None:
    # Which addresses clash: test_mail.test_an_address_is_taken_once_whatever_its_case_or_kind
    assert create(client).status_code == 201
    again = create(client, name="ALICE")
    assert again.status_code == 409
    assert "alice@example.com" in again.json["message"]
    # An alias of the same address is no duplicate (SPEC.md section 7); a second one is.
    assert client.post("/mail/alias/", json={"name": "alice", "domain": "example.com",
                                             "to": "bob@example.com"}).status_code == 201
    assert client.post("/mail/alias/", json={"name": "alice", "domain": "example.com",
                                             "to": "bob@example.com"}).status_code == 409
    assert create(client, name="ALICE").status_code == 409


def test_get_is_case_insensitive_and_unknown_is_404(client: Client) -> None:
    assert create(client).status_code == 201
    got = client.get("/mail/account/Alice@Example.COM/")
    assert got.status_code == 200 and got.json["id"] == "alice@example.com"
    for missing in ("bob@example.com", "not-an-address", "a@b", "%00", "x@(objectClass=*)"):
        response = client.get(f"/mail/account/{missing}/")
        assert response.status_code == 404, missing
        assert "message" in response.json


def test_alias_is_not_an_account(client: Client) -> None:
    assert client.post("/mail/alias/", json={"name": "office", "domain": "example.com",
                                             "to": "x@example.org"}).status_code == 201
    assert client.get("/mail/account/office@example.com/").status_code == 404
    assert client.delete("/mail/account/office@example.com/").status_code == 404
    assert client.get("/mail/alias/office@example.com/").status_code == 200


def test_delete_is_204_then_404(client: Client) -> None:
    assert create(client).status_code == 201
    deleted = client.delete("/mail/account/alice@example.com/")
    assert deleted.status_code == 204 and deleted.get_data() == b""
    assert client.get("/mail/account/alice@example.com/").status_code == 404
    assert client.delete("/mail/account/alice@example.com/").status_code == 404


def test_submission_toggles(client: Client) -> None:
    assert create(client).status_code == 201
    off = client.post("/mail/account/alice@example.com/disable_submission/")
    assert off.status_code == 200 and off.json["submission_disabled"] is True
    assert client.get("/mail/account/alice@example.com/").json["submission_disabled"] is True
    on = client.post("/mail/account/alice@example.com/enable_submission/")
    assert on.status_code == 200 and on.json["submission_disabled"] is False
    assert client.post("/mail/account/nobody@example.com/disable_submission/").status_code == 404
    unknown = client.post("/mail/account/alice@example.com/disable_submission/",
                          json={"really": True})
    assert unknown.status_code == 400


def test_set_spoofing_whitelist(client: Client) -> None:
    assert create(client).status_code == 201
    url = "/mail/account/alice@example.com/set_spoofing_whitelist/"
    done = client.post(url, json={"spoofing_whitelist": "Office@example.com,skylime.net"})
    assert done.status_code == 200
    assert done.json["spoofing_whitelist"] == "office@example.com,skylime.net"
    assert client.post(url, data={"spoofing_whitelist": "*"}).json["spoofing_whitelist"] == "*"
    assert client.post(url, json={"spoofing_whitelist": ""}).json["spoofing_whitelist"] == ""
    bad = client.post(url, json={"spoofing_whitelist": "x@@y"})
    assert bad.status_code == 400 and "spoofing_whitelist" in bad.json["errors"]
    assert client.post(url, json={"spoofing_whitelist": None}).status_code == 200
    # No field at all clears the list too (as the original service did), in any body form.
    for empty in ({"json": {}}, {"data": {}}, {}):
        client.post(url, json={"spoofing_whitelist": "*"})
        cleared = client.post(url, **empty)
        assert cleared.status_code == 200 and cleared.json["spoofing_whitelist"] == "", empty
    assert client.get("/mail/account/alice@example.com/").json["spoofing_whitelist"] == ""
    assert client.post(url, json={"spoofing_whitelist": 5}).status_code == 400


def test_set_password_validation(client: Client) -> None:
    assert create(client).status_code == 201
    url = "/mail/account/alice@example.com/set_password/"
    before = client.get("/mail/account/alice@example.com/").json["password"]
    for body in ({}, {"password": ""}, {"password": None}, {"password": 12},
                 {"password": "x", "other": 1}):
        response = client.post(url, json=body)
        assert response.status_code == 400, body
    assert client.get("/mail/account/alice@example.com/").json["password"] == before
    assert client.post("/mail/account/nobody@example.com/set_password/",
                       json={"password": "x"}).status_code == 404


def test_list_envelope_order_filter_and_pages(client: Client) -> None:
    for name, domain in [("zed", "example.com"), ("alice", "example.com"), ("bob", "example.org"),
                         ("carol", "example.com"), ("dave", "example.org")]:
        assert create(client, name=name, domain=domain).status_code == 201
    everything = client.get("/mail/account/").json
    assert set(everything) == {"count", "next", "previous", "results"}
    assert everything["count"] == 5 and everything["next"] is None
    assert [a["id"] for a in everything["results"]] == sorted(a["id"] for a in
                                                             everything["results"])
    only = client.get("/mail/account/?domain=Example.ORG").json
    assert [a["id"] for a in only["results"]] == ["bob@example.org", "dave@example.org"]
    first = client.get("/mail/account/?page_size=2").json
    assert [a["id"] for a in first["results"]] == ["alice@example.com", "bob@example.org"]
    assert first["previous"] is None and "page=2" in first["next"]
    assert "page_size=2" in first["next"]
    second = client.get("/mail/account/?page_size=2&page=2").json
    assert [a["id"] for a in second["results"]] == ["carol@example.com", "dave@example.org"]
    assert "page=1" in second["previous"] and "page=3" in second["next"]
    third = client.get("/mail/account/?page_size=2&page=3").json
    assert [a["id"] for a in third["results"]] == ["zed@example.com"]
    assert third["next"] is None
    assert client.get("/mail/account/?page_size=2&page=4").status_code == 404
    assert client.get("/mail/account/?page_size=10000").json["count"] == 5
    for bad in ("page=0", "page=-1", "page=x", "page=Last", "page_size=0",
                "page_size=1e3", "domain=not_a_domain"):
        response = client.get(f"/mail/account/?{bad}")
        assert response.status_code == 400, bad
        assert response.json["errors"], bad


def test_page_last_and_page_size_above_the_maximum(client: Client) -> None:
    for name in ("a", "b", "c", "d", "e"):
        assert create(client, name=name).status_code == 201
    last = client.get("/mail/account/?page_size=2&page=last").json
    assert [a["name"] for a in last["results"]] == ["e"] and last["count"] == 5
    assert last["next"] is None and "page=2" in last["previous"]
    exact = client.get("/mail/account/?page_size=5&page=last").json
    assert len(exact["results"]) == 5 and exact["previous"] is None
    assert client.get("/mail/alias/?page=last").json == {
        "count": 0, "next": None, "previous": None, "results": []}
    assert client.get("/mail/account/?domain=nothing.example&page=last").json["count"] == 0
    # Clamped to 10000, not refused (the original's client asks for what it likes).
    big = client.get("/mail/account/?page_size=20000")
    assert big.status_code == 200 and big.json["count"] == 5 and big.json["next"] is None
    assert client.get("/mail/account/?page_size=999999999").status_code == 200


def test_empty_list(client: Client) -> None:
    empty = client.get("/mail/account/").json
    assert empty == {"count": 0, "next": None, "previous": None, "results": []}
    assert client.get("/mail/account/?domain=nothing.example").json["count"] == 0


def test_routes_keep_their_trailing_slash(client: Client) -> None:
    assert client.get("/mail/account").status_code == 308
    assert client.get("/mail/nothing/").status_code == 404
    assert client.put("/mail/account/").status_code == 405
    assert client.put("/mail/account/").json["message"]


def test_later_pages_continue_the_snapshot_of_page_one(client: Client) -> None:
    """Paging is like a cursor: page 1 sorts afresh, later pages continue that
    sorted snapshot, so an entry added meanwhile shifts nothing mid-listing."""
    for name in ("bob", "carol", "dave"):
        assert create(client, name=name).status_code == 201
    first = client.get("/mail/account/?page_size=2").json
    assert [a["name"] for a in first["results"]] == ["bob", "carol"]
    assert create(client, name="alice").status_code == 201
    second = client.get("/mail/account/?page_size=2&page=2").json
    assert [a["name"] for a in second["results"]] == ["dave"]
    again = client.get("/mail/account/?page_size=2").json
    assert again["count"] == 4
    assert [a["name"] for a in again["results"]] == ["alice", "bob"]
    # A deleted entry is not shown by a continued page.
    assert client.delete("/mail/account/dave@example.com/").status_code == 204
    assert create(client, name="zed").status_code == 201
    tail = client.get("/mail/account/?page_size=2&page=2").json
    assert [a["name"] for a in tail["results"]] == ["carol"]


def test_a_listing_that_keeps_paging_keeps_its_snapshot(
        client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """The view lives VIEW_TTL after its last page, not after page 1: a long
    listing (a million accounts take a minute) keeps its cursor; an idle one is
    closed and the next continued page sorts afresh."""
    ttl = 2.0
    monkeypatch.setattr(views, "VIEW_TTL", ttl)
    for name in ("bob", "carol", "dave", "erin"):
        assert create(client, name=name).status_code == 201
    assert names(client.get("/mail/account/?page_size=1").json) == ["bob"]
    assert create(client, name="alice").status_code == 201
    # Three more pages, each within the TTL of the one before but the whole
    # walk longer than the TTL since page 1: still page 1's snapshot.
    walked = []
    started = time.monotonic()
    for page in (2, 3, 4):
        time.sleep(ttl * 0.4)
        walked += names(client.get(f"/mail/account/?page_size=1&page={page}").json)
    assert time.monotonic() - started > ttl
    assert walked == ["carol", "dave", "erin"]
    # Idle for longer than the TTL: the view is gone, page 2 sorts afresh.
    time.sleep(ttl * 1.25)
    assert names(client.get("/mail/account/?page_size=1&page=2").json) == ["bob"]


def names(page: dict[str, Any]) -> list[str]:
    return [a["name"] for a in page["results"]]


def test_subaddress_extension_read_written_at_create_and_toggled(client: Client) -> None:
    assert create(client).json["subaddress_extension"] is False
    made = create(client, name="bob", subaddress_extension=True)
    assert made.status_code == 201 and made.json["subaddress_extension"] is True
    form = client.post("/mail/account/", data={"name": "carol", "domain": "example.com",
                                                "password": "pw", "subaddress_extension": "on"})
    assert form.status_code == 201 and form.json["subaddress_extension"] is True
    bad = create(client, name="dave", subaddress_extension="maybe")
    assert bad.status_code == 400 and "subaddress_extension" in bad.json["errors"]
    assert client.get("/mail/account/dave@example.com/").status_code == 404
    url = "/mail/account/Alice@Example.com/"
    done = client.post(url + "enable_subaddress/")
    assert done.status_code == 200 and done.json["subaddress_extension"] is True
    assert done.json["id"] == "alice@example.com"
    assert client.get(url).json["subaddress_extension"] is True
    listed = client.get("/mail/account/").json["results"]
    assert [a["subaddress_extension"] for a in listed] == [True, True, True]
    assert client.post(url + "disable_subaddress/").json["subaddress_extension"] is False
    assert client.post(url + "disable_subaddress/").status_code == 200   # idempotent
    assert client.post("/mail/account/nobody@example.com/enable_subaddress/").status_code == 404
    unknown = client.post(url + "enable_subaddress/", json={"on": True})
    assert unknown.status_code == 400 and unknown.json["errors"] == {"on": "unknown field"}


def test_an_account_named_star_is_refused(client: Client) -> None:
    refused = create(client, name="*")
    assert refused.status_code == 400
    assert refused.json["errors"] == {"name": "'*' is reserved for the catch-all alias"}
    assert client.get("/mail/account/*@example.com/").status_code == 404
    # Other local parts with a "*" are ordinary names.
    assert create(client, name="a*b").status_code == 201
