"""The sync's writes in LDAP transactions (``MAILGATE_LDAP_TRANSACTION_SIZE``).

Off by default (slapd 2.5.13 segfaults now and then under them,
docs/benchmarks.md); with it on, the sync must stay exactly as safe and as
exact as with single writes: the same entries, one write for one change,
failures reported per entry with everything else applied, and a run that
slapd died under converges on the next (slapd started again, as the
supervisor does: tests.support.slapd.surviving_crashes).
"""

from __future__ import annotations

from typing import Any

from gateway.errors import DirectoryUnavailable
from gateway.mail import MailDirectory
from gateway.slapd import ManagedSlapd
from gateway.sync.runner import RunReport, SyncRunner

from tests.support.httpsserver import DocServer
from tests.support.slapd import own_slapd_fixture, surviving_crashes, transactions
from tests.support.sync import CAROL_HASH, CHEAP_HASH, MakeRunner, adds_by_hand_while_applying

SIZE = 10


slapd = own_slapd_fixture("slapd-sync-txn")


def document(accounts: int, hashes: dict[int, str] | None = None) -> dict[str, Any]:
    hashes = hashes or {}
    return {f"d{d}.example": {
        "account": [{"name": f"u{i}", "password": hashes.get(d * 100 + i, CHEAP_HASH)}
                    for i in range(accounts)],
        "alias": [{"name": "team", "to": f"u0@d{d}.example"}]} for d in range(3)}


def converged(slapd: ManagedSlapd, runner: SyncRunner, **options: Any) \
        -> tuple[RunReport, int]:
    """A run; if slapd died under it, slapd is started again and the run repeated
    (from what the dead one left). The run that finished, and the deaths."""
    def attempt() -> RunReport:
        runner.status()     # settles what a run cut off left (its record, its lock)
        report = runner.run(**options)
        if report.result == "failed" and "unreachable" in report.reason:
            raise DirectoryUnavailable(report.reason)
        return report
    return surviving_crashes(slapd, attempt)


def test_a_batched_sync_imports_updates_and_deletes_exactly(
        make_runner: MakeRunner, docs: DocServer, mail: MailDirectory,
        slapd: ManagedSlapd) -> None:
    runner = make_runner(docs.serve("/mail.json", document(30)),
                         ldap_transaction_size=SIZE, sync_max_delete_fraction=1.0)
    committed = transactions("committed")

    first, crashes = converged(slapd, runner)

    assert first.result == "applied", first.reason
    assert mail.list_accounts(None, page_size=1000).count == 90
    assert mail.get_alias("team@d1.example").to == "u0@d1.example"
    if not crashes:     # all in one run: 93 entries in tens
        assert first.counts["created"] == 93
        assert transactions("committed") - committed == 10

    # One change: one write, sent alone (no transaction for a batch of one).
    docs.serve("/mail.json", document(30, {105: CAROL_HASH}))
    runner.writes.clear()  # type: ignore[attr-defined]
    committed = transactions("committed")
    changed, _crashes = converged(slapd, runner)
    assert changed.result == "applied" and changed.counts["updated"] == 1
    assert [op for op, _dn in runner.writes.mail()] == ["modify"]  # type: ignore[attr-defined]
    assert transactions("committed") == committed
    assert mail.get_account("u5@d1.example").password == CAROL_HASH

    # u5@d1 back to its old hash and twenty-one deletes: 10 + 10 + 2.
    smaller = document(30) | {"d2.example": {
        "account": [{"name": f"u{i}", "password": CHEAP_HASH} for i in range(10)],
        "alias": []}}
    docs.serve("/mail.json", smaller)
    committed = transactions("committed")
    shrunk, crashes = converged(slapd, runner)
    assert shrunk.result == "applied", shrunk.reason
    assert mail.list_accounts(["d2.example"], page_size=1000).count == 10
    assert not any(a.domain == "d2.example" for a in mail.list_aliases(None).results)
    if not crashes:
        assert shrunk.counts["deleted"] == 21 and shrunk.counts["updated"] == 1
        assert transactions("committed") - committed == 3


def test_a_write_refused_in_a_batch_is_reported_and_the_rest_applied(
        make_runner: MakeRunner, docs: DocServer, mail: MailDirectory,
        slapd: ManagedSlapd) -> None:
    runner = make_runner(docs.serve("/mail.json", document(30)),
                         ldap_transaction_size=SIZE)
    refused = transactions("refused")
    report, crashes = converged(
        slapd, runner, progress=adds_by_hand_while_applying(slapd, "u7@d0.example"))

    assert report.result == "partial", report.reason
    if not crashes:
        assert report.error_count == 1 and transactions("refused") - refused == 1
        assert "u7@d0.example: created by someone else" in report.errors[0]
    assert mail.list_accounts(None, page_size=1000).count == 89
    assert mail.get_alias("u7@d0.example").to == "someone@example.net"
    # The next run finds the hand-made alias where the document wants an
    # account: skipped (it is not the sync's to replace), nothing fails.
    # (If slapd died under the first run, its repetition already skipped it:
    # then this run is unchanged and carries that skip report over.)
    again, _crashes = converged(slapd, runner)
    assert again.result in ("partial", "unchanged") and again.error_count == 0, again.reason
    assert [s.name for s in again.skipped] == ["u7"]
