"""Domain limits and quotas in the sync (SPEC.md section 8), on the real slapd.

Every test compares the domain's counters (what Tenants.get reads from the
domain entry) with a real count of its entries.
"""

from __future__ import annotations

import threading
import time

import pytest

import gateway.tenants as tenants_module
from gateway.directory import Directory, any_of
from gateway.entries import A_QUOTA, ACCOUNT_ROLE, ALIAS_ROLE, Layout, decode_int, kind_of
from gateway.errors import LimitExceeded
from gateway.mail import MailDirectory
from gateway.slapd import ManagedSlapd
from gateway.tenants import Tenants

from tests.support.constants import BASE_DN
from tests.support.httpsserver import DocServer
from tests.support.slapd import ldap_tool, mail_entry
from tests.support.sync import CHEAP_HASH, MakeRunner

DOMAIN = "example.com"


def accounts(*names: str, **quotas: int) -> list[dict[str, object]]:
    """Account objects; ``quotas`` by name."""
    made: list[dict[str, object]] = []
    for name in names:
        item: dict[str, object] = {"name": name, "password": CHEAP_HASH}
        if name in quotas:
            item["quota"] = quotas[name]
        made.append(item)
    return made


def document(account: list[dict[str, object]],
             alias: list[dict[str, object]] | None = None) -> dict[str, object]:
    return {DOMAIN: {"account": account, "alias": alias or []}}


def real_counts(directory: Directory, domain: str = DOMAIN) -> tuple[int, int, int]:
    """(accounts, aliases, quota allocated) counted from the domain's entries."""
    found = directory.find(Layout(BASE_DN).domain(domain), any_of(ACCOUNT_ROLE, ALIAS_ROLE),
                           ["objectClass", A_QUOTA])
    kinds = [(kind_of(e), decode_int(e.attrs.get(A_QUOTA))) for e in found]
    return (sum(k != "alias" for k, _q in kinds), sum(k != "account" for k, _q in kinds),
            sum(q for k, q in kinds if k != "alias"))


def counters(directory: Directory, domain: str = DOMAIN) -> tuple[int, int, int]:
    d = Tenants(directory).get(domain)
    return d.accounts, d.aliases, d.quota_allocated


def assert_exact(directory: Directory, domain: str = DOMAIN) -> tuple[int, int, int]:
    counted = real_counts(directory, domain)
    assert counters(directory, domain) == counted
    return counted


def addresses(mail: MailDirectory) -> list[str]:
    return [a.id for a in mail.list_accounts([DOMAIN], page_size=1000).results]


def skip_reasons(report: object) -> dict[str, str]:
    return {s.name: s.reason for s in report.skipped}  # type: ignore[attr-defined]


def test_beyond_max_accounts_the_first_are_created_the_rest_skipped_nothing_deleted(
        make_runner: MakeRunner, docs: DocServer, directory: Directory,
        mail: MailDirectory) -> None:
    Tenants(directory).create(DOMAIN, {"max_accounts": 3})
    mail.create_account("api", DOMAIN, "pw")      # counts against the limit, never deleted
    runner = make_runner(docs.serve("/mail.json", document(accounts("a", "b", "c", "d"))))

    report = runner.run()

    assert report.result == "partial" and report.exit_code == 1
    assert addresses(mail) == ["a@example.com", "api@example.com", "b@example.com"]
    reasons = skip_reasons(report)
    assert set(reasons) == {"c", "d"}
    assert reasons["c"].startswith("max_accounts: example.com holds 3 accounts")
    assert "not created (nothing is deleted to make room)" in reasons["c"]
    assert report.counts["created"] == 2 and report.counts["skipped"] == 2
    assert report.as_json()["skipped"][0]["reason"] == reasons["c"]
    assert assert_exact(directory) == (3, 0, 0)

    # The same run frees room first: a and b are no longer listed, so they are
    # deleted before c, d and e are fitted; e does not fit (api stays).
    docs.serve("/mail.json", document(accounts("c", "d", "e")))
    report = runner.run(force=True)
    assert report.result == "partial"
    assert report.counts["deleted"] == 2 and report.counts["created"] == 2
    assert addresses(mail) == ["api@example.com", "c@example.com", "d@example.com"]
    assert set(skip_reasons(report)) == {"e"}
    assert assert_exact(directory) == (3, 0, 0)

    # Raising the limit lets the next run create what was skipped.
    Tenants(directory).set_limits(DOMAIN, {"max_accounts": 10})
    report = runner.run(full=True)
    assert report.result == "applied", report.reason
    assert assert_exact(directory) == (4, 0, 0)


