"""The sync end to end: real HTTPS documents reconciled onto the real slapd."""

from __future__ import annotations

import logging

import pytest

from gateway.directory import Directory
from gateway.mail import MailDirectory
from gateway.slapd import ManagedSlapd

from tests.support.constants import BASE_DN
from tests.support.httpsserver import DocServer
from tests.support.slapd import ldap_tool, mail_entry
from tests.support.sync import (
    BOB_HASH,
    BOB_PASSWORD,
    CAROL_HASH,
    CAROL_PASSWORD,
    CHEAP_HASH,
    SEED_HASH,
    MakeRunner,
    adds_by_hand_while_applying,
    spec_document,
)


def test_spec_document_is_imported_and_accounts_bind(
        make_runner: MakeRunner, docs: DocServer, directory: Directory,
        mail: MailDirectory, slapd: ManagedSlapd) -> None:
    document = spec_document()
    document["example.com"]["account"].append(  # type: ignore[index]
        {"name": "carol", "password": CAROL_HASH, "spoofing_whitelist": "office@example.com",
         "submission_disabled": True})
    runner = make_runner(docs.serve("/mail.json", document))

    report = runner.run()

    assert report.result == "applied", report.reason
    assert report.counts["created"] == 4
    alice = mail.get_account("alice@example.com")
    assert alice.password == SEED_HASH and alice.origin == "sync"
    bob = mail.get_account("bob@example.com")
    assert bob.password == BOB_HASH and bob.password.startswith("$6$rounds=100000$")
    carol = mail.get_account("carol@example.com")
    assert carol.submission_disabled and carol.spoofing_whitelist == "office@example.com"
    office = mail.get_alias("office@example.com")
    assert office.to == "alice@example.com,bob@example.com" and office.origin == "sync"
    # slapd verifies the imported hashes on a simple bind ({CRYPT} through libxcrypt).
    assert directory.compare_password(bob.dn, BOB_PASSWORD)
    assert directory.compare_password(carol.dn, CAROL_PASSWORD)
    assert not directory.compare_password(bob.dn, "wrong")
    assert not directory.compare_password(alice.dn, "wrong")
    # Ownership is visible to LDAP tools.
    assert mail_entry(slapd, "bob@example.com")["mailgateOrigin"] == ["sync"]


def test_second_run_writes_nothing(make_runner: MakeRunner, docs: DocServer) -> None:
    runner = make_runner(docs.serve("/mail.json", spec_document()))
    assert runner.run().result == "applied"
    # The domain, its three entries, and one claim on the domain's counters for all three.
    ops = [op for op, _dn in runner.writes.mail()]  # type: ignore[attr-defined]
    assert sorted(ops) == ["add"] * 4 + ["increment"]

    # Unchanged document (ETag): not even a read of the mail tree is needed.
    runner.writes.clear()  # type: ignore[attr-defined]
    report = runner.run()
    assert report.result == "unchanged"
    assert "read" not in report.phases          # the mail tree was not searched
    assert runner.writes.mail() == []  # type: ignore[attr-defined]
    assert docs.requests_to("/mail.json")[-1].headers.get("If-None-Match")

    # A full reconcile (validators ignored) reads everything and still writes nothing.
    report = runner.run(full=True)
    assert report.result == "applied"
    assert report.counts["unchanged"] == 3
    assert runner.writes.mail() == []  # type: ignore[attr-defined]


def test_updates_write_only_what_differs_and_keep_unstated_fields(
        make_runner: MakeRunner, docs: DocServer, mail: MailDirectory) -> None:
    runner = make_runner("/mail.json")
    docs.serve("/mail.json", spec_document())
    runner.run()
    # An emergency disable through the API; the document says nothing about it.
    mail.set_submission_disabled("bob@example.com", True)
    document = spec_document()
    document["example.com"]["account"][0]["spoofing_whitelist"] = "example.org"  # type: ignore[index]
    docs.serve("/mail.json", document)
    runner.writes.clear()  # type: ignore[attr-defined]

    report = runner.run()

    assert report.result == "applied"
    assert report.counts["updated"] == 1
    assert [op for op, _dn in runner.writes.mail()] == ["modify"]  # type: ignore[attr-defined]
    assert mail.get_account("alice@example.com").spoofing_whitelist == "example.org"
    assert mail.get_account("bob@example.com").submission_disabled  # survived

    # Once the JSON states it, the JSON wins.
    document["example.com"]["account"][1]["submission_disabled"] = False  # type: ignore[index]
    docs.serve("/mail.json", document)
    runner.run()
    assert not mail.get_account("bob@example.com").submission_disabled


