"""``GET /mail/explain/`` gives the answer of Postfix's rendered maps and of the milter.

The maps are the ones ``mailgate render-config postfix`` wrote for the mail-path
stack (tests/mailpath/mailstack.py), queried with real ``postmap -q`` in the
order of main.cf: ``unionmap`` of accounts and aliases, then the sub-address
``pipemap``, then the catch-all. The sender answers are checked against
ldap-sender-login.cf, ldap-submission-disabled.cf and the milter's own rule
(:func:`gateway.milter.decide` with the milter's LDAP lookup). Mail goes
through the real Postfix too, to where explain says; a full mailbox (Dovecot's
usage through its doveadm HTTP API) is over quota as Postfix answers it.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from gateway.app import create_app
from gateway.directory import Directory
from gateway.milter import SenderPolicy, decide
from gateway.services import current
from gateway.settings import Settings

from .mailstack import MailStack, _clean_env
from .test_mail_path import api, create_account, subject
from tests.support.api import Client, LiveGateway

pytestmark = pytest.mark.timeout(180)

ALICE, BOB, DAVE = "alice@example.com", "bob@example.com", "dave@example.org"

# Every kind of address the issue names: account, alias, both, +tag on and off,
# catch-all, a literal a+b, unknown, external.
ADDRESSES = [
    (ALICE, "mailbox"),
    ("Alice@Example.COM", "mailbox"),
    ("office@example.com", "forward"),
    ("both@example.com", "mailbox_and_forward"),
    ("alice+news@example.com", "subaddress"),       # sub-addressing on
    ("alice+@example.com", "subaddress"),           # an empty extension
    ("bob+news@example.com", "catch_all"),          # off: the catch-all takes it
    ("carol+news@example.org", "unknown"),          # off, and no catch-all
    ("nobody@example.com", "catch_all"),
    ("a+b@example.org", "mailbox"),                 # a literal account a+b
    ("a+c@example.org", "subaddress"),              # a has sub-addressing on
    ("+x@example.org", "unknown"),                  # nothing before the +
    ("nobody@example.org", "unknown"),
    ("someone@elsewhere.test", "external"),
    ("chain@example.org", "forward"),               # alias -> alias -> account
]

SENDERS = [
    (ALICE, ALICE), (ALICE, "office@example.com"), (ALICE, "x@skylime.net"),
    (ALICE, BOB), (ALICE, "x@sub.skylime.net"), (BOB, BOB), (BOB, "bob+x@example.com"),
    (DAVE, "anyone@frubar.net"), (DAVE, DAVE), ("nobody@example.org", "nobody@example.org"),
    ("office@example.com", "office@example.com"),   # an alias cannot log in
]


def postmap(stack: MailStack, key: str, table: str) -> list[str] | None:
    """``postmap -q key TABLE``, TABLE a map spec with ``{dir}`` for the rendered maps."""
    spec = table.format(dir=stack.postfix_dir / "mailgate")
    done = subprocess.run(["postmap", "-c", str(stack.postfix_dir), "-q", key, spec],
                          capture_output=True, text=True, timeout=60, check=False,
                          env=_clean_env())
    if done.returncode == 1:
        return None
    assert done.returncode == 0, f"postmap -q {key} {spec}: {done.stderr}"
    return [item.strip() for item in done.stdout.strip().split(",") if item.strip()]


# main.cf's virtual_alias_maps, table by table, as explain names them.
ALIAS_TABLES = [
    ("ldap-accounts.cf + ldap-aliases.cf",
     "unionmap:{{ldap:{dir}/ldap-accounts.cf, ldap:{dir}/ldap-aliases.cf}}"),
    ("subaddress.pcre | ldap-subaddress.cf",
     "pipemap:{{pcre:{dir}/subaddress.pcre, ldap:{dir}/ldap-subaddress.cf}}"),
    ("ldap-catchall.cf", "ldap:{dir}/ldap-catchall.cf"),
]


def postfix_answer(stack: MailStack, address: str) -> tuple[bool, str | None, set[str]]:
    """(domain hosted, the table that answered, its answer) from the rendered maps."""
    domain = address.rpartition("@")[2]
    hosted = postmap(stack, domain, "ldap:{dir}/ldap-domains.cf") is not None
    for name, table in ALIAS_TABLES:
        found = postmap(stack, address, table)
        if found is not None:
            return hosted, name, {a.lower() for a in found}
    return hosted, None, set()


@pytest.fixture
def table(mail_stack: MailStack, live_gateway: LiveGateway) -> LiveGateway:
    create_account(live_gateway, ALICE, "alice pw", subaddress_extension=True,
                   spoofing_whitelist="office@example.com,skylime.net")
    create_account(live_gateway, BOB, "bob pw", submission_disabled=True)
    create_account(live_gateway, "both@example.com", "both pw")
    create_account(live_gateway, "carol@example.org", "carol pw")
    create_account(live_gateway, "a@example.org", "a pw", subaddress_extension=True)
    create_account(live_gateway, "a+b@example.org", "a+b pw")
    create_account(live_gateway, DAVE, "dave pw", spoofing_whitelist="*")
    for name, domain, to in (("office", "example.com", f"{ALICE},{BOB}"),
                             ("both", "example.com", "ext@elsewhere.test"),
                             ("*", "example.com", ALICE),
                             ("chain", "example.org", "office@example.com")):
        api(live_gateway, "POST", "/mail/alias/", json={"name": name, "domain": domain,
                                                        "to": to})
    return live_gateway


def explain(gw: LiveGateway, address: str, sender: str | None = None) -> dict[str, Any]:
    params = {"address": address, **({"from": sender} if sender else {})}
    response: Any = gw("GET", "/mail/explain/", params=params)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_explain_gives_the_answer_of_the_rendered_maps(mail_stack: MailStack,
                                                       table: LiveGateway) -> None:
    for address, delivery in ADDRESSES:
        got = explain(table, address)
        assert got["delivery"] == delivery, (address, got)
        hosted, answered_by, answer = postfix_answer(mail_stack, address)
        assert got["hosted"] == hosted, address
        assert got["lookup"]["map"] == answered_by, (address, got["lookup"])
        assert set(got["lookup"]["result"]) == answer, (address, got["lookup"])
        mailbox = postmap(mail_stack, address, "ldap:{dir}/ldap-mailboxes.cf")
        if delivery == "unknown":
            # Hosted, and no table knows it: the mailbox map does not either (550).
            assert hosted and mailbox is None, address
            assert got["smtp"].startswith("550 5.1.1"), got
        elif delivery == "external":
            assert not hosted and got["smtp"].startswith("554 5.7.1"), got
        else:
            assert got["smtp"] == "250 2.1.5 Ok"
        assert got["rule"], address
    # The chain is followed to its end: chain -> office -> alice, bob.
    chain = explain(table, "chain@example.org")
    assert {(r["address"], r["delivery"]) for r in chain["recipients"]} == {
        (ALICE, "mailbox"), (BOB, "mailbox")}
    both = explain(table, "both@example.com")
    assert {(r["address"], r["delivery"]) for r in both["recipients"]} == {
        ("both@example.com", "mailbox"), ("ext@elsewhere.test", "external")}


def test_explain_gives_the_answer_of_the_sender_maps_and_the_milter(
        mail_stack: MailStack, table: LiveGateway, directory: Directory) -> None:
    policy = SenderPolicy(directory)
    for login, sender in SENDERS:
        got = explain(table, login, sender)
        can_login = postmap(mail_stack, login, "ldap:{dir}/ldap-mailboxes.cf") is not None
        disabled = postmap(mail_stack, login, "ldap:{dir}/ldap-submission-disabled.cf")
        owners = postmap(mail_stack, sender, "ldap:{dir}/ldap-sender-login.cf") or []
        may_submit = can_login and disabled is None
        assert got["submission"]["account"] == can_login, (login, got["submission"])
        assert (got["submission"]["smtp"] is None) == may_submit, (login, got["submission"])
        envelope = got["sender"]["envelope"]
        assert envelope["allowed"] == (may_submit and login in owners), (login, sender, got)
        header = got["sender"]["from_header"]
        milter_ok = decide(login, [sender], policy.whitelist).accepted
        assert header["allowed"] == (may_submit and milter_ok), (login, sender, got)
        assert envelope["rule"] and header["rule"]
        if may_submit and not envelope["allowed"]:
            assert envelope["smtp"].startswith("553 5.7.1"), envelope
            assert header["smtp"].startswith("550 5.7.1"), header
    own = explain(table, ALICE, ALICE)["sender"]["envelope"]["rule"]
    assert "own address" in own
    assert "holds the domain skylime.net" in explain(table, ALICE, "x@skylime.net")[
        "sender"]["envelope"]["rule"]
    assert "disabled" in explain(table, BOB, BOB)["sender"]["envelope"]["rule"]


def test_mail_goes_where_explain_says(mail_stack: MailStack, table: LiveGateway) -> None:
    """Two answers checked against real delivery: a sub-address and the catch-all."""
    to_tag, to_catch_all = subject(), subject()
    assert explain(table, "alice+news@example.com")["recipients"] == [
        {"address": ALICE, "delivery": "mailbox", "quota": None}]
    assert explain(table, "bob+news@example.com")["recipients"] == [
        {"address": ALICE, "delivery": "mailbox", "quota": None}]
    assert mail_stack.send25("someone@outside.test", ["alice+news@example.com"],
                             subject=to_tag).sent
    assert mail_stack.send25("someone@outside.test", ["bob+news@example.com"],
                             subject=to_catch_all).sent
    mail_stack.wait_for_mail(ALICE, "alice pw", to_tag)
    mail_stack.wait_for_mail(ALICE, "alice pw", to_catch_all)
    refused = mail_stack.send25("someone@outside.test", ["carol+news@example.org"])
    assert (refused.stage, refused.code) == ("rcpt", 550), str(refused)


def test_a_full_mailbox_is_over_quota_as_postfix_answers_it(
        mail_stack: MailStack, live_gateway: LiveGateway, settings: Settings) -> None:
    """explain reads Dovecot's usage (the doveadm HTTP API) against mailgateQuota."""
    from .test_quota import MAX_MESSAGES, PASSWORD, QUOTA, deliver, dovecot, new_address, set_quota

    address = new_address("full.example")
    create_account(live_gateway, address, PASSWORD)
    set_quota(live_gateway, address, QUOTA)
    api(live_gateway, "POST", "/mail/alias/",
        json={"name": "to-full", "domain": "full.example", "to": address})
    app = create_app(settings.replace(dovecot_url=mail_stack.doveadm_url,
                                      dovecot_api_key=mail_stack.doveadm_key))
    try:
        client = Client(app)

        def asked(who: str) -> dict[str, Any]:
            answer = client.get("/mail/explain/", query_string={"address": who})
            assert answer.status_code == 200, answer.get_json()  # type: ignore[attr-defined]
            body: dict[str, Any] = answer.get_json()  # type: ignore[attr-defined]
            return body

        empty = asked(address)
        assert empty["delivery"] == "mailbox"
        assert empty["recipients"][0]["quota"] == {"limit": QUOTA, "used": 0, "full": False}
        reader = dovecot(mail_stack)
        for _ in range(MAX_MESSAGES):
            if reader.usage(address).used_bytes >= QUOTA:
                break
            deliver(mail_stack, reader, address)
        full = asked(address)
        assert full["delivery"] == "over_quota" and full["smtp"] == "552 5.2.2 Mailbox is full"
        assert full["recipients"][0]["quota"]["full"] is True
        assert "mailgateQuota" in full["rule"]
        refused = mail_stack.send25("sender@outside.test", [address])
        assert (refused.stage, refused.code) == ("rcpt", 552), str(refused)
        # Through the alias: accepted (quota-status knows no such user), then deferred.
        via = asked("to-full@full.example")
        assert via["delivery"] == "forward" and via["smtp"] == "250 2.1.5 Ok"
        assert via["recipients"][0]["delivery"] == "over_quota"
        assert mail_stack.send25("sender@outside.test", ["to-full@full.example"]).sent
    finally:
        current(app).directory.close()
    # Without Dovecot configured the fill is unknown, and said so.
    unknown = explain(live_gateway, address)
    assert unknown["delivery"] == "mailbox"
    assert unknown["recipients"][0]["quota"]["full"] is None
    assert "MAILGATE_DOVECOT_URL" in unknown["recipients"][0]["quota"]["note"]
