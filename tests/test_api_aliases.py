"""The alias routes of SPEC.md section 1, and the seed's example."""

from __future__ import annotations

import pytest

from gateway.slapd import ManagedSlapd

from tests.support.api import Client
from tests.support.constants import BASE_DN
from tests.support.slapd import ldap_tool, mail_entry


def test_seed_example_alice_bob_office(client: Client, slapd: ManagedSlapd) -> None:
    for name in ("alice", "bob"):
        assert client.post("/mail/account/", json={"name": name, "domain": "example.com",
                                                   "password": f"{name}-pw"}).status_code == 201
    office = client.post("/mail/alias/", json={"name": "office", "domain": "example.com",
                                                "to": "alice@example.com,bob@example.com"})
    assert office.status_code == 201
    assert office.json == {"id": "office@example.com", "name": "office",
                           "domain": "example.com", "to": "alice@example.com,bob@example.com"}
    accounts = client.get("/mail/account/?domain=example.com").json
    assert [a["id"] for a in accounts["results"]] == ["alice@example.com", "bob@example.com"]
    aliases = client.get("/mail/alias/").json
    assert aliases["count"] == 1 and aliases["results"][0]["id"] == "office@example.com"
    entry = ldap_tool(slapd, "ldapsearch", "-LLL", "-b",
                      f"mail=office@example.com,dc=example.com,ou=domains,{BASE_DN}",
                      "-s", "base").stdout
    assert "objectClass: mailgateAlias" in entry
    assert "mailgateAliasTarget: alice@example.com" in entry
    assert "mailgateAliasTarget: bob@example.com" in entry


def test_alias_crud(client: Client) -> None:
    created = client.post("/mail/alias/", data={"name": "Sales", "domain": "Example.com",
                                                "to": "Ext@Partner.example, me@example.com"})
    assert created.status_code == 201
    assert created.json["to"] == "ext@partner.example,me@example.com"
    assert client.get("/mail/alias/SALES@example.com/").json["id"] == "sales@example.com"
    updated = client.put("/mail/alias/sales@example.com/", json={"to": "one@example.net"})
    assert updated.status_code == 200 and updated.json["to"] == "one@example.net"
    form = client.put("/mail/alias/sales@example.com/", data={"to": "a@x.example,b@x.example"})
    assert form.status_code == 200 and form.json["to"] == "a@x.example,b@x.example"
    assert client.get("/mail/alias/sales@example.com/").json["to"] == "a@x.example,b@x.example"
    assert client.delete("/mail/alias/sales@example.com/").status_code == 204
    assert client.get("/mail/alias/sales@example.com/").status_code == 404
    assert client.delete("/mail/alias/sales@example.com/").status_code == 404
    assert client.put("/mail/alias/sales@example.com/", json={"to": "x@y.example"}
                      ).status_code == 404


# The rules for each field are in test_mail.py; these check the 400 answer.
@pytest.mark.parametrize(("body", "field"), [
    ({"domain": "example.com", "to": "a@example.com"}, "name"),
    ({"name": "x", "domain": "example.com", "to": "x@example.com"}, "to"),
    ({"name": "x", "domain": "example.com", "to": ["a@example.com"]}, "to"),
    ({"name": "x", "domain": "example.com", "to": "a@example.com", "extra": ""}, "extra"),
])
def test_invalid_alias_input(client: Client, body: dict[str, object], field: str) -> None:
    response = client.post("/mail/alias/", json=body)
    assert response.status_code == 400, response.json
    assert field in response.json["errors"]
    assert client.get("/mail/alias/").json["count"] == 0


def test_put_validation_changes_nothing(client: Client) -> None:
    assert client.post("/mail/alias/", json={"name": "x", "domain": "example.com",
                                             "to": "a@example.com"}).status_code == 201
    for body in ({}, {"to": ""}, {"to": "nope"}, {"to": "a@example.com", "name": "y"},
                 {"to": "x@example.com"}):
        assert client.put("/mail/alias/x@example.com/", json=body).status_code == 400, body
    assert client.get("/mail/alias/x@example.com/").json["to"] == "a@example.com"


