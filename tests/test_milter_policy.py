"""The milter's decision rule, without a mail server (the mail path is in tests/mailpath)."""

from __future__ import annotations

import pytest

from gateway.errors import DirectoryUnavailable
from gateway.milter import Verdict, decide, header_sender

ALICE = "alice@example.com"
WHITELISTS = {ALICE: ["office@example.com", "skylime.net"], "dave@example.org": ["*"],
              "bob@example.com": []}


def lookup(login: str) -> list[str] | None:
    return WHITELISTS.get(login)


def unavailable(login: str) -> list[str] | None:
    raise DirectoryUnavailable("down")


@pytest.mark.parametrize(("value", "expected"), [
    ("alice@example.com", ALICE),
    ("Alice <ALICE@Example.COM>", ALICE),
    ('"Alice A." <alice@example.com>', ALICE),
    ("=?utf-8?q?Al=C3=AFce?= <alice@example.com>", ALICE),
    ("Alice\r\n <alice@example.com>", ALICE),
    ("someone@b\u00fccher.example", "someone@xn--bcher-kva.example"),
    ('"odd one"@skylime.net', "odd one@skylime.net"),
])
def test_header_sender_normalises(value: str, expected: str) -> None:
    assert header_sender([value]) == expected


@pytest.mark.parametrize(("values", "why"), [
    ([], "no From: header"),
    ([ALICE, ALICE], "several From: headers"),
    (["alice@example.com, bob@example.com"], "exactly one address"),
    (["undisclosed-recipients:;"], "exactly one address"),
    (["<>"], "cannot be parsed"),
    (["alice"], "cannot be parsed"),
    (["Alice <alice@exa mple.com>"], "cannot be parsed"),
    (["x@[127.0.0.1]"], "invalid domain"),
])
def test_header_sender_refuses_anything_but_one_address(values: list[str], why: str) -> None:
    verdict = header_sender(values)
    assert isinstance(verdict, Verdict)
    assert (verdict.action, verdict.code, verdict.xcode) == ("reject", "550", "5.6.0")
    assert why in verdict.text


@pytest.mark.parametrize(("login", "sender", "allowed"), [
    (ALICE, ALICE, True),
    (ALICE, "office@example.com", True),
    (ALICE, "someone@skylime.net", True),
    (ALICE, "bob@example.com", False),
    (ALICE, "anyone@frubar.net", False),
    (ALICE, "office@example.com.evil", False),
    (ALICE, "x@sub.skylime.net", False),  # a domain item is that domain only
    ("dave@example.org", "bob@example.com", True),
    ("bob@example.com", ALICE, False),
    ("gone@example.com", "gone@example.com", True),  # own address needs no entry
    ("gone@example.com", "x@skylime.net", False),
])
def test_decide_applies_the_whitelist_rule(login: str, sender: str, allowed: bool) -> None:
    verdict = decide(login, [sender], lookup)
    assert verdict.accepted is allowed
    if not allowed:
        assert (verdict.code, verdict.xcode) == ("550", "5.7.1")


def test_unauthenticated_mail_is_not_checked() -> None:
    assert decide(None, [], unavailable).accepted
    assert decide("", ["bob@example.com"], unavailable).accepted


def test_directory_down_defers_unless_no_lookup_is_needed() -> None:
    verdict = decide(ALICE, ["office@example.com"], unavailable)
    assert (verdict.action, verdict.code, verdict.xcode) == ("tempfail", "451", "4.3.0")
    assert decide(ALICE, [ALICE], unavailable).accepted
    assert decide("ALICE@example.com", [ALICE], unavailable).accepted
