"""Least-privilege ACLs of ldif/config.ldif, checked with each service identity."""

from __future__ import annotations

import subprocess

import pytest

from gateway.slapd import ManagedSlapd

from tests.support.api import Client
from tests.support.constants import BASE_DN

ALICE = f"mail=alice@example.com,dc=example.com,ou=domains,{BASE_DN}"


def as_service(slapd: ManagedSlapd, service: str | None, tool: str, *args: str,
               input: str | None = None) -> subprocess.CompletedProcess[str]:
    bind = ["-D", slapd.service_dn(service), "-y", str(slapd.password_file(service))] \
        if service else []
    output = ["-LLL", "-o", "ldif-wrap=no"] if tool == "ldapsearch" else []
    return subprocess.run([tool, "-x", *output, "-H", slapd.url, *bind, *args], input=input,
                          capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture
def seeded(client: Client) -> None:
    assert client.post("/mail/account/", json={
        "name": "alice", "domain": "example.com", "password": "pw",
        "spoofing_whitelist": "example.org", "submission_disabled": True}).status_code == 201
    assert client.post("/mail/alias/", json={"name": "office", "domain": "example.com",
                                             "to": "alice@example.com"}).status_code == 201


def read(slapd: ManagedSlapd, service: str | None, base: str, *attrs: str) -> str:
    return as_service(slapd, service, "ldapsearch", "-b", base, "-s", "base",
                      "(objectClass=*)", *attrs).stdout


@pytest.mark.usefixtures("seeded")
def test_anonymous_reads_nothing(slapd: ManagedSlapd) -> None:
    for base in (BASE_DN, f"ou=domains,{BASE_DN}", ALICE, f"ou=tokens,ou=gateway,{BASE_DN}"):
        result = as_service(slapd, None, "ldapsearch", "-b", base, "(objectClass=*)")
        assert "dn:" not in result.stdout, base
    assert read(slapd, None, "", "namingContexts") == ""  # not even the root DSE


@pytest.mark.usefixtures("seeded")
def test_postfix_reads_routing_never_passwords(slapd: ManagedSlapd) -> None:
    entry = read(slapd, "postfix", ALICE, "*")
    assert "mail: alice@example.com" in entry
    assert "mailgateSenderAllowed: example.org" in entry
    assert "mailgateSubmissionDisabled: TRUE" in entry
    assert "userPassword" not in entry
    alias = read(slapd, "postfix", f"mail=office@example.com,dc=example.com,ou=domains,{BASE_DN}",
                 "mailgateAliasTarget")
    assert "mailgateAliasTarget: alice@example.com" in alias
    assert "dc: example.com" in read(slapd, "postfix",
                                     f"dc=example.com,ou=domains,{BASE_DN}", "dc")


@pytest.mark.usefixtures("seeded")
def test_dovecot_reads_what_authentication_needs(slapd: ManagedSlapd) -> None:
    entry = read(slapd, "dovecot", ALICE, "*")
    assert "mail: alice@example.com" in entry
    assert "userPassword:: " in entry
    assert "mailgateSenderAllowed" not in entry and "mailgateOrigin" not in entry


@pytest.mark.usefixtures("seeded")
def test_milter_reads_sender_policy_only(slapd: ManagedSlapd) -> None:
    entry = read(slapd, "milter", ALICE, "*")
    assert "mailgateSenderAllowed: example.org" in entry
    assert "userPassword" not in entry


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("service", ["postfix", "dovecot", "milter", None])
def test_readers_cannot_write(slapd: ManagedSlapd, service: str | None) -> None:
    change = (f"dn: {ALICE}\nchangetype: modify\nreplace: mailgateSenderAllowed\n"
              "mailgateSenderAllowed: *\n")
    result = as_service(slapd, service, "ldapmodify", input=change)
    # 8 strongerAuthRequired (anonymous), 50 insufficientAccessRights
    assert result.returncode in (8, 50), result
    added = as_service(slapd, service, "ldapadd", input=(
        f"dn: mail=evil@example.com,dc=example.com,ou=domains,{BASE_DN}\n"
        "objectClass: mailgateAlias\nmail: evil@example.com\nmailgateAliasTarget: x@y.example\n"))
    assert added.returncode in (8, 50), added
    assert "mailgateSenderAllowed: example.org" in read(slapd, "postfix", ALICE,
                                                        "mailgateSenderAllowed")


@pytest.mark.usefixtures("seeded")
def test_services_see_no_tokens_and_gateway_cannot_touch_service_passwords(
        slapd: ManagedSlapd) -> None:
    for service in ("postfix", "dovecot", "milter"):
        tokens = as_service(slapd, service, "ldapsearch", "-b", f"ou=gateway,{BASE_DN}",
                            "(objectClass=*)")
        assert "dn:" not in tokens.stdout, service
    change = (f"dn: {slapd.service_dn('dovecot')}\nchangetype: modify\nreplace: userPassword\n"
              "userPassword: hijacked\n")
    assert as_service(slapd, "gateway", "ldapmodify", input=change).returncode == 50
    assert "userPassword" not in read(slapd, "gateway", slapd.service_dn("dovecot"),
                                      "userPassword")


@pytest.mark.usefixtures("seeded")
def test_replicator_reads_everything_and_writes_nothing(slapd: ManagedSlapd) -> None:
    """What a consumer needs: every entry, password hashes and operational attributes."""
    entry = read(slapd, "replicator", ALICE, "*", "+")
    for wanted in ("userPassword:: ", "mailgateSenderAllowed: example.org", "mailgateOrigin: ",
                   "entryCSN: ", "entryUUID: "):
        assert wanted in entry, wanted
    assert "userPassword:: " in read(slapd, "replicator", slapd.service_dn("dovecot"), "*")
    tokens = as_service(slapd, "replicator", "ldapsearch", "-b", f"ou=gateway,{BASE_DN}",
                        "(objectClass=*)", "1.1")
    assert "dn: ou=tokens" in tokens.stdout
    assert "contextCSN: " in read(slapd, "replicator", BASE_DN, "contextCSN")
    config = as_service(slapd, "replicator", "ldapsearch", "-b", "cn=config", "(objectClass=*)")
    assert "dn:" not in config.stdout
    change = (f"dn: {ALICE}\nchangetype: modify\nreplace: mailgateSenderAllowed\n"
              "mailgateSenderAllowed: *\n")
    assert as_service(slapd, "replicator", "ldapmodify", input=change).returncode == 50
    added = as_service(slapd, "replicator", "ldapadd", input=(
        f"dn: mail=evil@example.com,dc=example.com,ou=domains,{BASE_DN}\n"
        "objectClass: mailgateAlias\nmail: evil@example.com\nmailgateAliasTarget: x@y.example\n"))
    assert added.returncode == 50, added