def test_sync_deletes_only_its_own_entries_and_takes_over_listed_ones(
        make_runner: MakeRunner, docs: DocServer, mail: MailDirectory,
        slapd: ManagedSlapd, caplog: pytest.LogCaptureFixture) -> None:
    mail.create_account("api-only", "example.com", "pw")
    mail.create_account("bob", "example.com", "pw")       # listed by the JSON: taken over
    ldap_tool(slapd, "ldapadd", input=(
        f"dn: mail=byhand@example.com,dc=example.com,ou=domains,{BASE_DN}\n"
        "objectClass: mailgateAlias\nmail: byhand@example.com\n"
        "mailgateAliasTarget: someone@example.net\n"))
    runner = make_runner(docs.serve("/mail.json", spec_document()))
    with caplog.at_level(logging.INFO, logger="gateway.sync"):
        report = runner.run()
    assert report.result == "applied"
    assert report.counts["taken_over"] == 1
    assert any("took over account bob@example.com" in r.getMessage() for r in caplog.records)
    bob = mail.get_account("bob@example.com")
    assert bob.origin == "sync" and bob.password == BOB_HASH

    # The document drops everything but alice: the sync deletes its own entries
    # (bob, office) and never the API's or the hand-made ones.
    docs.serve("/mail.json", {"example.com": {"account": [{"name": "alice",
                                                            "password": SEED_HASH}]}})
    report = make_runner("/mail.json", sync_max_delete_fraction=1.0).run()
    assert report.result == "applied", report.reason
    assert report.counts["deleted"] == 2
    ids = {a.id for a in mail.list_accounts(None).results}
    assert ids == {"alice@example.com", "api-only@example.com"}
    assert {a.id for a in mail.list_aliases(None).results} == {"byhand@example.com"}


def test_the_same_url_twice_counts_once(make_runner: MakeRunner, docs: DocServer) -> None:
    url = docs.serve("/mail.json", spec_document())
    report = make_runner(url, url).run()
    assert report.result == "applied" and report.counts["created"] == 3
    assert report.skipped == []


def test_domains_absent_from_every_document_are_untouched(
        make_runner: MakeRunner, docs: DocServer, mail: MailDirectory) -> None:
    docs.serve("/a.json", {"example.org": {"account": [{"name": "x", "password": CHEAP_HASH}]}})
    docs.serve("/b.json", spec_document())
    make_runner("/a.json", "/b.json").run()
    # example.org disappears from the documents: its entries stay as they are.
    docs.serve("/a.json", {})
    report = make_runner("/a.json", "/b.json").run()
    assert report.result == "applied" and report.counts["deleted"] == 0
    assert mail.get_account("x@example.org").origin == "sync"


def test_any_source_failing_changes_nothing(
        make_runner: MakeRunner, docs: DocServer, mail: MailDirectory) -> None:
    docs.serve("/good.json", spec_document())
    runner = make_runner("/good.json", "/broken.json")
    docs.serve("/broken.json", b'{"example.org": {"account": [')
    report = runner.run()
    assert report.result == "failed"
    assert "not valid JSON" in report.reason and "nothing changed" in report.reason
    assert runner.writes.mail() == []  # type: ignore[attr-defined]

    del docs.routes["/broken.json"]  # 404
    report = runner.run()
    assert report.result == "failed" and "HTTP 404" in report.reason
    assert mail.list_accounts(None).count == 0
    status = runner.status()
    assert [r["result"] for r in status["runs"]] == ["failed", "failed"]