def test_max_aliases_and_roles_added_to_existing_entries(
        make_runner: MakeRunner, docs: DocServer, directory: Directory,
        mail: MailDirectory) -> None:
    Tenants(directory).create(DOMAIN, {"max_aliases": 2})
    aliases = [{"name": n, "to": "x@example.net"} for n in ("a", "o1", "o2")]
    runner = make_runner(docs.serve("/mail.json", document(accounts("a"), aliases)))

    report = runner.run()

    # The existing-entry changes come first, but a is new here: document order.
    assert report.result == "partial"
    assert set(skip_reasons(report)) == {"o2"}
    assert skip_reasons(report)["o2"].startswith("max_aliases: ")
    assert assert_exact(directory) == (1, 2, 0)
    assert mail.get_alias("a@example.com").to == "x@example.net"   # a is both

    # Taking a role away frees its place in the same run.
    docs.serve("/mail.json", document(accounts("a"), aliases[1:]))
    report = runner.run()
    assert report.result == "applied", report.reason
    assert assert_exact(directory) == (1, 2, 0)


def test_quota_applied_absent_keeps_the_value_new_accounts_get_default_quota(
        make_runner: MakeRunner, docs: DocServer, directory: Directory,
        mail: MailDirectory, slapd: ManagedSlapd) -> None:
    Tenants(directory).create(DOMAIN, {"default_quota": 1000})
    runner = make_runner(docs.serve("/mail.json", document(
        accounts("given", "zero", "default", given=5000, zero=0))))

    assert runner.run().result == "applied"
    assert mail.get_account("given@example.com").quota == 5000
    assert mail.get_account("zero@example.com").quota == 0
    assert mail.get_account("default@example.com").quota == 1000
    assert mail_entry(slapd, "given@example.com")["mailgateQuota"] == ["5000"]
    assert assert_exact(directory) == (3, 0, 6000)

    # Absent keeps the directory's value, also one the API set.
    mail.set_quota("given@example.com", 7000)
    docs.serve("/mail.json", document(accounts("given", "zero", "default")))
    report = runner.run()
    assert report.result == "applied" and report.counts["updated"] == 0
    assert mail.get_account("given@example.com").quota == 7000
    assert mail.get_account("zero@example.com").quota == 0

    # Stated, the document wins: up, down, and to none.
    docs.serve("/mail.json", document(accounts("given", "zero", "default",
                                               given=100, zero=2000, default=0)))
    report = runner.run()
    assert report.result == "applied" and report.counts["updated"] == 3
    assert [mail.get_account(f"{n}@example.com").quota
            for n in ("given", "zero", "default")] == [100, 2000, 0]
    assert assert_exact(directory) == (3, 0, 2100)


def test_a_bad_quota_skips_the_entry_and_leaves_it_as_it_is(
        make_runner: MakeRunner, docs: DocServer, directory: Directory,
        mail: MailDirectory) -> None:
    runner = make_runner(docs.serve("/mail.json", document(accounts("a", a=10))))
    assert runner.run().result == "applied"
    bad: list[object] = [-1, 1.5, True, "lots", 2**50 + 1, None, [1]]
    for value in bad:
        item = {"name": "a", "password": CHEAP_HASH, "quota": value}
        docs.serve("/mail.json", document([item, *accounts("b", b=3)]))
        report = runner.run(force=True)
        assert report.result == "partial", value
        reason = skip_reasons(report)["a"]
        assert reason.startswith("quota: "), (value, reason)
        assert mail.get_account("a@example.com").quota == 10   # protected: not deleted
        assert mail.get_account("b@example.com").quota == 3
    assert assert_exact(directory) == (2, 0, 13)


