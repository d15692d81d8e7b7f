"""Tenants (SPEC.md section 8): quotas, domains as objects, and limits that hold,
against the real slapd (and, for concurrency, two real ``mailgate serve``)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests

from gateway.audit import AuditLog
from gateway.directory import Directory
from gateway.errors import DirectoryUnavailable, LimitExceeded
from gateway.mail import MailDirectory
from gateway.settings import Settings
from gateway.slapd import ManagedSlapd
from gateway.tenants import CASCADE_BATCH, MAX_QUOTA
from gateway.tokens import TokenStore

from tests.support.api import Client
from tests.support.constants import ADMIN_TOKEN, BASE_DN
from tests.support.slapd import ldap_tool
from tests.test_serve import Served

GIB = 2**30


def account(client: Client, name: str, domain: str = "example.com", **fields: Any) -> Any:
    return client.post("/mail/account/", json={"name": name, "domain": domain,
                                               "password": "pw", **fields})


def alias(client: Client, name: str, domain: str = "example.com", to: str = "x@example.net"
          ) -> Any:
    return client.post("/mail/alias/", json={"name": name, "domain": domain, "to": to})


def domain(client: Client, name: str = "example.com") -> dict[str, Any]:
    response = client.get(f"/mail/domain/{name}/")
    assert response.status_code == 200, response.json
    return dict(response.json)


def entries_in(slapd: ManagedSlapd, name: str) -> int:
    found = ldap_tool(slapd, "ldapsearch", "-LLL", "-b", f"dc={name},ou=domains,{BASE_DN}",
                      "-s", "one", "(mail=*)", "1.1", check=False)
    return sum(line.startswith("dn: ") for line in found.stdout.splitlines())


def scoped_token(directory: Directory, *domains: str) -> str:
    _info, token = TokenStore(directory, None).create(list(domains))
    return token


# -- quota ---------------------------------------------------------------------------


def test_quota_is_an_account_field_and_set_quota_changes_it(client: Client) -> None:
    created = account(client, "alice", quota=GIB)
    assert created.status_code == 201, created.json
    assert created.json["quota"] == GIB
    assert client.get("/mail/account/alice@example.com/").json["quota"] == GIB
    listed = client.get("/mail/account/?domain=example.com").json["results"]
    assert listed[0]["quota"] == GIB
    changed = client.post("/mail/account/alice@example.com/set_quota/", json={"quota": 5 * GIB})
    assert changed.status_code == 200, changed.json
    assert changed.json["quota"] == 5 * GIB
    assert domain(client)["quota_allocated"] == 5 * GIB
    # A form body, as the original's clients send.
    form = client.post("/mail/account/alice@example.com/set_quota/", data={"quota": "0"})
    assert form.status_code == 200 and form.json["quota"] == 0
    assert domain(client)["quota_allocated"] == 0


@pytest.mark.parametrize("bad", [-1, "abc", True, 1.5, "1e9", MAX_QUOTA + 1, None, [1],
                                 "12345678901234567890123"])
def test_bad_quota_is_400_naming_quota_and_changes_nothing(client: Client, bad: Any) -> None:
    assert account(client, "alice", quota=GIB).status_code == 201
    response = client.post("/mail/account/alice@example.com/set_quota/", json={"quota": bad})
    assert response.status_code == 400, response.json
    assert "quota" in response.json["errors"]
    assert client.get("/mail/account/alice@example.com/").json["quota"] == GIB
    if bad is not None:
        created = account(client, "bob", quota=bad)
        assert created.status_code == 400 and "quota" in created.json["errors"]
        assert client.get("/mail/account/bob@example.com/").status_code == 404


def test_a_new_account_gets_its_domains_default_quota(client: Client) -> None:
    made = client.post("/mail/domain/", json={"name": "Example.COM", "default_quota": GIB})
    assert made.status_code == 201, made.json
    assert made.json["name"] == "example.com"
    assert account(client, "alice").json["quota"] == GIB
    assert account(client, "bob", quota=2 * GIB).json["quota"] == 2 * GIB
    assert domain(client)["quota_allocated"] == 3 * GIB


# -- domains ---------------------------------------------------------------------------


def test_domain_counts_follow_every_change(client: Client, slapd: ManagedSlapd) -> None:
    assert client.get("/mail/domain/example.com/").status_code == 404
    account(client, "alice", quota=10)
    account(client, "bob", quota=20)
    alias(client, "office")
    alias(client, "alice")            # the account also forwards: one account, one alias
    got = domain(client)
    assert (got["accounts"], got["aliases"], got["quota_allocated"]) == (2, 2, 30)
    assert got["over_limit"] is False
    account(client, "office", quota=5)   # the alias gets a mailbox
    assert (domain(client)["accounts"], domain(client)["aliases"]) == (3, 2)
    assert client.delete("/mail/account/alice@example.com/").status_code == 204
    got = domain(client)
    assert (got["accounts"], got["aliases"], got["quota_allocated"]) == (2, 2, 25)
    assert client.delete("/mail/alias/office@example.com/").status_code == 204
    assert (domain(client)["accounts"], domain(client)["aliases"]) == (2, 1)
    for address in ("bob", "office"):
        assert client.delete(f"/mail/account/{address}@example.com/").status_code == 204
    assert client.delete("/mail/alias/alice@example.com/").status_code == 204
    # Made by its first account, it goes with its last entry, as before.
    assert client.get("/mail/domain/example.com/").status_code == 404
    # One made by POST stays.
    client.post("/mail/domain/", json={"name": "example.org"})
    account(client, "a", "example.org")
    client.delete("/mail/account/a@example.org/")
    assert domain(client, "example.org")["accounts"] == 0
    assert entries_in(slapd, "example.org") == 0


def test_domain_list_and_scope(client: Client, directory: Directory) -> None:
    for name in ("b.example", "a.example", "c.example"):
        assert client.post("/mail/domain/", json={"name": name, "max_accounts": 5}
                           ).status_code == 201
    listed = client.get("/mail/domain/?page_size=2").json
    assert listed["count"] == 3
    assert [d["name"] for d in listed["results"]] == ["a.example", "b.example"]
    assert listed["results"][0]["max_accounts"] == 5
    assert listed["next"] is not None and "page=2" in listed["next"]
    token = scoped_token(directory, "b.example", "nothere.example")
    tenant = client.with_token(token)
    mine = tenant.get("/mail/domain/").json
    assert [d["name"] for d in mine["results"]] == ["b.example"]
    assert tenant.get("/mail/domain/b.example/").status_code == 200
    assert tenant.get("/mail/domain/a.example/").status_code == 403
    # Only the admin changes domains.
    assert tenant.post("/mail/domain/", json={"name": "d.example"}).status_code == 403
    assert tenant.put("/mail/domain/b.example/", json={"max_accounts": 500}).status_code == 403
    assert tenant.delete("/mail/domain/b.example/").status_code == 403
    assert domain(client, "b.example")["max_accounts"] == 5
    assert client.post("/mail/domain/", json={"name": "a.example"}).status_code == 409


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "x.example", "max_accounts": -1}, "max_accounts"),
    ({"name": "x.example", "max_aliases": "many"}, "max_aliases"),
    ({"name": "x.example", "max_quota": True}, "max_quota"),
    ({"name": "x.example", "default_quota": 2**60}, "default_quota"),
    ({"name": "x.example", "default_quota": 10, "max_quota": 5}, "default_quota"),
    ({"name": "not a domain"}, "name"),
    ({"max_accounts": 1}, "name"),
    ({"name": "x.example", "accounts": 3}, "accounts"),
])
def test_bad_domain_bodies_are_400_naming_the_field(client: Client, body: dict[str, Any],
                                                    field: str) -> None:
    response = client.post("/mail/domain/", json=body)
    assert response.status_code == 400, response.json
    assert field in response.json["errors"]
    assert client.get("/mail/domain/").json["count"] == 0


# -- limits ----------------------------------------------------------------------------


def test_limits_refuse_with_409_naming_the_limit_and_change_nothing(
        client: Client, slapd: ManagedSlapd) -> None:
    client.post("/mail/domain/", json={"name": "example.com", "max_accounts": 2,
                                       "max_aliases": 1, "max_quota": 3 * GIB,
                                       "default_quota": GIB})
    assert account(client, "a").status_code == 201
    assert account(client, "b").status_code == 201
    refused = account(client, "c")
    assert refused.status_code == 409
    assert set(refused.json["errors"]) == {"max_accounts"}
    assert client.get("/mail/account/c@example.com/").status_code == 404
    assert alias(client, "o").status_code == 201
    refused = alias(client, "p")
    assert refused.status_code == 409 and set(refused.json["errors"]) == {"max_aliases"}
    # The quota total: 2 GiB allocated of 3.
    refused = client.post("/mail/account/a@example.com/set_quota/", json={"quota": 3 * GIB})
    assert refused.status_code == 409 and set(refused.json["errors"]) == {"max_quota"}
    assert client.get("/mail/account/a@example.com/").json["quota"] == GIB
    done = client.post("/mail/account/a@example.com/set_quota/", json={"quota": 2 * GIB})
    assert done.status_code == 200
    # In a domain with max_quota, no mailbox may be unlimited.
    refused = client.post("/mail/account/a@example.com/set_quota/", json={"quota": 0})
    assert refused.status_code == 409 and "max_quota" in refused.json["errors"]
    got = domain(client)
    assert (got["accounts"], got["aliases"], got["quota_allocated"]) == (2, 1, 3 * GIB)
    assert entries_in(slapd, "example.com") == 3


def test_lowering_a_limit_reports_over_limit_and_blocks_creates(client: Client) -> None:
    for name in ("a", "b", "c"):
        account(client, name)
    lowered = client.put("/mail/domain/example.com/", json={"max_accounts": 2})
    assert lowered.status_code == 200, lowered.json
    assert lowered.json["over_limit"] is True and lowered.json["accounts"] == 3
    assert account(client, "d").status_code == 409
    assert client.delete("/mail/account/c@example.com/").status_code == 204
    assert domain(client)["over_limit"] is False
    assert account(client, "d").status_code == 409      # 2 of 2
    client.delete("/mail/account/b@example.com/")
    assert account(client, "d").status_code == 201
    # 0 removes a limit; limits left out stay.
    client.put("/mail/domain/example.com/", json={"max_aliases": 7})
    assert domain(client)["max_accounts"] == 2
    client.put("/mail/domain/example.com/", json={"max_accounts": 0})
    assert account(client, "e").status_code == 201
    renamed = client.put("/mail/domain/example.com/", json={"name": "example.org"})
    assert renamed.status_code == 400 and "name" in renamed.json["errors"]


def test_limit_refusals_are_counted_and_audited(client: Client) -> None:
    client.post("/mail/domain/", json={"name": "example.com", "max_accounts": 1})
    account(client, "a")
    series = 'mailgate_limit_refusals_total{limit="max_accounts",source="api"}'
    before = _value(client.get("/metrics").get_data(as_text=True), series)
    assert account(client, "b").status_code == 409
    scrape = client.get("/metrics").get_data(as_text=True)
    assert _value(scrape, series) == before + 1
    assert 'mailgate_domain_usage{domain="example.com",resource="accounts"} 1.0' in scrape
    assert 'mailgate_domain_limit{domain="example.com",resource="accounts"} 1.0' in scrape
    events = client.get("/audit/?domain=example.com").json["results"]
    operations = [e["operation"] for e in events]
    assert "domain.create" in operations and "domain.limit_refused" in operations
    refused = next(e for e in events if e["operation"] == "domain.limit_refused")
    assert refused["limit"] == "max_accounts" and refused["value"] == 1


def _value(scrape: str, series: str) -> float:
    for line in scrape.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


# -- deleting a domain -------------------------------------------------------------------


def test_delete_is_refused_while_the_domain_holds_entries(client: Client) -> None:
    account(client, "a")
    refused = client.delete("/mail/domain/example.com/")
    assert refused.status_code == 409 and "cascade" in refused.json["errors"]
    assert client.get("/mail/account/a@example.com/").status_code == 200
    client.delete("/mail/account/a@example.com/")
    client.post("/mail/domain/", json={"name": "example.com"})
    assert client.delete("/mail/domain/example.com/").status_code == 204
    assert client.get("/mail/domain/example.com/").status_code == 404


def test_cascade_delete_in_batches_one_audit_event_and_a_rerun_finishes(
        directory: Directory, slapd: ManagedSlapd) -> None:
    trail = AuditLog(directory)
    mail = MailDirectory(directory, 1000, trail)
    count = CASCADE_BATCH + 150
    ldif = "".join(
        f"dn: mail=u{i}@big.example,dc=big.example,ou=domains,{BASE_DN}\n"
        "objectClass: mailgateAccount\n"
        f"mail: u{i}@big.example\nuserPassword: x\nmailgateOrigin: api\n\n"
        for i in range(count))
    mail.domains.ensure("big.example")
    ldap_tool(slapd, "ldapadd", input=ldif)
    mail.create_alias("list", "big.example", "a@example.net")
    assert mail.domains.recount("big.example").accounts == count

    # Interrupted after its first batch (the connection is lost) ...
    real = directory.write_many
    batches = 0

    def failing(*args: Any, **kwargs: Any) -> Any:
        nonlocal batches
        batches += 1
        if batches > 1:
            raise DirectoryUnavailable("LDAP server unreachable (test: cut)")
        return real(*args, **kwargs)

    directory.write_many = failing  # type: ignore[method-assign]
    with pytest.raises(DirectoryUnavailable):
        mail.domains.delete("big.example", cascade=True)
    directory.write_many = real  # type: ignore[method-assign]
    assert 0 < entries_in(slapd, "big.example") < count + 1
    # ... and finished by running it again.
    deleted = mail.domains.delete("big.example", cascade=True)
    assert deleted.entries == count + 1 - CASCADE_BATCH
    assert entries_in(slapd, "big.example") == 0
    assert mail.domains.find("big.example") is None
    events = [e for e in trail.read() if e.get("operation") == "domain.delete"]
    assert len(events) == 1 and events[0]["cascade"] is True
    assert events[0]["entries"] == deleted.entries


# -- drift and repair --------------------------------------------------------------------


def test_a_drifted_counter_is_repaired_by_recount(client: Client, slapd: ManagedSlapd,
                                                   mail: MailDirectory) -> None:
    client.post("/mail/domain/", json={"name": "example.com", "max_accounts": 3})
    account(client, "a", quota=100)
    # A crash between a claim and its write leaves the counter too high.
    ldap_tool(slapd, "ldapmodify", input=(
        f"dn: dc=example.com,ou=domains,{BASE_DN}\nchangetype: modify\n"
        "replace: mailgateAccountCount\nmailgateAccountCount: 3\n-\n"
        "replace: mailgateQuotaAllocated\nmailgateQuotaAllocated: 999\n"))
    assert account(client, "b").status_code == 409     # refuses early, never over
    repaired = mail.domains.recount_all(settle=lambda: None)
    assert [d.name for d in repaired] == ["example.com"]
    got = domain(client)
    assert (got["accounts"], got["quota_allocated"]) == (1, 100)
    assert account(client, "b").status_code == 201
    assert mail.domains.recount_all() == []


def test_many_drifted_domains_are_recounted_with_one_settle_time(mail: MailDirectory) -> None:
    # After a crash mid-import every domain of the import can be too high: a
    # settle time per domain would make the next sync wait minutes.
    names = [f"d{n}.example" for n in range(5)]
    for name in names:
        mail.domains.create(name, {"max_accounts": 50})
        mail.create_account("a", name, "pw")
        mail.domains.claim(name, accounts=3, quota=0, mailbox=True)   # writes never came
    settles: list[int] = []
    repaired = mail.domains.recount_all(names, settle=lambda: settles.append(1))
    assert settles == [1]
    assert sorted(d.name for d in repaired) == names
    assert [mail.domains.find(n).accounts for n in names] == [1] * 5  # type: ignore[union-attr]
    # Nothing to lower: no settle time at all.
    assert mail.domains.recount_all(names, settle=lambda: settles.append(1)) == []
    assert settles == [1]


def test_a_recount_does_not_count_out_a_create_between_its_claim_and_its_write(
        mail: MailDirectory) -> None:
    mail.domains.create("example.com", {"max_accounts": 1})
    # A create has claimed the last place and is about to write its entry ...
    mail.domains.claim("example.com", accounts=1, quota=0, mailbox=True)

    def the_create_writes() -> None:     # ... while the recount settles
        mail.dir.add(mail.layout.address("late@example.com"), "mailgateAccount",
                     {"mail": ["late@example.com"], "userPassword": ["x"]})

    domain = mail.domains.recount("example.com", settle=the_create_writes)
    assert domain.accounts == 1
    with pytest.raises(LimitExceeded):
        mail.create_account("second", "example.com", "pw")
    # A claim whose write never came (a crash) is given back by the recount.
    mail.domains.claim("example.com", aliases=1)
    assert mail.domains.find("example.com").aliases == 1   # type: ignore[union-attr]
    assert mail.domains.recount("example.com", settle=lambda: None).aliases == 0


# -- concurrency: two gateway processes ------------------------------------------------------


@pytest.fixture
def two_gateways(slapd: ManagedSlapd, tmp_path: Path) -> Any:
    env = {"MAILGATE_LDAP_URL": slapd.url, "MAILGATE_LDAP_BASE_DN": BASE_DN,
           "MAILGATE_LDAP_PASSWORD_FILE": str(slapd.password_file("gateway")),
           "MAILGATE_ADMIN_TOKEN": ADMIN_TOKEN, "MAILGATE_WORKERS": "2",
           "MAILGATE_THREADS": "8"}
    servers = [Served(tmp_path / f"gw{i}", **env) for i in range(2)]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


def test_limits_hold_with_16_clients_on_two_gateways(two_gateways: list[Served],
                                                      slapd: ManagedSlapd) -> None:
    limit, quota_limit = 10, 12 * GIB
    first = two_gateways[0]
    made = requests.post(first.url + "/mail/domain/", json={
        "name": "race.example", "max_accounts": limit, "max_aliases": limit,
        "max_quota": quota_limit, "default_quota": GIB},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        verify=str(first.data / "tls" / "cert.pem"), timeout=30)
    assert made.status_code == 201, made.text
    outcomes: Counter[tuple[str, int]] = Counter()
    reasons: Counter[str] = Counter()
    start = threading.Barrier(16)
    deadline = time.monotonic() + 120

    def client(number: int) -> None:
        server = two_gateways[number % 2]
        session = requests.Session()
        ca = str(server.data / "tls" / "cert.pem")   # per request: REQUESTS_CA_BUNDLE wins
        session.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
        start.wait(timeout=60)
        for attempt in range(4):       # 64 attempts for 10 places of each kind
            if time.monotonic() > deadline:
                return
            kind = "account" if attempt % 2 == 0 else "alias"
            body: dict[str, Any] = {"name": f"c{number}-{attempt}", "domain": "race.example"}
            body.update({"password": "pw"} if kind == "account" else {"to": "x@example.net"})
            answer = session.post(f"{server.url}/mail/{kind}/", json=body, timeout=60,
                                  verify=ca)
            outcomes[(kind, answer.status_code)] += 1
            if answer.status_code == 409:
                reasons.update(list(answer.json()["errors"]))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert not any(t.is_alive() for t in threads)
    for server in two_gateways:
        server.stop()
    output = two_gateways[0].output + two_gateways[1].output
    where = output.find("Traceback")
    assert where < 0, output[max(0, where - 300):where + 4000]
    # Each kind: 32 attempts; accounts are bounded by max_accounts (10) and by
    # max_quota (12 GiB at 1 GiB each), aliases by max_aliases.
    assert outcomes[("account", 201)] == limit, outcomes
    assert outcomes[("alias", 201)] == limit, outcomes
    assert outcomes[("account", 409)] == outcomes[("alias", 409)] == 32 - limit, outcomes
    assert set(reasons) <= {"max_accounts", "max_aliases"}, reasons
    assert entries_in(slapd, "race.example") == 2 * limit
    directory = Directory(Settings(ldap_url=slapd.url, ldap_base_dn=BASE_DN,
                                   ldap_password=slapd.password("gateway"),
                                   data_dir=slapd.root))
    try:
        got = MailDirectory(directory, 1000).domains.get("race.example")
    finally:
        directory.close()
    assert (got.accounts, got.aliases, got.quota_allocated) == (limit, limit, limit * GIB)
    assert not got.over_limit