def test_invalid_entries_are_skipped_reported_and_left_alone(
        make_runner: MakeRunner, docs: DocServer, mail: MailDirectory) -> None:
    docs.serve("/mail.json", spec_document())
    runner = make_runner("/mail.json")
    runner.run()
    document = spec_document()
    accounts = document["example.com"]["account"]  # type: ignore[index]
    accounts[1]["password"] = "plain-text-password"     # bob: refused, keeps his hash
    accounts.append({"name": "bad name", "password": CHEAP_HASH})
    accounts.append({"name": "dave", "password": CHEAP_HASH, "spoofing_whitelist": "x@@y"})
    document["example.com"]["alias"].append({"name": "alice", "to": "bob@example.com"})  # type: ignore[index]
    docs.serve("/mail.json", document)

    report = runner.run()

    # Skipped entries make the run partial; the log's end-of-run line says how many.
    assert report.result == "partial", report.reason
    assert report.reason == "3 entries skipped"
    assert report.as_json()["skipped_total"] == 3
    reasons = {(s.domain, s.name): s.reason for s in report.skipped}
    assert "crypt" in reasons[("example.com", "bob")]
    assert "plain-text-password" not in str(report.as_json())
    assert ("example.com", "bad name") in reasons
    assert "spoofing_whitelist" in reasons[("example.com", "dave")]
    # Left as it was: bob keeps his hash. alice, listed as account and as alias,
    # is both now (SPEC.md section 7).
    assert mail.get_account("bob@example.com").password == BOB_HASH
    assert mail.get_account("alice@example.com").password == SEED_HASH
    assert mail.get_alias("alice@example.com").to == "bob@example.com"
    with pytest.raises(Exception, match="no account"):
        mail.get_account("dave@example.com")


def test_kind_change_replaces_only_sync_owned_entries(
        make_runner: MakeRunner, docs: DocServer, mail: MailDirectory) -> None:
    docs.serve("/mail.json", spec_document())
    runner = make_runner("/mail.json")
    runner.run()
    mail.create_alias("info", "example.com", "alice@example.com")   # made through the API
    document = spec_document()
    document["example.com"]["alias"] = [{"name": "bob", "to": "alice@example.com"}]  # type: ignore[index]
    document["example.com"]["account"] = [  # type: ignore[index]
        {"name": "alice", "password": SEED_HASH},
        {"name": "office", "password": CHEAP_HASH},
        {"name": "info", "password": CHEAP_HASH}]
    docs.serve("/mail.json", document)

    report = make_runner("/mail.json", sync_max_delete_fraction=1.0).run()

    assert report.counts["replaced"] == 2, report.as_json()
    assert mail.get_alias("bob@example.com").to == "alice@example.com"
    assert mail.get_account("office@example.com").origin == "sync"
    # The API's alias stays an alias; the clash is reported.
    assert mail.get_alias("info@example.com").origin == "api"
    assert any(s.name == "info" and "through the API" in s.reason for s in report.skipped)


def test_idn_domains_are_stored_as_a_labels(
        make_runner: MakeRunner, docs: DocServer, mail: MailDirectory) -> None:
    docs.serve("/mail.json", {"Bücher.Example": {
        "account": [{"name": "Anna", "password": CHEAP_HASH}],
        "alias": [{"name": "info", "to": "anna@bücher.example"}]}})
    report = make_runner("/mail.json").run()
    assert report.result == "applied", report.reason
    assert mail.get_account("anna@xn--bcher-kva.example").domain == "xn--bcher-kva.example"
    assert mail.get_alias("info@xn--bcher-kva.example").to == "anna@xn--bcher-kva.example"


def test_delete_guard_refuses_unless_forced(
        make_runner: MakeRunner, docs: DocServer, mail: MailDirectory) -> None:
    docs.serve("/mail.json", spec_document())
    make_runner("/mail.json").run()
    docs.serve("/mail.json", {"example.com": {}})      # would delete all 3
    runner = make_runner("/mail.json")

    report = runner.run()

    assert report.result == "refused" and "3 of 3" in report.reason
    assert runner.writes.mail() == []  # type: ignore[attr-defined]
    assert runner.status()["runs"][0]["result"] == "refused"
    assert mail.list_accounts(None).count == 2

    report = runner.run(force=True)
    assert report.result == "applied" and report.counts["deleted"] == 3
    assert mail.list_accounts(None).count == 0