def test_max_quota_is_respected_and_decreases_free_room_first(
        make_runner: MakeRunner, docs: DocServer, directory: Directory,
        mail: MailDirectory) -> None:
    Tenants(directory).create(DOMAIN, {"max_quota": 3000, "default_quota": 1000})
    runner = make_runner(docs.serve("/mail.json", document(
        accounts("a", "b", "c", "d", "e", b=1500, c=1000, d=0, e=500))))

    report = runner.run()

    assert report.result == "partial"
    reasons = skip_reasons(report)
    assert set(reasons) == {"c", "d"}
    assert reasons["c"].startswith("max_quota: example.com has 500 of its max_quota "
                                   "(3000 bytes) left, the entry needs 1000 more")
    assert reasons["d"].startswith("max_quota: example.com has max_quota 3000: each of its "
                                   "accounts needs a quota")
    assert [a.quota for a in mail.list_accounts([DOMAIN]).results] == [1000, 1500, 500]
    assert assert_exact(directory) == (3, 0, 3000)

    # b goes down in the same run as c is added: the decrease makes the room.
    docs.serve("/mail.json", document(accounts("a", "b", "c", "e", b=500, c=1000, e=500)))
    report = runner.run()
    assert report.result == "applied", report.reason
    assert mail.get_account("c@example.com").quota == 1000
    assert assert_exact(directory) == (4, 0, 3000)

    # A raise past max_quota is skipped and the account keeps its quota.
    docs.serve("/mail.json", document(accounts("a", "b", "c", "e", b=900, c=1000, e=500)))
    report = runner.run()
    assert report.result == "partial"
    assert skip_reasons(report)["b"].startswith("max_quota: ")
    assert "left as it is" in skip_reasons(report)["b"]
    assert mail.get_account("b@example.com").quota == 500
    assert assert_exact(directory) == (4, 0, 3000)


def test_counters_stay_exact_across_runs_in_domains_without_limits(
        make_runner: MakeRunner, docs: DocServer, directory: Directory,
        mail: MailDirectory) -> None:
    # A domain the sync creates gets counters; none of its changes is limited.
    alias = [{"name": "office", "to": "a@example.com"}, {"name": "a", "to": "x@example.net"}]
    runner = make_runner(docs.serve("/mail.json", document(
        accounts("a", "b", "c", a=5, b=7), alias)), sync_max_delete_fraction=1.0)
    assert runner.run().result == "applied"
    assert assert_exact(directory) == (3, 2, 12)
    mail.create_account("api", DOMAIN, "pw", quota=100)
    # Kind changes (sync-owned: replaced), a role taken away, deletes, quota changes.
    docs.serve("/mail.json", document(accounts("office", "a", a=1),
                                      [{"name": "b", "to": "a@example.com"}]))
    report = runner.run()
    assert report.result == "applied", report.reason
    assert report.counts["replaced"] == 2 and report.counts["deleted"] == 1
    assert assert_exact(directory) == (3, 1, 101)
    docs.serve("/mail.json", document([]))
    assert runner.run(force=True).result == "applied"
    assert assert_exact(directory) == (1, 0, 100)


def test_a_drifted_counter_is_repaired_by_the_full_reconcile_and_by_recount(
        make_runner: MakeRunner, docs: DocServer, directory: Directory,
        mail: MailDirectory, slapd: ManagedSlapd, monkeypatch: pytest.MonkeyPatch) -> None:
    settles: list[float] = []      # the settle time before a counter is lowered
    monkeypatch.setattr(tenants_module, "_settle", lambda: settles.append(time.monotonic()))
    tenants = Tenants(directory)
    tenants.create(DOMAIN, {"max_accounts": 4})
    runner = make_runner(docs.serve("/mail.json", document(accounts("a", "b"))))
    assert runner.run().result == "applied"

    def drift(count: int, domain: str = DOMAIN) -> None:
        # As a crash between a claim and its write leaves it (or an ldapmodify).
        ldap_tool(slapd, "ldapmodify", input=(
            f"dn: dc={domain},ou=domains,{BASE_DN}\nchangetype: modify\n"
            f"replace: mailgateAccountCount\nmailgateAccountCount: {count}\n"))

    drift(4)
    assert counters(directory) == (4, 0, 0)
    try:
        mail.create_account("api", DOMAIN, "pw")
    except LimitExceeded as exc:
        assert exc.limit == "max_accounts"       # the drift refuses early, never late
    else:
        raise AssertionError("the drifted counter did not hold")

    # A listed domain with no entries at all is checked too.
    tenants.create("empty.example", {})
    drift(2, "empty.example")

    # The full reconcile recounts before it checks the limits: c and d fit.
    served = document(accounts("a", "b", "c", "d"))
    docs.serve("/mail.json", {**served, "empty.example": {}})
    report = runner.run(full=True)
    assert report.result == "applied", report.reason
    assert report.counts["domains_recounted"] == 2
    assert len(settles) == 1            # one settle time for both domains, not one each
    assert assert_exact(directory) == (4, 0, 0)
    assert assert_exact(directory, "empty.example") == (0, 0, 0)

    # An unchanged document read again in full, counters right: no recount.
    report = runner.run(full=True)
    assert report.result == "applied" and "domains_recounted" not in report.counts
    # Tenants.recount repairs it without a sync (mailgate domain recount).
    drift(1)
    assert counters(directory) == (1, 0, 0)
    assert tenants.recount(DOMAIN).accounts == 4
    assert_exact(directory)


