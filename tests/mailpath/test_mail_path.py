"""The mail path end to end: the gateway writes LDAP, Postfix and Dovecot read it.

Real slapd, Postfix (``postfix -c DIR``), Dovecot (``dovecot -c FILE``) and the
mailgate milter on loopback ports (fixtures in conftest.py / mailstack.py),
configured by ``mailgate render-config``; the gateway is the real app over
HTTPS. Nothing is mocked. Every test also fails if slapd logged an unindexed
search while it ran (conftest.every_filter_indexed).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from passlib.hash import md5_crypt, sha512_crypt

from gateway.settings import Settings
from gateway.slapd import ManagedSlapd

from .mailstack import ALLOW_UNINDEXED, MailStack, SendResult
from tests.support import httpsserver
from tests.support.api import LiveGateway
from tests.support.constants import BASE_DN
from tests.support.slapd import RunningSlapd, ldap_tool
from tests.support.wait import wait_until

pytestmark = pytest.mark.timeout(120)

ALICE = "alice@example.com"
BOB = "bob@example.com"


def create_account(gw: LiveGateway, address: str, password: str, **extra: Any) -> None:
    name, _, domain = address.rpartition("@")
    response: Any = gw("POST", "/mail/account/",
                       json={"name": name, "domain": domain, "password": password, **extra})
    assert response.status_code == 201, response.text


def api(gw: LiveGateway, method: str, path: str, **kwargs: Any) -> Any:
    response: Any = gw(method, path, **kwargs)
    assert response.status_code in (200, 201, 204), f"{method} {path}: {response.text}"
    return response


def subject() -> str:
    return f"msg-{uuid.uuid4().hex[:16]}"


def assert_refused(result: SendResult, stage: str, code: int, text: str = "") -> None:
    assert result.stage == stage and result.code == code, str(result)
    assert text in result.text, str(result)


# -- login, submission, password changes ------------------------------------------


def test_api_password_works_for_imap_and_submission_and_a_new_one_replaces_it_at_once(
        mail_stack: MailStack, live_gateway: LiveGateway) -> None:
    create_account(live_gateway, ALICE, "first secret")
    assert mail_stack.imap_login(ALICE, "first secret")
    assert mail_stack.imap_login("Alice@Example.COM", "first secret")  # %Lu
    assert not mail_stack.imap_login(ALICE, "wrong")
    first = subject()
    assert mail_stack.submit(ALICE, "first secret", ALICE, [ALICE], subject=first).sent
    mail_stack.wait_for_mail(ALICE, "first secret", first)

    api(live_gateway, "POST", f"/mail/account/{ALICE}/set_password/",
        json={"password": "second secret"})
    # The very next transactions: the old password is refused at once ...
    assert not mail_stack.imap_login(ALICE, "first secret")
    assert_refused(mail_stack.submit(ALICE, "first secret", ALICE, [ALICE]), "auth", 535)
    # ... and the new one works.
    assert mail_stack.imap_login(ALICE, "second secret")
    second = subject()
    assert mail_stack.submit(ALICE, "second secret", ALICE, [ALICE], subject=second).sent
    mail_stack.wait_for_mail(ALICE, "second secret", second)


def test_submission_needs_authentication(mail_stack: MailStack,
                                         live_gateway: LiveGateway) -> None:
    import smtplib
    import ssl

    create_account(live_gateway, ALICE, "pw")
    context = ssl.create_default_context(cafile=str(mail_stack.tls_cert))
    with smtplib.SMTP("127.0.0.1", mail_stack.ports.submission, timeout=30) as smtp:
        smtp.ehlo("client.test")
        assert "auth" not in smtp.esmtp_features  # no AUTH before STARTTLS
        smtp.starttls(context=context)
        smtp.ehlo("client.test")
        assert smtp.mail(ALICE)[0] == 250
        code, text = smtp.rcpt(ALICE)
        assert code == 554, text  # smtpd_sender_restrictions ends in reject


# -- receiving ----------------------------------------------------------------


def test_alias_delivers_to_every_target_and_case_does_not_matter(
        mail_stack: MailStack, live_gateway: LiveGateway) -> None:
    create_account(live_gateway, ALICE, "alice pw")
    create_account(live_gateway, BOB, "bob pw")
    api(live_gateway, "POST", "/mail/alias/",
        json={"name": "office", "domain": "example.com", "to": f"{ALICE},{BOB}"})
    to_alias, to_upper = subject(), subject()
    assert mail_stack.send25("someone@outside.test", ["office@example.com"],
                             subject=to_alias).sent
    assert mail_stack.send25("someone@outside.test", ["Alice@Example.COM"],
                             subject=to_upper).sent
    mail_stack.wait_for_mail(ALICE, "alice pw", to_alias)
    mail_stack.wait_for_mail(BOB, "bob pw", to_alias)
    mail_stack.wait_for_mail(ALICE, "alice pw", to_upper)
    assert to_upper not in mail_stack.imap_subjects(BOB, "bob pw")


def test_unknown_recipients_and_domains_are_refused(mail_stack: MailStack,
                                                    live_gateway: LiveGateway) -> None:
    create_account(live_gateway, ALICE, "pw")
    assert_refused(mail_stack.send25("someone@outside.test", ["nobody@example.com"]),
                   "rcpt", 550, "User unknown")
    # A domain without an entry is not a mailbox domain.
    assert mail_stack.postmap_query("ldap-domains.cf", "example.com") == "example.com"
    assert mail_stack.postmap_query("ldap-domains.cf", "example.org") is None


def test_unauthenticated_mail_passes_the_milter(mail_stack: MailStack,
                                                live_gateway: LiveGateway) -> None:
    """Port 25 (the milter is attached there in the test config): not checked."""
    create_account(live_gateway, ALICE, "alice pw")
    create_account(live_gateway, BOB, "bob pw")
    spoofed = subject()
    assert mail_stack.send25(ALICE, [BOB], from_header=ALICE, subject=spoofed).sent
    no_from = subject()
    assert mail_stack.send25("x@outside.test", [BOB], from_header=None, subject=no_from).sent
    mail_stack.wait_for_mail(BOB, "bob pw", spoofed)
    mail_stack.wait_for_mail(BOB, "bob pw", no_from)


# -- the spoofing whitelist -----------------------------------------------------


def test_spoofing_whitelist_example_from_the_documentation(
        mail_stack: MailStack, live_gateway: LiveGateway) -> None:
    create_account(live_gateway, ALICE, "pw",
                   spoofing_whitelist="office@example.com,skylime.net")
    create_account(live_gateway, BOB, "bob pw")
    allowed = [ALICE, "office@example.com", "someone@skylime.net"]
    refused = [BOB, "anyone@frubar.net"]
    for sender in allowed:
        # envelope sender and From: header both the allowed address
        assert mail_stack.submit(ALICE, "pw", sender, [BOB]).sent, sender
        # envelope alice, From: the allowed address
        assert mail_stack.submit(ALICE, "pw", ALICE, [BOB], from_header=sender).sent, sender
    for sender in refused:
        # Postfix: envelope sender not owned by the login (at RCPT time)
        assert_refused(mail_stack.submit(ALICE, "pw", sender, [BOB]), "rcpt", 553,
                       "not owned by user alice@example.com")
        # the milter: envelope alice's own address, From: header someone else's
        assert_refused(mail_stack.submit(ALICE, "pw", ALICE, [BOB], from_header=sender),
                       "data", 550, "5.7.1")

    api(live_gateway, "POST", f"/mail/account/{ALICE}/set_spoofing_whitelist/",
        json={"spoofing_whitelist": "*"})
    for sender in refused:
        assert mail_stack.submit(ALICE, "pw", sender, [BOB]).sent, sender
        assert mail_stack.submit(ALICE, "pw", ALICE, [BOB], from_header=sender).sent, sender
    # bob has no whitelist: alice's "*" gives bob nothing.
    assert_refused(mail_stack.submit(BOB, "bob pw", ALICE, [BOB]), "rcpt", 553)


def test_from_header_that_names_no_single_address_is_refused(
        mail_stack: MailStack, live_gateway: LiveGateway) -> None:
    create_account(live_gateway, ALICE, "pw", spoofing_whitelist="skylime.net")
    create_account(live_gateway, BOB, "bob pw")

    def send(from_header: Any, mail_from: str = ALICE) -> SendResult:
        return mail_stack.submit(ALICE, "pw", mail_from, [BOB], from_header=from_header)

    assert_refused(send(None), "data", 550, "no From: header")
    assert_refused(send([ALICE, ALICE]), "data", 550, "several From: headers")
    assert_refused(send(f"{ALICE}, someone@skylime.net"), "data", 550, "exactly one address")
    assert_refused(send("undisclosed-recipients:;"), "data", 550, "exactly one address")
    assert_refused(send("Alice <alice@exa mple.com>"), "data", 550, "5.6.0")
    assert_refused(send("alice"), "data", 550, "5.6.0")
    # Forms that name one allowed address pass.
    assert send(f'"Alice A." <{ALICE}>').sent
    assert send("Alice <ALICE@Example.COM>").sent
    assert send('"odd one"@skylime.net').sent  # quoted local part, whitelisted domain
    assert send("=?utf-8?q?Al=C3=AFce?= <alice@example.com>").sent
    # The null envelope sender skips Postfix's check; the milter still checks From:.
    assert send(ALICE, mail_from="").sent
    assert_refused(send(BOB, mail_from=""), "data", 550, "may not send as bob@example.com")


def test_milter_defers_when_it_cannot_decide(mail_stack: MailStack,
                                             live_gateway: LiveGateway) -> None:
    create_account(live_gateway, ALICE, "pw", spoofing_whitelist="office@example.com")
    create_account(live_gateway, BOB, "bob pw")
    down = mail_stack.ports.submission_ldap_down
    # The milter's LDAP is unreachable: a From: that needs the whitelist is deferred ...
    assert_refused(mail_stack.submit(ALICE, "pw", ALICE, [BOB], from_header="office@example.com",
                                     port=down), "data", 451, "4.3.0")
    # ... the login's own address needs no lookup and passes.
    assert mail_stack.submit(ALICE, "pw", ALICE, [BOB], port=down).sent
    # No milter listening at all: Postfix defers (milter_default_action=tempfail).
    result = mail_stack.submit(ALICE, "pw", ALICE, [BOB],
                               port=mail_stack.ports.submission_no_milter)
    assert not result.sent and 400 <= result.code < 500, str(result)


# -- submission disabled -----------------------------------------------------------


def test_disabled_submission_stops_sending_only(mail_stack: MailStack,
                                               live_gateway: LiveGateway) -> None:
    create_account(live_gateway, ALICE, "pw")
    create_account(live_gateway, BOB, "bob pw")
    api(live_gateway, "POST", f"/mail/account/{ALICE}/disable_submission/")
    assert_refused(mail_stack.submit(ALICE, "pw", ALICE, [BOB]), "rcpt", 554,
                   "sending is disabled for this account")
    assert mail_stack.imap_login(ALICE, "pw")
    received = subject()
    assert mail_stack.send25(BOB, [ALICE], subject=received).sent
    mail_stack.wait_for_mail(ALICE, "pw", received)

    api(live_gateway, "POST", f"/mail/account/{ALICE}/enable_submission/")
    sent = subject()
    assert mail_stack.submit(ALICE, "pw", ALICE, [BOB], subject=sent).sent
    mail_stack.wait_for_mail(BOB, "bob pw", sent)


# -- deletion -----------------------------------------------------------------------


def test_deleted_account_cannot_log_in_nor_receive_and_its_mail_stays_on_disk(
        mail_stack: MailStack, live_gateway: LiveGateway) -> None:
    address = "leaver@example.com"
    create_account(live_gateway, address, "pw")
    create_account(live_gateway, BOB, "bob pw")
    kept = subject()
    assert mail_stack.send25(BOB, [address], subject=kept).sent
    mail_stack.wait_for_mail(address, "pw", kept)

    api(live_gateway, "DELETE", f"/mail/account/{address}/")
    assert not mail_stack.imap_login(address, "pw")
    assert_refused(mail_stack.submit(address, "pw", address, [BOB]), "auth", 535)
    assert_refused(mail_stack.send25(BOB, [address]), "rcpt", 550, "User unknown")
    maildir = mail_stack.maildir(address)
    files = [p for sub in ("new", "cur") for p in (maildir / sub).iterdir()]
    assert any(kept in p.read_text(errors="replace") for p in files)


# -- entries written with LDAP tools ------------------------------------------------


def _domain_ldif(domain: str, origin: str | None) -> str:
    extra = f"mailgateOrigin: {origin}\n" if origin else ""
    return (f"dn: dc={domain},ou=domains,{BASE_DN}\nobjectClass: mailgateDomain\n"
            f"dc: {domain}\n{extra}\n")


def _account_ldif(address: str, crypt_hash: str, origin: str | None = None,
                  whitelist: tuple[str, ...] = ()) -> str:
    domain = address.rpartition("@")[2]
    lines = [f"dn: mail={address},dc={domain},ou=domains,{BASE_DN}",
             "objectClass: mailgateAccount", f"mail: {address}",
             f"userPassword: {{CRYPT}}{crypt_hash}"]
    lines += [f"mailgateSenderAllowed: {item}" for item in whitelist]
    if origin:
        lines.append(f"mailgateOrigin: {origin}")
    return "\n".join(lines) + "\n\n"


def test_imported_md5_and_sha512_rounds_hashes_log_in(
        mail_stack: MailStack, live_gateway: LiveGateway, slapd: ManagedSlapd) -> None:
    """Entries as the JSON sync writes them: userPassword {CRYPT}<imported hash>."""
    md5 = md5_crypt.hash("md5 password")
    sha = sha512_crypt.using(rounds=100_000).hash("sha password")
    assert md5.startswith("$1$") and sha.startswith("$6$rounds=100000$")
    ldap_tool(slapd, "ldapadd", input=_domain_ldif("imported.example", "sync")
              + _account_ldif("old@imported.example", md5, "sync")
              + _account_ldif("new@imported.example", sha, "sync"))
    assert mail_stack.imap_login("old@imported.example", "md5 password")
    assert mail_stack.imap_login("new@imported.example", "sha password")
    assert not mail_stack.imap_login("old@imported.example", "sha password")
    assert mail_stack.submit("old@imported.example", "md5 password", "old@imported.example",
                             ["new@imported.example"]).sent
    # slapd verifies the same values on a simple bind.
    whoami = ldap_tool_as(slapd, f"mail=new@imported.example,dc=imported.example,"
                                 f"ou=domains,{BASE_DN}", "sha password")
    assert whoami.returncode == 0, whoami.stderr


def ldap_tool_as(slapd: ManagedSlapd, dn: str, password: str) -> Any:
    import subprocess

    return subprocess.run(["ldapwhoami", "-x", "-H", slapd.url, "-D", dn, "-w", password],
                          capture_output=True, text=True, timeout=30, check=False)


def test_account_made_by_hand_with_ldapadd_works_the_same(
        mail_stack: MailStack, live_gateway: LiveGateway, slapd: ManagedSlapd) -> None:
    carol, dave = "carol@hand.example", "dave@hand.example"
    ldif = (_domain_ldif("hand.example", None)
            + _account_ldif(carol, sha512_crypt.using(rounds=5000).hash("carol pw"),
                            whitelist=("skylime.net",))
            + _account_ldif(dave, sha512_crypt.using(rounds=5000).hash("dave pw"))
            + f"dn: mail=team@hand.example,dc=hand.example,ou=domains,{BASE_DN}\n"
              "objectClass: mailgateAlias\nmail: team@hand.example\n"
              f"mailgateAliasTarget: {carol}\nmailgateAliasTarget: {dave}\n\n")
    ldap_tool(slapd, "ldapadd", input=ldif)
    assert api(live_gateway, "GET", f"/mail/account/{carol}/").json()["spoofing_whitelist"] \
        == "skylime.net"
    assert mail_stack.imap_login(carol, "carol pw")
    team = subject()
    assert mail_stack.send25("x@outside.test", ["team@hand.example"], subject=team).sent
    mail_stack.wait_for_mail(carol, "carol pw", team)
    mail_stack.wait_for_mail(dave, "dave pw", team)
    assert mail_stack.submit(carol, "carol pw", "x@skylime.net", [dave]).sent
    assert_refused(mail_stack.submit(carol, "carol pw", dave, [dave]), "rcpt", 553)
    assert_refused(mail_stack.submit(carol, "carol pw", carol, [dave], from_header=dave),
                   "data", 550, "5.7.1")
    ldap_tool(slapd, "ldapmodify", input=(
        f"dn: mail={carol},dc=hand.example,ou=domains,{BASE_DN}\nchangetype: modify\n"
        "replace: mailgateSubmissionDisabled\nmailgateSubmissionDisabled: TRUE\n"))
    assert_refused(mail_stack.submit(carol, "carol pw", carol, [dave]), "rcpt", 554)
    assert mail_stack.imap_login(carol, "carol pw")


# -- unusual local parts ------------------------------------------------------------


def test_every_atext_local_part_logs_in_and_receives(mail_stack: MailStack,
                                                      live_gateway: LiveGateway) -> None:
    names = ["a+b", "x=y", "o'brien", "a*b", "t{x}", "p%q", "s$t", "h#sh", "w&z", "b|c",
             "q?r", "c^d", "tick`s", "til~de", "ex!cl", "sla/sh", "sla//sh", "dot.ted"]
    for name in names:
        create_account(live_gateway, f"{name}@example.com", f"pw {name}")
    for name in names:
        assert mail_stack.imap_login(f"{name}@example.com", f"pw {name}"), name
    # Delivery through Postfix and LMTP ("%" and "!" are routing syntax to
    # Postfix's rewriting, so they get no inbound test here).
    delivered = {}
    for name in names:
        if "%" in name or "!" in name:
            continue
        delivered[name] = subject()
        result = mail_stack.send25("x@outside.test", [f"{name}@example.com"],
                                   subject=delivered[name])
        assert result.sent, f"{name}: {result}"
    for name, subj in delivered.items():
        mail_stack.wait_for_mail(f"{name}@example.com", f"pw {name}", subj)
    # "/" in a local part would nest or alias maildirs ("sla//sh" and "sla/sh"
    # would be one path); such names get "@<md5>" directories, kept apart.
    domain_dir = mail_stack.mail_root / "example.com"
    for name in ("sla/sh", "sla//sh"):
        hashed = domain_dir / ("@" + hashlib.md5(name.encode()).hexdigest())  # noqa: S324
        files = [p for sub in ("new", "cur") for p in (hashed / "Maildir" / sub).iterdir()]
        assert any(delivered[name] in p.read_text(errors="replace") for p in files), name
    assert not (domain_dir / "sla").exists()


# -- the maps and Dovecot's lookups, directly -----------------------------------------


def test_rendered_maps_answer_as_postfix_expects(mail_stack: MailStack,
                                                 live_gateway: LiveGateway) -> None:
    create_account(live_gateway, ALICE, "pw", spoofing_whitelist="office@example.com,skylime.net")
    create_account(live_gateway, BOB, "pw")
    create_account(live_gateway, "dave@example.org", "pw", spoofing_whitelist="*")
    api(live_gateway, "POST", f"/mail/account/{BOB}/disable_submission/")
    api(live_gateway, "POST", "/mail/alias/",
        json={"name": "office", "domain": "example.com", "to": f"{ALICE},{BOB}"})
    q = mail_stack.postmap_query
    assert q("ldap-domains.cf", "EXAMPLE.ORG") == "example.org"
    assert q("ldap-mailboxes.cf", "Alice@Example.COM") == ALICE
    assert q("ldap-mailboxes.cf", "office@example.com") is None
    assert q("ldap-aliases.cf", "office@example.com") == f"{ALICE},{BOB}"
    assert q("ldap-aliases.cf", ALICE) is None
    logins = q("ldap-sender-login.cf", "someone@skylime.net")
    assert logins is not None and set(logins.split(",")) == {ALICE, "dave@example.org"}
    assert q("ldap-sender-login.cf", "@frubar.net") == "dave@example.org"
    assert q("ldap-sender-login.cf", "alice") is None  # %d: no domain, no query
    owners = q("ldap-sender-login.cf", "office@example.com")
    assert owners is not None and set(owners.split(",")) == {ALICE, "dave@example.org"}
    # Filter metacharacters in keys are escaped, never wildcards.
    assert q("ldap-mailboxes.cf", "*@example.com") is None
    assert q("ldap-mailboxes.cf", "a)(mail=*") is None
    assert q("ldap-submission-disabled.cf", BOB) == "REJECT sending is disabled for this account"
    assert q("ldap-submission-disabled.cf", ALICE) is None
    # Dovecot: iteration lists every account, user lookups see the canonical name.
    listed = mail_stack.doveadm("user", "*")
    assert listed.returncode == 0, listed.stderr
    assert set(listed.stdout.split()) == {ALICE, BOB, "dave@example.org"}
    user = mail_stack.doveadm("user", "-f", "home", "ALICE@example.com")
    assert user.stdout.strip() == str(mail_stack.mail_root / "example.com" / "alice")
    auth = mail_stack.doveadm("auth", "test", ALICE, "pw")
    assert auth.returncode == 0 and "auth succeeded" in auth.stdout, auth.stdout + auth.stderr


def test_the_index_check_sees_unindexed_searches(slapd: ManagedSlapd,
                                                 request: pytest.FixtureRequest) -> None:
    """Guard for every_filter_indexed: an unindexed search does show in the log."""
    before = slapd.log_path.stat().st_size
    ldap_tool(slapd, "ldapsearch", "-LLL", "-b", f"ou=domains,{BASE_DN}",
              "(description=probe)", "1.1")
    with open(slapd.log_path, "rb") as log:
        log.seek(before)
        text = log.read().decode("utf-8", "replace")
    assert "(description) not indexed" in text
    request.node.stash[ALLOW_UNINDEXED] = True


# -- propagation ----------------------------------------------------------------------


def test_changes_are_in_force_for_the_next_transaction(mail_stack: MailStack,
                                                       live_gateway: LiveGateway) -> None:
    """Measures API call and next-transaction times; run with -s to see them."""
    create_account(live_gateway, ALICE, "pw-0")
    create_account(live_gateway, BOB, "bob pw")
    rows: list[tuple[str, float, float]] = []
    for i in range(1, 6):
        t0 = time.perf_counter()
        api(live_gateway, "POST", f"/mail/account/{ALICE}/set_password/",
            json={"password": f"pw-{i}"})
        t1 = time.perf_counter()
        assert mail_stack.imap_login(ALICE, f"pw-{i}")  # the next IMAP login
        t2 = time.perf_counter()
        assert not mail_stack.imap_login(ALICE, f"pw-{i - 1}")
        rows.append(("set_password -> IMAP login", t1 - t0, t2 - t1))
    password = "pw-5"
    for _ in range(5):
        t0 = time.perf_counter()
        api(live_gateway, "POST", f"/mail/account/{ALICE}/disable_submission/")
        t1 = time.perf_counter()
        result = mail_stack.submit(ALICE, password, ALICE, [BOB])  # the next submission
        t2 = time.perf_counter()
        assert_refused(result, "rcpt", 554)
        rows.append(("disable_submission -> SMTP", t1 - t0, t2 - t1))
        t0 = time.perf_counter()
        api(live_gateway, "POST", f"/mail/account/{ALICE}/enable_submission/")
        t1 = time.perf_counter()
        assert mail_stack.submit(ALICE, password, ALICE, [BOB]).sent
        t2 = time.perf_counter()
        rows.append(("enable_submission -> SMTP", t1 - t0, t2 - t1))
    print("\npropagation (seconds): change | API call | next transaction (saw the change)")
    for label in dict.fromkeys(r[0] for r in rows):
        mine = [r for r in rows if r[0] == label]
        api_times = sorted(r[1] for r in mine)
        txn_times = sorted(r[2] for r in mine)
        print(f"  {label:28s} API median {api_times[len(mine) // 2]:.4f} "
              f"max {api_times[-1]:.4f} | next transaction median "
              f"{txn_times[len(mine) // 2]:.4f} max {txn_times[-1]:.4f} | n={len(mine)}")


# -- the Basic JSON sync -------------------------------------------------------------


def test_accounts_imported_by_the_json_sync_work_on_the_mail_path(
        mail_stack: MailStack, live_gateway: LiveGateway, settings: Settings,
        tmp_path: Path) -> None:
    """The Basic JSON sync end to end: $1$ and $6$rounds=100000$ hashes, the
    optional fields, an alias; then IMAP, LMTP, submission and the whitelist."""
    from gateway.sync.runner import SyncRunner

    old, new, team = "old@synced.example", "new@synced.example", "team@synced.example"
    document = {"synced.example": {
        "account": [
            {"name": "old", "password": md5_crypt.hash("md5 password"),
             "spoofing_whitelist": "skylime.net"},
            {"name": "new", "password": sha512_crypt.using(rounds=100_000).hash("sha pw"),
             "submission_disabled": True},
        ],
        "alias": [{"name": "team", "to": f"{old},{new}"}],
    }}
    docs, server = httpsserver.start(tmp_path)
    runner = SyncRunner(settings.replace(json_urls=(docs.serve("/mail.json", document),),
                                         json_ca_file=docs.ca_file))
    try:
        report = runner.run()
        assert report.result == "applied", report.reason
    finally:
        runner.close()
        server.shutdown()
        server.server_close()
    assert mail_stack.imap_login(old, "md5 password")
    assert mail_stack.imap_login(new, "sha pw")
    to_team = subject()
    assert mail_stack.send25("x@outside.test", [team], subject=to_team).sent
    mail_stack.wait_for_mail(old, "md5 password", to_team)
    mail_stack.wait_for_mail(new, "sha pw", to_team)
    assert mail_stack.submit(old, "md5 password", "x@skylime.net", [new]).sent
    assert_refused(mail_stack.submit(old, "md5 password", new, [new]), "rcpt", 553)
    assert_refused(mail_stack.submit(new, "sha pw", new, [old]), "rcpt", 554,
                   "sending is disabled")


# -- the directory down (last: it restarts the session's slapd) -------------------------


def test_directory_down_defers_everything_and_recovers(
        mail_stack: MailStack, live_gateway: LiveGateway, slapd: RunningSlapd) -> None:
    create_account(live_gateway, ALICE, "pw", spoofing_whitelist="office@example.com")
    create_account(live_gateway, BOB, "bob pw")
    with slapd.stopped():
        # Inbound mail is deferred (the sender retries), never bounced.
        inbound = mail_stack.send25("x@outside.test", [ALICE])
        assert inbound.stage == "rcpt" and inbound.code == 451, str(inbound)
        assert "Temporary lookup failure" in inbound.text
        # Logins fail temporarily (no cache can keep an old password alive).
        error = mail_stack.imap_error(ALICE, "pw")
        assert error is not None and "UNAVAILABLE" in error, error
        # SMTP AUTH fails too. Dovecot reports a temporary failure, but Postfix
        # 3.7 answers it with 535 (not 454): nothing is sent or bounced either way.
        submitted = mail_stack.submit(ALICE, "pw", ALICE, [BOB])
        assert submitted.stage == "auth" and submitted.code in (454, 535), str(submitted)
    mail_stack.wait_until_login(ALICE, "pw")
    # Mail for an address that was not tried during the outage flows at once.
    to_bob = subject()
    assert mail_stack.send25("x@outside.test", [BOB], subject=to_bob).sent
    mail_stack.wait_for_mail(BOB, "bob pw", to_bob)
    # smtpd caches address resolution per (sender, recipient) across sessions,
    # failures included, until the process exits (up to max_idle, 100 s): the
    # documented remedy after an outage is "postfix reload".
    assert mail_stack.postfix("reload").returncode == 0
    back = subject()
    wait_until(lambda: mail_stack.send25("x@outside.test", [ALICE], subject=back).sent,
               "inbound mail for alice after postfix reload", timeout=30, interval=0.5)
    mail_stack.wait_for_mail(ALICE, "pw", back)
    # The milter's pooled LDAP connection died with slapd; it reconnects.
    assert mail_stack.submit(ALICE, "pw", ALICE, [BOB], from_header="office@example.com").sent