def test_status_is_shared_through_ldap_and_keeps_twenty_runs(
        make_runner: MakeRunner, docs: DocServer) -> None:
    docs.serve("/mail.json", spec_document())
    first = make_runner("/mail.json")
    for _ in range(22):
        first.run(full=True)
    other = make_runner("/mail.json")     # another process would see the same
    runs = other.status()["runs"]
    assert len(runs) == 20
    assert runs[0]["result"] == "applied" and runs[0]["counts"]["unchanged"] == 3
    assert set(runs[0]) >= {"started", "duration", "result", "counts", "errors", "sources"}


def test_many_listed_domains_read_everything_once_and_ignore_the_rest(
        make_runner: MakeRunner, docs: DocServer, mail: MailDirectory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.sync import current

    docs.serve("/other.json", {"other.example": {"account": [
        {"name": "keep", "password": CHEAP_HASH}]}})
    make_runner("/other.json").run()
    monkeypatch.setattr(current, "OR_LIMIT", 1)   # two listed domains: no domain filter
    docs.serve("/mail.json", {**spec_document(), "example.org": {}})
    runner = make_runner("/mail.json")
    report = runner.run()
    assert report.result == "applied" and report.counts["created"] == 3
    assert report.counts["domains_created"] == 2 and report.counts["managed"] == 0
    assert mail.get_account("keep@other.example").origin == "sync"   # not listed: untouched
    assert runner.run(full=True).counts["unchanged"] == 3


def test_unknown_keys_are_applied_around_and_reported_in_status_and_log(
        make_runner: MakeRunner, docs: DocServer, mail: MailDirectory,
        caplog: pytest.LogCaptureFixture) -> None:
    document = spec_document()
    for account in document["example.com"]["account"]:  # type: ignore[index]
        account["mailbox_quota"] = 1024
    document["example.com"]["alias"][0]["comment"] = "x"  # type: ignore[index]
    runner = make_runner(docs.serve("/mail.json", document))

    with caplog.at_level(logging.INFO, logger="gateway.sync"):
        report = runner.run()

    assert report.result == "applied", report.reason
    assert report.counts["created"] == 3 and report.skipped == []
    assert mail.get_account("alice@example.com").password == SEED_HASH
    (run,) = runner.status()["runs"]
    assert run["unknown_keys"] == [
        {"key": "mailbox_quota", "kind": "account", "count": 2,
         "example": {"domain": "example.com", "name": "alice", "source": docs.url("/mail.json")}},
        {"key": "comment", "kind": "alias", "count": 1,
         "example": {"domain": "example.com", "name": "office",
                     "source": docs.url("/mail.json")}}]
    lines = [r.getMessage() for r in caplog.records if "unknown" in r.getMessage()]
    assert len(lines) == 2 and "'mailbox_quota' in 2 entries" in lines[0]


def test_a_partial_source_costs_a_304_and_keeps_its_skip_report(
        make_runner: MakeRunner, docs: DocServer, mail: MailDirectory,
        caplog: pytest.LogCaptureFixture) -> None:
    document = spec_document()
    document["example.com"]["account"].append(  # type: ignore[index]
        {"name": "eve", "password": "plain text"})
    runner = make_runner(docs.serve("/mail.json", document))
    with caplog.at_level(logging.INFO, logger="gateway.sync"):
        first = runner.run()
    assert first.result == "partial" and first.reason == "1 entry skipped"
    assert first.exit_code != 0
    assert mail.get_account("alice@example.com").origin == "sync"   # the rest is applied
    end = [r for r in caplog.records if r.getMessage().startswith("sync partial")]
    assert end and "skipped 1" in end[0].getMessage() and end[0].levelno == logging.WARNING

    # The same document again: a conditional request answered 304, no entry read.
    caplog.clear()
    runner.writes.clear()  # type: ignore[attr-defined]
    with caplog.at_level(logging.INFO, logger="gateway.sync"):
        again = runner.run()
    assert again.result == "unchanged", again.reason
    assert "read" not in again.phases and runner.writes.mail() == []  # type: ignore[attr-defined]
    assert docs.requests_to("/mail.json")[-1].headers.get("If-None-Match") == \
        docs.routes["/mail.json"].etag
    assert again.sources[0]["status"] == "unchanged"
    assert "1 entry still skipped" in again.reason and first.id in again.reason
    assert again.exit_code != 0          # the document still holds the bad entry
    # The skip report stands: in the run and in the status, with the reason.
    assert [(s.name, s.reason) for s in again.skipped] == \
        [(s.name, s.reason) for s in first.skipped]
    status = runner.status()
    check = status["last_check"]
    assert check["result"] == "unchanged" and check["run"] == first.id
    assert check["skipped_total"] == 1 and check["skipped"][0]["name"] == "eve"
    assert "password" in check["skipped"][0]["reason"]
    assert status["runs"][0]["id"] == first.id and status["runs"][0]["skipped_total"] == 1
    # Said once, by the run that skipped it; not again at every interval.
    assert not any("sync skipped" in r.getMessage() for r in caplog.records)

    # A full run, and a forced one, plan everything again (a plain GET).
    for report in (runner.run(full=True), runner.run(force=True)):
        assert report.result == "partial" and report.counts["unchanged"] == 3
        assert "read" in report.phases
        assert "If-None-Match" not in docs.requests_to("/mail.json")[-1].headers
    # Fixed: applied, then unchanged with nothing carried over.
    del document["example.com"]["account"][-1]  # type: ignore[index]
    docs.serve("/mail.json", document)
    assert runner.run().result == "applied"
    clean = runner.run()
    assert clean.result == "unchanged" and clean.skipped == [] and clean.exit_code == 0
    assert "skipped" not in runner.status()["last_check"]


def test_a_run_whose_changes_failed_keeps_no_validators(
        make_runner: MakeRunner, docs: DocServer, slapd: ManagedSlapd) -> None:
    # Someone adds office@ by hand between the plan and its write: the create
    # fails. Such a failure may be transient, so the run keeps no validators
    # and the next one plans again (and takes the entry over).
    runner = make_runner(docs.serve("/mail.json", spec_document()))

    first = runner.run(progress=adds_by_hand_while_applying(slapd, "office@example.com"))
    assert first.result == "partial" and first.reason == "1 changes failed"
    assert "office@example.com: created by someone else" in first.errors[0]
    again = runner.run()
    assert "If-None-Match" not in docs.requests_to("/mail.json")[-1].headers
    assert again.result == "applied" and again.counts["taken_over"] == 1
    assert runner.run().result == "unchanged"


def test_subaddress_extension_is_synced_and_kept_when_not_stated(
        make_runner: MakeRunner, docs: DocServer, mail: MailDirectory,
        slapd: ManagedSlapd) -> None:
    document = spec_document()
    accounts = document["example.com"]["account"]  # type: ignore[index]
    accounts[0]["subaddress_extension"] = True
    accounts[1]["subaddress_extension"] = False
    accounts.append({"name": "*", "password": CHEAP_HASH})
    runner = make_runner(docs.serve("/mail.json", document))
    report = runner.run()
    assert report.result == "partial"      # the account named "*" is refused
    (skip,) = report.skipped
    assert skip.name == "*" and "catch-all" in skip.reason
    assert mail.get_account("alice@example.com").subaddress_extension
    assert mail_entry(slapd, "alice@example.com")["mailgateSubaddress"] == ["TRUE"]
    assert not mail.get_account("bob@example.com").subaddress_extension
    assert "mailgateSubaddress" not in mail_entry(slapd, "bob@example.com")
    # Not stated: an API toggle survives; stated: the document wins.
    mail.set_subaddress_extension("bob@example.com", True)
    del accounts[1]["subaddress_extension"]
    accounts[0]["subaddress_extension"] = False
    del accounts[-1]
    docs.serve("/mail.json", document)
    assert runner.run().result == "applied"
    assert mail.get_account("bob@example.com").subaddress_extension
    assert not mail.get_account("alice@example.com").subaddress_extension


def test_an_address_listed_as_account_and_alias_is_both_and_its_roles_follow_the_document(
        make_runner: MakeRunner, docs: DocServer, mail: MailDirectory,
        slapd: ManagedSlapd) -> None:
    account = {"name": "info", "password": CHEAP_HASH, "subaddress_extension": True}
    alias = {"name": "info", "to": "alice@example.com"}

    def serve(*entries: dict[str, object]) -> None:
        document = spec_document()
        lists = document["example.com"]
        for item in entries:
            lists["alias" if "to" in item else "account"].append(item)  # type: ignore[index]
        docs.serve("/mail.json", document)

    serve(account, alias)
    runner = make_runner("/mail.json", sync_max_delete_fraction=1.0)
    report = runner.run()
    assert report.result == "applied" and report.counts["created"] == 4, report.as_json()
    found = mail_entry(slapd, "info@example.com")
    assert len(found["dn"]) == 1
    assert sorted(found["objectClass"]) == ["mailgateAccount", "mailgateForwarding"]
    assert mail.get_account("info@example.com").subaddress_extension
    assert mail.get_alias("info@example.com").to == "alice@example.com"
    assert runner.run(full=True).counts["unchanged"] == 4
    # Only the account now: the forwarding goes (one modify, the entry stays).
    serve(account)
    assert runner.run().counts["updated"] == 1
    assert mail_entry(slapd, "info@example.com")["objectClass"] == ["mailgateAccount"]
    # Only an alias (a kind change of a sync-owned entry: replaced).
    serve(alias)
    assert runner.run().counts["replaced"] == 1
    assert mail_entry(slapd, "info@example.com")["objectClass"] == ["mailgateAlias"]
    # Both again: the alias gets its mailbox in place (structural class changes).
    serve(account, alias)
    assert runner.run().counts["updated"] == 1
    found = mail_entry(slapd, "info@example.com")
    assert sorted(found["objectClass"]) == ["mailgateAccount", "mailgateForwarding"]
    assert mail.get_account("info@example.com").password == CHEAP_HASH
    # Only the alias again: the mailbox goes, the forwarding stays.
    serve(alias)
    assert runner.run().counts["updated"] == 1
    found = mail_entry(slapd, "info@example.com")
    assert found["objectClass"] == ["mailgateAlias"] and "userPassword" not in found
    assert "mailgateSubaddress" not in found
    assert mail.get_alias("info@example.com").to == "alice@example.com"


def test_roles_made_through_the_api(make_runner: MakeRunner, docs: DocServer,
                                    mail: MailDirectory, slapd: ManagedSlapd) -> None:
    mail.create_account("sales", "example.com", "pw")
    mail.create_account("team", "example.com", "pw")
    mail.create_alias("team", "example.com", "alice@example.com")
    document = spec_document()
    lists = document["example.com"]
    lists["account"].append({"name": "sales", "password": CHEAP_HASH})  # type: ignore[index]
    lists["alias"].append({"name": "sales", "to": "bob@example.com"})  # type: ignore[index]
    lists["account"].append({"name": "team", "password": CHEAP_HASH})  # type: ignore[index]
    runner = make_runner(docs.serve("/mail.json", document))
    report = runner.run()
    # A role is added to an API entry (taken over); one is never taken away from it.
    assert report.result == "partial" and report.counts["taken_over"] == 1
    assert sorted(mail_entry(slapd, "sales@example.com")["objectClass"]) == [
        "mailgateAccount", "mailgateForwarding"]
    assert mail.get_alias("sales@example.com").origin == "sync"
    (skip,) = report.skipped
    assert skip.name == "team" and "account and an alias made through the API" in skip.reason
    assert mail.get_alias("team@example.com").to == "alice@example.com"
