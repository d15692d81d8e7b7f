"""The domain rules of gateway/mail.py: MailDirectory against the real slapd.

What the API and the sync both rely on: normal forms, the validation that
names each bad field (Invalid), one entry per address (Conflict), ids in any
case, IDN domains as A-labels, domain entries made and removed with their
addresses, paging. How the API maps these to HTTP is in test_api_*.py.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from passlib.hash import sha512_crypt

from gateway.directory import Directory
from gateway.errors import Conflict, Invalid, NotFound
from gateway.mail import MAX_PAGE_SIZE, MailDirectory
from gateway.slapd import ManagedSlapd

from tests.support.constants import BASE_DN, TEST_ROUNDS
from tests.support.slapd import ldap_tool

DOMAINS = f"ou=domains,{BASE_DN}"
ALICE = "alice@example.com"


def domain_dn(domain: str) -> str:
    return f"dc={domain},{DOMAINS}"


def address_dn(address: str) -> str:
    return f"mail={address},{domain_dn(address.rpartition('@')[2])}"


def entry(slapd: ManagedSlapd, dn: str) -> str | None:
    """The entry at ``dn`` as unwrapped LDIF, or None if there is none."""
    found = ldap_tool(slapd, "ldapsearch", "-LLL", "-o", "ldif-wrap=no", "-s", "base", "-b", dn,
                      check=False)
    return None if found.returncode == 32 else found.stdout


def alice(mail: MailDirectory, **changes: Any) -> Any:
    return mail.create_account(**({"name": "alice", "domain": "example.com", "password": "pw"}
                                  | changes))


# -- accounts ------------------------------------------------------------------------


def test_create_account_returns_the_account_in_normal_form(mail: MailDirectory) -> None:
    account = mail.create_account("Alice", "Example.COM", "s3cret")
    assert (account.id, account.name, account.domain) == (ALICE, "alice", "example.com")
    assert account.spoofing_whitelist == "" and account.submission_disabled is False
    assert account.origin == "api" and account.dn == address_dn(ALICE)
    assert account.password.startswith(f"$6$rounds={TEST_ROUNDS}$")
    assert sha512_crypt.verify("s3cret", account.password)
    assert mail.get_account(ALICE) == account


def test_create_account_stores_crypt_whitelist_flag_and_origin(mail: MailDirectory,
                                                               slapd: ManagedSlapd) -> None:
    account = alice(mail, spoofing_whitelist="Office@Example.com, skylime.net,SKYLIME.net",
                    submission_disabled=True, origin="sync")
    assert account.spoofing_whitelist == "office@example.com,skylime.net"
    stored = entry(slapd, address_dn(ALICE)) or ""
    assert "objectClass: mailgateAccount" in stored
    assert "mailgateSenderAllowed: office@example.com" in stored
    assert "mailgateSenderAllowed: skylime.net" in stored
    assert stored.count("mailgateSenderAllowed:") == 2
    assert "mailgateSubmissionDisabled: TRUE" in stored
    assert "mailgateOrigin: sync" in stored
    encoded = next(line.split(":: ")[1] for line in stored.splitlines()
                   if line.startswith("userPassword:: "))   # base64 because of '{'
    assert base64.b64decode(encoded) == f"{{CRYPT}}{account.password}".encode()
    assert mail.get_account(ALICE).origin == "sync"


def test_the_password_binds_in_slapd(mail: MailDirectory, directory: Directory) -> None:
    alice(mail, password="s3cret")
    assert directory.compare_password(address_dn(ALICE), "s3cret")
    assert not directory.compare_password(address_dn(ALICE), "wrong")


@pytest.mark.parametrize(("changes", "field"), [
    ({"name": None}, "name"),
    ({"domain": None}, "domain"),
    ({"password": None}, "password"),
    ({"password": ""}, "password"),
    ({"password": "a\x00b"}, "password"),
    ({"password": "x" * 4097}, "password"),
    ({"name": ""}, "name"),
    ({"name": "a b"}, "name"),
    ({"name": "a..b"}, "name"),
    ({"name": "jürgen"}, "name"),
    ({"name": "a" * 65}, "name"),
    ({"name": "a)(mail=*"}, "name"),
    ({"domain": "nodot"}, "domain"),
    ({"domain": "exa mple.com"}, "domain"),
    ({"domain": "example.com."}, "domain"),
    ({"domain": "example.123"}, "domain"),
    ({"domain": "-bad.example"}, "domain"),
    ({"spoofing_whitelist": "a b"}, "spoofing_whitelist"),
    ({"spoofing_whitelist": "*,x.org"}, "spoofing_whitelist"),
    ({"spoofing_whitelist": "x@@y"}, "spoofing_whitelist"),
    ({"name": 5}, "name"),
    ({"domain": ["example.com"]}, "domain"),
    ({"password": {"p": 1}}, "password"),
    ({"spoofing_whitelist": 3}, "spoofing_whitelist"),
])
def test_create_account_refuses_invalid_input_naming_the_field(
        mail: MailDirectory, changes: dict[str, Any], field: str) -> None:
    with pytest.raises(Invalid) as refused:
        alice(mail, **changes)
    assert set(refused.value.errors) == {field}, refused.value.errors
    assert refused.value.errors[field]
    assert mail.list_accounts(None).count == 0


def test_every_bad_field_is_named_at_once(mail: MailDirectory) -> None:
    with pytest.raises(Invalid) as refused:
        mail.create_account("(x)", "-", "")
    assert set(refused.value.errors) == {"name", "domain", "password"}


def test_an_address_longer_than_254_octets_is_refused(mail: MailDirectory) -> None:
    domain = ".".join(["d" * 63] * 3) + ".com"            # 195 octets, valid on its own
    with pytest.raises(Invalid) as refused:
        mail.create_account("a" * 64, domain, "pw")
    assert set(refused.value.errors) == {"name"}


def test_an_address_is_taken_once_per_kind_whatever_its_case(mail: MailDirectory) -> None:
    first = alice(mail)
    with pytest.raises(Conflict) as taken:
        mail.create_account("ALICE", "Example.COM", "other")
    assert ALICE in taken.value.message and "an account" in taken.value.message
    assert taken.value.errors == {"name": "address already in use"}
    # An address may be an account and an alias at once (SPEC.md section 7) ...
    mail.create_alias("alice", "example.com", "bob@example.com")
    # ... but not two of either.
    with pytest.raises(Conflict, match="an alias"):
        mail.create_alias("Alice", "example.com", "carol@example.com")
    mail.create_alias("office", "example.com", ALICE)
    with pytest.raises(Conflict, match="an alias"):
        mail.create_alias("Office", "example.com", "bob@example.com")
    assert mail.get_account(ALICE).password == first.password
    assert mail.get_alias(ALICE).to == "bob@example.com"
    assert mail.list_accounts(None).count == 1 and mail.list_aliases(None).count == 2


def test_ids_are_case_insensitive(mail: MailDirectory) -> None:
    created = alice(mail)
    assert mail.get_account("Alice@Example.COM") == created
    assert mail.set_submission_disabled("ALICE@example.com", True).submission_disabled
    changed = mail.set_password("alice@EXAMPLE.com", "new")
    assert changed.id == ALICE and sha512_crypt.verify("new", changed.password)
    assert mail.set_spoofing_whitelist("aLiCe@example.com", "*").spoofing_whitelist == "*"
    mail.delete_account("ALICE@EXAMPLE.COM")
    with pytest.raises(NotFound):
        mail.get_account(ALICE)


CALLS = {
    "get_account": lambda mail, i: mail.get_account(i),
    "set_password": lambda mail, i: mail.set_password(i, "x"),
    "set_submission_disabled": lambda mail, i: mail.set_submission_disabled(i, True),
    "set_spoofing_whitelist": lambda mail, i: mail.set_spoofing_whitelist(i, ""),
    "delete_account": lambda mail, i: mail.delete_account(i),
    "get_alias": lambda mail, i: mail.get_alias(i),
    "set_alias_targets": lambda mail, i: mail.set_alias_targets(i, "to@example.net"),
    "delete_alias": lambda mail, i: mail.delete_alias(i),
}


@pytest.mark.parametrize("entry_id", ["bob@example.com", "not-an-address", "a@b", "%00", "",
                                      "x@(objectClass=*)", "*@example.com", "a*@example.com"])
def test_unknown_or_malformed_ids_are_not_found(mail: MailDirectory, entry_id: str) -> None:
    alice(mail)
    mail.create_alias("office", "example.com", ALICE)
    for name, call in CALLS.items():
        with pytest.raises(NotFound):
            call(mail, entry_id)
            pytest.fail(f"{name}({entry_id!r}) found something")
    assert mail.list_accounts(None).count == 1 and mail.list_aliases(None).count == 1


def test_an_alias_is_not_an_account_nor_an_account_an_alias(mail: MailDirectory) -> None:
    alice(mail)
    mail.create_alias("office", "example.com", "x@example.org")
    for name in ("get_account", "set_password", "set_submission_disabled",
                 "set_spoofing_whitelist", "delete_account"):
        with pytest.raises(NotFound):
            CALLS[name](mail, "office@example.com")
    for name in ("get_alias", "set_alias_targets", "delete_alias"):
        with pytest.raises(NotFound):
            CALLS[name](mail, ALICE)
    assert mail.get_alias("office@example.com").to == "x@example.org"
    assert mail.get_account(ALICE).password


def test_set_password(mail: MailDirectory, directory: Directory) -> None:
    before = alice(mail, password="s3cret")
    after = mail.set_password(ALICE, "n3w pässword")
    assert after.password != before.password
    assert sha512_crypt.verify("n3w pässword", after.password)
    assert mail.get_account(ALICE) == after
    assert directory.compare_password(address_dn(ALICE), "n3w pässword")
    assert not directory.compare_password(address_dn(ALICE), "s3cret")


@pytest.mark.parametrize("password", [None, "", 12, "a\x00b", "x" * 4097])
def test_set_password_refuses_bad_passwords_and_changes_nothing(mail: MailDirectory,
                                                                password: object) -> None:
    before = alice(mail)
    with pytest.raises(Invalid) as refused:
        mail.set_password(ALICE, password)
    assert set(refused.value.errors) == {"password"}
    assert mail.get_account(ALICE).password == before.password


def test_set_submission_disabled(mail: MailDirectory, slapd: ManagedSlapd) -> None:
    alice(mail)
    assert mail.set_submission_disabled(ALICE, True).submission_disabled is True
    assert "mailgateSubmissionDisabled: TRUE" in (entry(slapd, address_dn(ALICE)) or "")
    for _ in range(2):  # enabling twice is no error
        assert mail.set_submission_disabled(ALICE, False).submission_disabled is False
    assert "mailgateSubmissionDisabled" not in (entry(slapd, address_dn(ALICE)) or "x")
    assert mail.get_account(ALICE).submission_disabled is False


@pytest.mark.parametrize(("value", "stored"), [
    ("Office@example.com,skylime.net, SKYLIME.net", "office@example.com,skylime.net"),
    ("*", "*"),
    (" * ", "*"),
    ("Bücher.example", "xn--bcher-kva.example"),
    ("", ""),
    (" , ", ""),
])
def test_set_spoofing_whitelist_stores_the_normal_form(mail: MailDirectory, value: str,
                                                       stored: str) -> None:
    alice(mail, spoofing_whitelist="old.example")
    assert mail.set_spoofing_whitelist(ALICE, value).spoofing_whitelist == stored
    assert mail.get_account(ALICE).spoofing_whitelist == stored


def test_set_spoofing_whitelist_without_a_value_clears_it(mail: MailDirectory) -> None:
    alice(mail, spoofing_whitelist="old.example")
    assert mail.set_spoofing_whitelist(ALICE, None).spoofing_whitelist == ""


@pytest.mark.parametrize("value", ["x@@y", "*,x.org", "a b", "exa_mple.com", "nodot", 5])
def test_set_spoofing_whitelist_refuses_invalid_naming_the_field(mail: MailDirectory,
                                                                 value: object) -> None:
    alice(mail, spoofing_whitelist="old.example")
    with pytest.raises(Invalid) as refused:
        mail.set_spoofing_whitelist(ALICE, value)
    assert set(refused.value.errors) == {"spoofing_whitelist"}
    assert mail.get_account(ALICE).spoofing_whitelist == "old.example"


def test_delete_account(mail: MailDirectory) -> None:
    alice(mail)
    mail.delete_account(ALICE)
    with pytest.raises(NotFound):
        mail.get_account(ALICE)
    with pytest.raises(NotFound):
        mail.delete_account(ALICE)
    assert mail.list_accounts(None).count == 0


# -- domain entries --------------------------------------------------------------------


def test_the_domain_entry_comes_with_the_first_address_and_goes_with_the_last(
        mail: MailDirectory, slapd: ManagedSlapd) -> None:
    assert entry(slapd, domain_dn("example.com")) is None
    alice(mail)
    made = entry(slapd, domain_dn("example.com")) or ""
    assert "objectClass: mailgateDomain" in made and "mailgateOrigin: api" in made
    mail.create_alias("office", "example.com", ALICE)
    mail.delete_account(ALICE)
    assert entry(slapd, domain_dn("example.com")) is not None   # office is still there
    mail.delete_alias("office@example.com")
    assert entry(slapd, domain_dn("example.com")) is None
    alice(mail)   # and made again
    assert entry(slapd, domain_dn("example.com")) is not None


def test_a_domain_entry_made_by_hand_stays(mail: MailDirectory, slapd: ManagedSlapd) -> None:
    ldap_tool(slapd, "ldapadd", input=f"dn: {domain_dn('hand.example')}\n"
              "objectClass: mailgateDomain\ndc: hand.example\n")
    carol = mail.create_account("carol", "hand.example", "pw")
    assert carol.dn == address_dn("carol@hand.example")
    mail.create_alias("team", "hand.example", "carol@hand.example")
    mail.delete_account("carol@hand.example")
    mail.delete_alias("team@hand.example")
    kept = entry(slapd, domain_dn("hand.example")) or ""
    assert "dc: hand.example" in kept and "mailgateOrigin" not in kept


def test_idn_domains_are_stored_as_a_labels(mail: MailDirectory, slapd: ManagedSlapd) -> None:
    account = mail.create_account("jurgen", "Bücher.example", "pw")
    assert account.id == "jurgen@xn--bcher-kva.example"
    assert account.domain == "xn--bcher-kva.example"
    assert account.dn == address_dn("jurgen@xn--bcher-kva.example")
    assert entry(slapd, domain_dn("xn--bcher-kva.example")) is not None
    assert mail.get_account("jurgen@bücher.example") == account
    assert mail.get_account("JURGEN@BÜCHER.example") == account
    team = mail.create_alias("team", "bücher.example", "Jurgen@Bücher.example,x@straße.example")
    assert team.id == "team@xn--bcher-kva.example"
    assert team.to == "jurgen@xn--bcher-kva.example,x@xn--strae-oqa.example"  # IDNA 2008: ß stays
    assert [a.id for a in mail.list_accounts(["xn--bcher-kva.example"]).results] == [account.id]


# -- lists and pages ---------------------------------------------------------------------


def test_list_accounts_sorted_filtered_and_paged(mail: MailDirectory) -> None:
    for name, domain in [("zed", "example.com"), ("alice", "example.com"), ("bob", "example.org"),
                         ("carol", "example.com"), ("dave", "example.org")]:
        mail.create_account(name, domain, "pw")
    mail.create_alias("office", "example.com", ALICE)   # not an account
    everything = mail.list_accounts(None)
    assert everything.count == 5 and not everything.has_next
    assert [a.id for a in everything.results] == [
        "alice@example.com", "bob@example.org", "carol@example.com", "dave@example.org",
        "zed@example.com"]
    assert [a.id for a in mail.list_accounts(["example.org"]).results] == [
        "bob@example.org", "dave@example.org"]
    assert mail.list_accounts(["example.org", "example.com", "example.org"]).count == 5
    assert mail.list_accounts(["nothing.example"]).results == []
    assert mail.list_accounts([]).count == 0
    pages = [mail.list_accounts(None, page=n, page_size=2) for n in (1, 2, 3)]
    assert [[a.name for a in p.results] for p in pages] == [
        ["alice", "bob"], ["carol", "dave"], ["zed"]]
    assert [p.has_next for p in pages] == [True, True, False]
    assert all(p.count == 5 and p.page_size == 2 for p in pages)
    with pytest.raises(NotFound) as beyond:
        mail.list_accounts(None, page=4, page_size=2)
    assert set(beyond.value.errors) == {"page"}
    assert mail.list_accounts(None, page_size=MAX_PAGE_SIZE).count == 5


def test_an_empty_list_has_one_empty_page(mail: MailDirectory) -> None:
    empty = mail.list_accounts(None)
    assert (empty.count, empty.results, empty.has_next) == (0, [], False)
    with pytest.raises(NotFound):
        mail.list_aliases(None, page=2)


@pytest.mark.parametrize("kind", ["accounts", "aliases"])
@pytest.mark.parametrize(("page", "page_size", "field"), [
    (0, 100, "page"), (-1, 100, "page"), ("first", 100, "page"), (1, 0, "page_size"),
    (1, -5, "page_size"),
    (1, MAX_PAGE_SIZE + 1, "page_size"),
])
def test_paging_bounds_are_invalid_naming_the_field(
        mail: MailDirectory, kind: str, page: int, page_size: int, field: str) -> None:
    listing = mail.list_accounts if kind == "accounts" else mail.list_aliases
    with pytest.raises(Invalid) as refused:
        listing(None, page=page, page_size=page_size)
    assert set(refused.value.errors) == {field}


# -- aliases -------------------------------------------------------------------------------


def test_alias_create_get_update_delete(mail: MailDirectory, slapd: ManagedSlapd) -> None:
    sales = mail.create_alias("Sales", "Example.com",
                              "Ext@Partner.example, me@example.com,ext@partner.example")
    assert (sales.id, sales.name, sales.domain) == ("sales@example.com", "sales", "example.com")
    assert sales.to == "ext@partner.example,me@example.com" and sales.origin == "api"
    stored = entry(slapd, address_dn("sales@example.com")) or ""
    assert "objectClass: mailgateAlias" in stored
    assert "mailgateAliasTarget: ext@partner.example" in stored
    assert "mailgateAliasTarget: me@example.com" in stored
    assert mail.get_alias("SALES@example.com") == sales
    updated = mail.set_alias_targets("sales@example.com", "One@Example.NET")
    assert updated.to == "one@example.net" and mail.get_alias(sales.id) == updated
    mail.delete_alias("Sales@Example.com")
    for name in ("get_alias", "set_alias_targets", "delete_alias"):
        with pytest.raises(NotFound):
            CALLS[name](mail, sales.id)
    assert entry(slapd, domain_dn("example.com")) is None


@pytest.mark.parametrize(("changes", "field"), [
    ({"name": None}, "name"),
    ({"domain": None}, "domain"),
    ({"to": None}, "to"),
    ({"name": "a b"}, "name"),
    ({"domain": "nodot"}, "domain"),
    ({"to": ""}, "to"),
    ({"to": " , "}, "to"),
    ({"to": "a@example.com,broken"}, "to"),
    ({"to": "a@example.com)(mail=*"}, "to"),
    ({"to": ["a@example.com"]}, "to"),
    ({"to": "x@example.com"}, "to"),
    ({"to": "a@example.com, X@EXAMPLE.com"}, "to"),
])
def test_create_alias_refuses_invalid_input_naming_the_field(
        mail: MailDirectory, changes: dict[str, Any], field: str) -> None:
    with pytest.raises(Invalid) as refused:
        mail.create_alias(**({"name": "x", "domain": "example.com", "to": "a@example.com"}
                             | changes))
    assert set(refused.value.errors) == {field}, refused.value.errors
    assert mail.list_aliases(None).count == 0


@pytest.mark.parametrize("to", [None, "", "nope", " , ", "x@example.com",
                                "a@example.com,X@Example.com"])
def test_set_alias_targets_refuses_invalid_and_changes_nothing(mail: MailDirectory,
                                                               to: object) -> None:
    mail.create_alias("x", "example.com", "a@example.com")
    with pytest.raises(Invalid) as refused:
        mail.set_alias_targets("x@example.com", to)
    assert set(refused.value.errors) == {"to"}
    assert mail.get_alias("x@example.com").to == "a@example.com"


def test_an_alias_cannot_deliver_to_itself_under_another_spelling(mail: MailDirectory) -> None:
    with pytest.raises(Invalid, match="invalid input") as refused:
        mail.create_alias("team", "bücher.example", "TEAM@xn--bcher-kva.example")
    assert refused.value.errors == {"to": "an alias cannot deliver to itself"}


def test_list_aliases_pages_and_domain_filter(mail: MailDirectory) -> None:
    for i in range(5):
        mail.create_alias(f"list{i}", "example.net", "a@example.com")
    mail.create_alias("other", "example.org", "a@example.com")
    mail.create_account("someone", "example.net", "pw")   # not an alias
    last = mail.list_aliases(["example.net"], page=3, page_size=2)
    assert last.count == 5 and [a.id for a in last.results] == ["list4@example.net"]
    assert not last.has_next
    first = mail.list_aliases(None, page_size=4)
    assert first.count == 6 and first.has_next and len(first.results) == 4
    assert all(a.to == "a@example.com" for a in first.results)