def test_concurrent_api_creates_during_a_sync_never_pass_max_accounts(
        make_runner: MakeRunner, docs: DocServer, directory: Directory,
        mail: MailDirectory) -> None:
    limit, threads, attempts = 20, 4, 10
    Tenants(directory).create(DOMAIN, {"max_accounts": limit})
    runner = make_runner(docs.serve("/mail.json", document(
        accounts(*(f"sync{i}" for i in range(15))))))
    reading = threading.Event()
    refused: list[str] = []
    failures: list[BaseException] = []
    deadline = time.monotonic() + 60

    def create(worker: int) -> None:
        reading.wait(30)
        for i in range(attempts):
            if time.monotonic() > deadline:
                return
            try:
                mail.create_account(f"api{worker}-{i}", DOMAIN, "pw")
            except LimitExceeded as exc:
                refused.append(exc.limit)
            except BaseException as exc:
                failures.append(exc)

    workers = [threading.Thread(target=create, args=(w,)) for w in range(threads)]
    for worker in workers:
        worker.start()
    try:
        # The API creates start while the sync reads, before it claims.
        report = runner.run(progress=lambda phase, _d, _t: reading.set())
    finally:
        reading.set()
        for worker in workers:
            worker.join(60)
    assert not any(w.is_alive() for w in workers)
    assert failures == []
    assert report.result in ("applied", "partial"), report.reason
    # 15 + 40 wanted, 20 allowed: exactly 20, never more; the counter says so.
    counted = real_counts(directory)
    assert counted[0] == limit
    assert counters(directory) == counted
    assert set(refused) == {"max_accounts"}
    created = report.counts["created"]
    assert created + (threads * attempts - len(refused)) == limit
    assert len(skip_reasons(report)) == 15 - created


def test_a_claim_whose_write_fails_is_given_back(
        make_runner: MakeRunner, docs: DocServer, directory: Directory,
        mail: MailDirectory) -> None:
    Tenants(directory).create(DOMAIN, {"max_accounts": 4, "default_quota": 10})
    runner = make_runner(docs.serve("/mail.json", document(accounts("a", "b", "c"))))
    made: list[str] = []

    def meanwhile(phase: str, done: int, total: int) -> None:
        # After the sync read the domain, before it writes: c is made through the API.
        if phase == "reading" and done == total and not made:
            made.append(mail.create_account("c", DOMAIN, "pw").id)

    report = runner.run(progress=meanwhile)

    assert made == ["c@example.com"]
    assert report.result == "partial" and report.error_count == 1
    assert "c@example.com: created by someone else meanwhile" in report.errors[0]
    assert report.counts["created"] == 2
    # The sync claimed three places (4 with the API's c), c's add failed: its
    # place was given back, the API's own claim holds c's.
    assert assert_exact(directory) == (3, 0, 30)
    assert Tenants(directory).get(DOMAIN).max_accounts == 4
    # The counters moved during the read (the API's c): they disagree with
    # what the sync read for that reason alone, so it did not recount.
    assert "domains_recounted" not in report.counts
    assert mail.get_account("c@example.com").origin == "api"
