"""A Basic JSON document shaped exactly as the original's producer (the
controller panel's export view) made it, through the real HTTPS fetch into
LDAP, then through real Postfix and Dovecot.

What the producer does that SPEC.md section 2 does not show: punycode domain
keys, ``subaddress_extension`` (and ``submission_disabled``) on every
account, ``spoofing_whitelist`` defaulting to the account's domain, ``to``
normalised into a comma list, SHA512-crypt at passlib's default of 656 000
rounds, domains with no entries at all, and a ``?token=`` in the URL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from passlib.hash import md5_crypt, sha512_crypt

from gateway.mail import MailDirectory
from gateway.settings import Settings
from gateway.sync.runner import SyncRunner

from .mailstack import MailStack
from .test_mail_path import assert_refused, subject
from tests.support import httpsserver
from tests.support.api import LiveGateway

pytestmark = pytest.mark.timeout(180)

# passlib's sha512_crypt default cost in 2017 (656 000 rounds); made once, kept
# here so the test does not spend half a second per hash making more.
HEAVY_PASSWORD = "producer pw 656000"
HEAVY_HASH = ("$6$rounds=656000$kumquat2017salt$o0LHUNDPsPgOj95b2T67L3mFAQ71dMSXhuA7fFNM3xt1"
              "Eck.O4GNk6ncryiCVNe7E2SQflkDRsD9JGtCjlzSn0")
IDN = "xn--bcher-kva.example"            # bücher.example
PLAIN = "kumquat.example"
PASSWORDS = {f"anna@{IDN}": HEAVY_PASSWORD, f"max@{IDN}": "max pw",
             f"olga@{PLAIN}": "olga pw", f"pete@{PLAIN}": "pete pw"}


def producer_account(name: str, domain: str, crypt_hash: str, subaddress: bool,
                     whitelist: str | None = None) -> dict[str, object]:
    return {"name": name, "password": crypt_hash,
            "spoofing_whitelist": domain if whitelist is None else whitelist,
            "submission_disabled": False, "subaddress_extension": subaddress}


def producer_document() -> dict[str, object]:
    cheap = sha512_crypt.using(rounds=5000)
    return {
        IDN: {
            "account": [
                producer_account("anna", IDN, HEAVY_HASH, True),
                producer_account("max", IDN, md5_crypt.hash("max pw"), False),
            ],
            "alias": [
                {"name": "info", "to": f"anna@{IDN},olga@{PLAIN}"},
                {"name": "*", "to": f"max@{IDN}"},
                {"name": "anna", "to": f"pete@{PLAIN}"},      # anna is both
            ],
        },
        PLAIN: {
            "account": [
                producer_account("olga", PLAIN, cheap.hash("olga pw"), False,
                                 whitelist=f"{PLAIN},info@{IDN}"),
                producer_account("pete", PLAIN, cheap.hash("pete pw"), True),
            ],
            "alias": [],
        },
        "xn--leer-5qa.example": {"account": [], "alias": []},    # empty domains
        "empty.example": {},
    }


@pytest.fixture
def producer_sync(settings: Settings, tmp_path: Path) -> Iterator[SyncRunner]:
    docs, server = httpsserver.start(tmp_path)
    url = docs.serve("/export/mail.json?token=kumquat-s3cret", producer_document())
    runner = SyncRunner(settings.replace(json_urls=(url,), json_ca_file=docs.ca_file))
    try:
        yield runner
    finally:
        runner.close()
        server.shutdown()
        server.server_close()


def test_the_producers_document_through_https_ldap_postfix_and_dovecot(
        mail_stack: MailStack, live_gateway: LiveGateway, producer_sync: SyncRunner,
        mail: MailDirectory) -> None:
    report = producer_sync.run()
    assert report.result == "applied", report.as_json()
    assert report.skipped == [] and report.unknown_keys == []
    assert report.counts["created"] == 6     # anna is one entry: account and alias
    assert "kumquat-s3cret" not in json.dumps(producer_sync.status())
    anna = mail.get_account(f"anna@{IDN}")
    assert anna.password == HEAVY_HASH and anna.subaddress_extension
    assert anna.spoofing_whitelist == IDN
    assert mail.get_alias(f"*@{IDN}").to == f"max@{IDN}"
    assert mail.list_accounts([IDN]).count == 2 and mail.list_aliases([IDN]).count == 3

    # Every account logs in (Dovecot verifies each hash, 656 000 rounds included).
    for address, password in PASSWORDS.items():
        assert mail_stack.imap_login(address, password), address
        assert mail_stack.imap_login(address.upper(), password), address

    def send(rcpt: str) -> str:
        title = subject()
        assert mail_stack.send25("someone@outside.test", [rcpt], subject=title).sent, rcpt
        return title

    info = send(f"info@{IDN}")                   # alias with a comma list
    both = send(f"anna@{IDN}")                   # account and alias
    tagged = send(f"anna+shop@{IDN}")            # sub-address, enabled
    caught = send(f"nobody@{IDN}")               # the catch-all
    max_tagged = send(f"max+x@{IDN}")            # sub-address disabled: the catch-all
    pete_tagged = send(f"pete+lists@{PLAIN}")    # enabled, other domain
    mail_stack.wait_for_mail(f"anna@{IDN}", HEAVY_PASSWORD, info)
    mail_stack.wait_for_mail(f"olga@{PLAIN}", "olga pw", info)
    mail_stack.wait_for_mail(f"anna@{IDN}", HEAVY_PASSWORD, both)
    mail_stack.wait_for_mail(f"pete@{PLAIN}", "pete pw", both)
    mail_stack.wait_for_mail(f"anna@{IDN}", HEAVY_PASSWORD, tagged)
    mail_stack.wait_for_mail(f"max@{IDN}", "max pw", caught)
    mail_stack.wait_for_mail(f"max@{IDN}", "max pw", max_tagged)
    mail_stack.wait_for_mail(f"pete@{PLAIN}", "pete pw", pete_tagged)
    # No catch-all in the other domain, and olga has no sub-addressing.
    assert_refused(mail_stack.send25("someone@outside.test", [f"olga+x@{PLAIN}"]),
                   "rcpt", 550)
    assert_refused(mail_stack.send25("someone@outside.test", [f"nobody@{PLAIN}"]),
                   "rcpt", 550)
    # The whitelist the producer wrote: olga may send as her domain and as info@.
    assert mail_stack.submit(f"olga@{PLAIN}", "olga pw", f"info@{IDN}", [f"pete@{PLAIN}"]).sent
    assert_refused(mail_stack.submit(f"olga@{PLAIN}", "olga pw", f"max@{IDN}",
                                     [f"pete@{PLAIN}"]), "rcpt", 553)
    # The same document again writes nothing.
    again = producer_sync.run(full=True)
    assert again.result == "applied" and again.counts["unchanged"] == 6
    assert again.counts["created"] == again.counts["updated"] == 0