def test_an_address_may_be_an_account_and_an_alias_in_one_entry(
        client: Client, slapd: ManagedSlapd) -> None:
    assert client.post("/mail/account/", json={"name": "a", "domain": "example.com",
                                               "password": "x"}).status_code == 201
    made = client.post("/mail/alias/", json={"name": "A", "domain": "EXAMPLE.com",
                                             "to": "b@example.com"})
    assert made.status_code == 201, made.json
    assert made.json == {"id": "a@example.com", "name": "a", "domain": "example.com",
                         "to": "b@example.com"}
    found = mail_entry(slapd, "a@example.com", "structuralObjectClass")
    assert len(found["dn"]) == 1
    assert sorted(found["objectClass"]) == ["mailgateAccount", "mailgateForwarding"]
    # A second alias or account of the address: 409.
    again = client.post("/mail/alias/", json={"name": "a", "domain": "example.com",
                                              "to": "c@example.com"})
    assert again.status_code == 409 and "alias" in again.json["message"]
    assert client.post("/mail/account/", json={"name": "a", "domain": "example.com",
                                               "password": "y"}).status_code == 409
    # Each in its own list; alias routes act on the forwarding only.
    assert [a["id"] for a in client.get("/mail/account/").json["results"]] == ["a@example.com"]
    assert [a["id"] for a in client.get("/mail/alias/").json["results"]] == ["a@example.com"]
    assert client.get("/mail/alias/?domain=example.com&page=last").json["count"] == 1
    put = client.put("/mail/alias/a@example.com/", json={"to": "c@example.com,d@example.com"})
    assert put.status_code == 200 and put.json["to"] == "c@example.com,d@example.com"
    assert client.get("/mail/account/a@example.com/").json["password"]
    assert client.delete("/mail/alias/a@example.com/").status_code == 204
    assert client.get("/mail/alias/a@example.com/").status_code == 404
    assert client.get("/mail/account/a@example.com/").status_code == 200
    assert mail_entry(slapd, "a@example.com")["objectClass"] == ["mailgateAccount"]
    assert "mailgateAliasTarget" not in mail_entry(slapd, "a@example.com")
    # Deleting the account keeps the forwarding: the entry becomes a plain alias.
    assert client.post("/mail/alias/", json={"name": "a", "domain": "example.com",
                                             "to": "b@example.com"}).status_code == 201
    assert client.delete("/mail/account/a@example.com/").status_code == 204
    assert client.get("/mail/account/a@example.com/").status_code == 404
    assert client.get("/mail/alias/a@example.com/").json["to"] == "b@example.com"
    found = mail_entry(slapd, "a@example.com", "structuralObjectClass")
    assert found["objectClass"] == ["mailgateAlias"]
    assert found["structuralObjectClass"] == ["mailgateAlias"]
    assert "userPassword" not in found
    # ... and an account made for an alias's address gets the mailbox beside it.
    made = client.post("/mail/account/", json={"name": "a", "domain": "example.com",
                                               "password": "z", "subaddress_extension": True})
    assert made.status_code == 201 and made.json["subaddress_extension"] is True
    assert client.get("/mail/alias/a@example.com/").json["to"] == "b@example.com"
    found = mail_entry(slapd, "a@example.com", "structuralObjectClass")
    assert sorted(found["objectClass"]) == ["mailgateAccount", "mailgateForwarding"]
    assert found["structuralObjectClass"] == ["mailgateAccount"]
    assert found["mailgateOrigin"] == ["api"]
    # Both gone: the entry (and the domain entry the API made) is gone.
    assert client.delete("/mail/account/a@example.com/").status_code == 204
    assert client.delete("/mail/alias/a@example.com/").status_code == 204
    assert mail_entry(slapd, "a@example.com", "structuralObjectClass") == {}


def test_the_catch_all_alias(client: Client) -> None:
    made = client.post("/mail/alias/", json={"name": "*", "domain": "example.com",
                                             "to": "b@example.org"})
    assert made.status_code == 201 and made.json["id"] == "*@example.com"
    assert client.get("/mail/alias/*@example.com/").json["to"] == "b@example.org"
    assert client.post("/mail/account/", json={"name": "*", "domain": "example.com",
                                               "password": "x"}).status_code == 400
    assert client.delete("/mail/alias/*@Example.com/").status_code == 204


def test_alias_list_pages_and_domain_filter(client: Client) -> None:
    for i in range(5):
        assert client.post("/mail/alias/", json={"name": f"list{i}", "domain": "example.net",
                                                 "to": "a@example.com"}).status_code == 201
    assert client.post("/mail/alias/", json={"name": "other", "domain": "example.org",
                                             "to": "a@example.com"}).status_code == 201
    page = client.get("/mail/alias/?domain=example.net&page_size=2&page=3").json
    assert page["count"] == 5 and [a["id"] for a in page["results"]] == ["list4@example.net"]
    assert page["next"] is None and "page=2" in page["previous"]
    assert client.get("/mail/alias/?page_size=4").json["count"] == 6
