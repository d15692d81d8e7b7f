"""SPEC.md section 7 on the real mail path: sub-addressing per account, the
catch-all, and addresses that are both an account and an alias.

The same real Postfix, Dovecot and slapd as test_mail_path.py; the Postfix maps
are what ``mailgate render-config postfix`` writes (docs/mail-servers.md has
the lookup order these tests pin down).
"""

from __future__ import annotations

import pytest

from .mailstack import MailStack
from .test_mail_path import api, assert_refused, create_account, subject
from tests.support.api import LiveGateway

pytestmark = pytest.mark.timeout(120)

ANNA = "anna@compat.example"
BEN = "ben@compat.example"
OUTSIDE = "someone@outside.test"


def test_subaddress_delivers_to_the_inbox_only_when_enabled(
        mail_stack: MailStack, live_gateway: LiveGateway) -> None:
    create_account(live_gateway, ANNA, "anna pw", subaddress_extension=True)
    create_account(live_gateway, BEN, "ben pw")
    tagged = subject()
    assert mail_stack.send25(OUTSIDE, ["anna+news@compat.example"], subject=tagged).sent
    assert mail_stack.send25(OUTSIDE, ["Anna+Shop.2024@Compat.Example"]).sent
    mail_stack.wait_for_mail(ANNA, "anna pw", tagged)
    # Off (the default): the sub-address is unknown.
    assert_refused(mail_stack.send25(OUTSIDE, ["ben+news@compat.example"]), "rcpt", 550,
                   "User unknown")
    # Switched through the API: in force for the next transaction, both ways.
    api(live_gateway, "POST", f"/mail/account/{BEN}/enable_subaddress/")
    on = subject()
    assert mail_stack.send25(OUTSIDE, ["ben+news@compat.example"], subject=on).sent
    mail_stack.wait_for_mail(BEN, "ben pw", on)
    api(live_gateway, "POST", f"/mail/account/{ANNA}/disable_subaddress/")
    assert_refused(mail_stack.send25(OUTSIDE, ["anna+news@compat.example"]), "rcpt", 550,
                   "User unknown")
    # No name before the "+", or an unknown name: unknown as before.
    assert_refused(mail_stack.send25(OUTSIDE, ["+news@compat.example"]), "rcpt", 550)
    assert_refused(mail_stack.send25(OUTSIDE, ["carl+x@compat.example"]), "rcpt", 550)


def test_a_literal_local_part_with_a_plus_keeps_its_own_mail(
        mail_stack: MailStack, live_gateway: LiveGateway) -> None:
    create_account(live_gateway, ANNA, "anna pw", subaddress_extension=True)
    create_account(live_gateway, "anna+work@compat.example", "work pw")
    api(live_gateway, "POST", "/mail/alias/",
        json={"name": "anna+list", "domain": "compat.example", "to": BEN})
    create_account(live_gateway, BEN, "ben pw")
    work, listed, other = subject(), subject(), subject()
    assert mail_stack.send25(OUTSIDE, ["anna+work@compat.example"], subject=work).sent
    assert mail_stack.send25(OUTSIDE, ["anna+list@compat.example"], subject=listed).sent
    assert mail_stack.send25(OUTSIDE, ["anna+other@compat.example"], subject=other).sent
    mail_stack.wait_for_mail("anna+work@compat.example", "work pw", work)
    mail_stack.wait_for_mail(BEN, "ben pw", listed)
    mail_stack.wait_for_mail(ANNA, "anna pw", other)
    inbox = mail_stack.imap_subjects(ANNA, "anna pw")
    assert work not in inbox and listed not in inbox


def test_catch_all_gets_only_what_nothing_else_takes(
        mail_stack: MailStack, live_gateway: LiveGateway) -> None:
    create_account(live_gateway, ANNA, "anna pw", subaddress_extension=True)
    create_account(live_gateway, BEN, "ben pw")
    create_account(live_gateway, "post@other.example", "post pw")
    api(live_gateway, "POST", "/mail/alias/",
        json={"name": "team", "domain": "compat.example", "to": ANNA})
    caught = api(live_gateway, "POST", "/mail/alias/",
                 json={"name": "*", "domain": "compat.example", "to": BEN}).json()
    assert caught["id"] == "*@compat.example"
    to_anna, to_team, to_sub, to_nobody, to_ben_sub = (subject() for _ in range(5))
    for rcpt, title in ((ANNA, to_anna), ("team@compat.example", to_team),
                        ("anna+x@compat.example", to_sub),
                        ("nobody@compat.example", to_nobody),
                        ("ben+x@compat.example", to_ben_sub)):
        assert mail_stack.send25(OUTSIDE, [rcpt], subject=title).sent, rcpt
    for title in (to_anna, to_team, to_sub):
        mail_stack.wait_for_mail(ANNA, "anna pw", title)
    # Unknown addresses and disabled sub-addresses go to the catch-all's recipients.
    mail_stack.wait_for_mail(BEN, "ben pw", to_nobody)
    mail_stack.wait_for_mail(BEN, "ben pw", to_ben_sub)
    ben = mail_stack.imap_subjects(BEN, "ben pw")
    assert not {to_anna, to_team, to_sub} & set(ben)
    # Only its own domain.
    assert_refused(mail_stack.send25(OUTSIDE, ["nobody@other.example"]), "rcpt", 550)
    # Gone: unknown again.
    api(live_gateway, "DELETE", "/mail/alias/*@compat.example/")
    assert_refused(mail_stack.send25(OUTSIDE, ["nobody@compat.example"]), "rcpt", 550)


def test_an_address_that_is_account_and_alias_gets_both_deliveries(
        mail_stack: MailStack, live_gateway: LiveGateway) -> None:
    create_account(live_gateway, ANNA, "anna pw")
    create_account(live_gateway, BEN, "ben pw")
    api(live_gateway, "POST", "/mail/alias/",
        json={"name": "anna", "domain": "compat.example", "to": BEN})
    both = subject()
    assert mail_stack.send25(OUTSIDE, [ANNA], subject=both).sent
    mail_stack.wait_for_mail(ANNA, "anna pw", both)      # the mailbox ...
    mail_stack.wait_for_mail(BEN, "ben pw", both)        # ... and the forwarding
    assert mail_stack.imap_login(ANNA, "anna pw")
    # The account goes, the forwarding stays: only ben receives, anna cannot log in.
    api(live_gateway, "DELETE", f"/mail/account/{ANNA}/")
    after = subject()
    assert mail_stack.send25(OUTSIDE, [ANNA], subject=after).sent
    mail_stack.wait_for_mail(BEN, "ben pw", after)
    assert not mail_stack.imap_login(ANNA, "anna pw")
    # And back: a new account of the alias's address gets mail beside the forwarding.
    create_account(live_gateway, ANNA, "new pw")
    again = subject()
    assert mail_stack.send25(OUTSIDE, [ANNA], subject=again).sent
    mail_stack.wait_for_mail(ANNA, "new pw", again)
    mail_stack.wait_for_mail(BEN, "ben pw", again)
