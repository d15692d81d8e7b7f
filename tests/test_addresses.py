"""Pure rules for addresses, domains, recipient lists and whitelists."""

from __future__ import annotations

import pytest

from gateway.addresses import (
    normalize_domain,
    normalize_local,
    parse_address,
    parse_recipients,
    parse_whitelist,
    sender_allowed,
)


@pytest.mark.parametrize("local", ["alice", "Alice.Smith", "a+b", "x=y", "o'brien", "a*b",
                                   "!#$%&'*+/=?^_`{|}~-", "a" * 64])
def test_valid_local_parts_are_lowercased(local: str) -> None:
    assert normalize_local(local) == local.lower()


@pytest.mark.parametrize("local", ["", ".alice", "alice.", "al..ice", "a b", "a(b", "a)b",
                                   "a\\b", "a\x00b", "a,b", "a@b", 'a"b', "a" * 65, "jürgen",
                                   "a;b", "a<b", "a[b"])
def test_invalid_local_parts(local: str) -> None:
    with pytest.raises(ValueError):
        normalize_local(local)


@pytest.mark.parametrize(("domain", "normal"), [
    ("Example.COM", "example.com"),
    ("bücher.example", "xn--bcher-kva.example"),
    ("BÜCHER.example", "xn--bcher-kva.example"),
    ("xn--bcher-kva.example", "xn--bcher-kva.example"),
    ("a-b.c-d.example", "a-b.c-d.example"),
])
def test_domains_become_lowercase_a_labels(domain: str, normal: str) -> None:
    assert normalize_domain(domain) == normal


@pytest.mark.parametrize("domain", ["", "localhost", "example.com.", "-a.example", "a-.example",
                                    "a_b.example", "ex ample.com", "exa*mple.com", "a..b",
                                    "x" * 64 + ".com", "1.2.3.4", "example.com\x00",
                                    "(objectClass=*)", "a,b.example", "a=b.example"])
def test_invalid_domains(domain: str) -> None:
    with pytest.raises(ValueError):
        normalize_domain(domain)


def test_parse_address_normalises_both_parts() -> None:
    assert str(parse_address("Alice@Bücher.Example")) == "alice@xn--bcher-kva.example"
    with pytest.raises(ValueError):
        parse_address("no-at-sign")
    with pytest.raises(ValueError):
        parse_address("@example.com")


def test_recipients_are_normalised_deduplicated_and_ordered() -> None:
    assert parse_recipients(" Bob@Example.com, alice@example.com ,bob@example.com,") == [
        "bob@example.com", "alice@example.com"]
    with pytest.raises(ValueError, match="at least one"):
        parse_recipients(" , ")
    with pytest.raises(ValueError, match="'nope'"):
        parse_recipients("alice@example.com,nope")


def test_whitelist_items() -> None:
    assert parse_whitelist("") == []
    assert parse_whitelist("Office@Example.com, skylime.NET") == ["office@example.com",
                                                                  "skylime.net"]
    assert parse_whitelist(" * ") == ["*"]
    with pytest.raises(ValueError, match="stand alone"):
        parse_whitelist("*,example.com")
    with pytest.raises(ValueError):
        parse_whitelist("not a domain")


def test_sender_rule_of_the_original_documentation() -> None:
    whitelist = parse_whitelist("office@example.com,skylime.net")
    login = "alice@example.com"
    for sender in ("alice@example.com", "office@example.com", "someone@skylime.net"):
        assert sender_allowed(login, sender, whitelist), sender
    for sender in ("bob@example.com", "anyone@frubar.net", "x@sub.skylime.net"):
        assert not sender_allowed(login, sender, whitelist), sender
    assert sender_allowed(login, "bob@example.com", ["*"])
    assert not sender_allowed(login, "bob@example.com", [])
