"""``mailgate sync --offline-import``: the first import with slapadd, then a checking sync.

The entries it loads must be exactly those an online sync of the same
document writes (compared attribute by attribute, as ldapsearch shows
them), the checking run must write nothing, and what it refuses (a running
slapd, a directory that holds entries, a remote directory) it refuses
before touching anything.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.directory import Directory
from gateway.mail import MailDirectory
from gateway.settings import Settings
from gateway.slapd import ManagedSlapd, free_port
from gateway.sync.fetch import FileFetcher
from gateway.sync.offline import ldif_record
from gateway.sync.runner import SyncRunner

from tests.support.constants import BASE_DN
from tests.support.slapd import ldap_tool, running_slapd
from tests.support.sync import BOB_HASH, BOB_PASSWORD, CAROL_HASH, spec_document

COUNTERS = ("mailgateAccountCount", "mailgateAliasCount", "mailgateQuotaAllocated")


def _document() -> dict[str, object]:
    document = spec_document()
    document["example.com"]["account"] += [  # type: ignore[index]
        {"name": "carol", "password": CAROL_HASH, "spoofing_whitelist": "office@example.com",
         "submission_disabled": True, "subaddress_extension": True},
        {"name": "both", "password": BOB_HASH},
        {"name": "eve", "password": "plain text"}]                 # skipped
    document["example.com"]["alias"].append(  # type: ignore[index]
        {"name": "both", "to": "alice@example.com"})
    document["xn--bcher-kva.example"] = {"account": [], "alias": [
        {"name": "info", "to": "alice@example.com,bob@example.com"}]}
    return document


def _mail_entries(slapd: ManagedSlapd) -> dict[str, dict[str, list[str]]]:
    """Every entry under ou=domains with its user attributes, values sorted."""
    out = ldap_tool(slapd, "ldapsearch", "-LLL", "-o", "ldif-wrap=no", "-b",
                    f"ou=domains,{BASE_DN}", "(objectClass=*)").stdout
    entries: dict[str, dict[str, list[str]]] = {}
    for block in out.strip().split("\n\n"):
        lines = block.splitlines()
        attrs: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, _sep, value = line.partition(": ")
            attrs.setdefault(name, []).append(value)
        entries[lines[0]] = {k: sorted(v) for k, v in attrs.items()}
    return entries


def _without_counters(entries: dict[str, dict[str, list[str]]]) \
        -> tuple[dict[str, dict[str, list[str]]], dict[str, dict[str, list[str]]]]:
    """The entries without the domains' counters, and the counters by entry."""
    counters = {dn: {k: v for k, v in attrs.items() if k in COUNTERS}
                for dn, attrs in entries.items() if COUNTERS[0] in attrs}
    return {dn: {k: v for k, v in attrs.items() if k not in COUNTERS}
            for dn, attrs in entries.items()}, counters


@pytest.fixture
def embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ManagedSlapd:
    for name in list(os.environ):
        if name.startswith("MAILGATE_"):
            monkeypatch.delenv(name)
    url = f"ldap://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MAILGATE_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("MAILGATE_LDAP_BASE_DN", BASE_DN)
    monkeypatch.setenv("MAILGATE_EMBEDDED_LDAP_URL", url)
    monkeypatch.setenv("MAILGATE_LOG_LEVEL", "WARNING")
    return ManagedSlapd(tmp_path / "var", BASE_DN, url=url)


def test_the_offline_import_loads_what_an_online_sync_writes(
        embedded: ManagedSlapd, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = tmp_path / "mail.json"
    doc.write_text(json.dumps(_document()))

    # The checking run is partial (eve is skipped) and writes nothing.
    assert main(["sync", "--offline-import", "--file", str(doc), "--json"]) == 1
    out = capsys.readouterr().out
    head, _sep, body = out.partition("\n{")
    assert "offline import: 2 domains and 6 entries loaded with slapadd" in head
    assert "skipped example.com 'eve'" in head
    run = json.loads("{" + body)
    assert run["trigger"] == "offline-import" and run["full"] is True
    assert run["result"] == "partial" and run["reason"] == "1 entry skipped"
    assert run["counts"]["unchanged"] == 6
    assert all(run["counts"][k] == 0 for k in ("created", "updated", "deleted", "replaced"))
    assert not (embedded.data_dir / "offline-import.ldif").exists()    # hashes not left behind

    # The same document synced online into another directory: the same entries.
    with running_slapd(tmp_path / "online") as online:
        runner = SyncRunner(Settings(ldap_url=online.url, ldap_base_dn=BASE_DN,
                                     ldap_password=online.password("gateway"),
                                     json_max_bytes=1 << 20),
                            fetcher=FileFetcher(1 << 20), sources=(str(doc),))
        try:
            assert runner.run().result == "partial"
        finally:
            runner.close()
        wanted = _mail_entries(online)
    embedded.start()
    try:
        # The domains' counters are counted by the load (an online sync leaves
        # them at zero for the next recount); everything else is the same.
        loaded, counters = _without_counters(_mail_entries(embedded))
        wanted, _zeros = _without_counters(wanted)
        assert loaded == wanted
        assert len(loaded) == 9     # ou=domains, 2 domains, 6 entries (both is one)
        assert counters == {
            f"dn: dc=example.com,ou=domains,{BASE_DN}": {
                "mailgateAccountCount": ["4"], "mailgateAliasCount": ["2"],
                "mailgateQuotaAllocated": ["0"]},
            f"dn: dc=xn--bcher-kva.example,ou=domains,{BASE_DN}": {
                "mailgateAccountCount": ["0"], "mailgateAliasCount": ["1"],
                "mailgateQuotaAllocated": ["0"]}}
        directory = Directory(Settings(ldap_url=embedded.url, ldap_base_dn=BASE_DN,
                                       ldap_password=embedded.password("gateway")))
        try:
            bob = f"mail=bob@example.com,dc=example.com,ou=domains,{BASE_DN}"
            assert directory.compare_password(bob, BOB_PASSWORD)
            # A recount of what the load counted repairs nothing.
            assert MailDirectory(directory, 1000).domains.recount_all() == []
        finally:
            directory.close()
        # The validators were recorded: the next run is a conditional one.
        capsys.readouterr()
        assert main(["sync", "--file", str(doc)]) == 1          # eve is still skipped
        assert "sync unchanged" in capsys.readouterr().out
        # A running slapd, and a directory that holds entries, are refused.
        assert main(["sync", "--offline-import", "--file", str(doc)]) == 2
        assert "is running" in capsys.readouterr().err
    finally:
        embedded.stop()
    assert main(["sync", "--offline-import", "--file", str(doc)]) == 2
    assert "already holds 6 accounts or aliases" in capsys.readouterr().err
    embedded.start()
    try:
        assert _without_counters(_mail_entries(embedded)) == (wanted, counters)  # untouched
    finally:
        embedded.stop()


def test_the_offline_import_is_for_the_embedded_directory_only(
        embedded: ManagedSlapd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    doc = tmp_path / "mail.json"
    doc.write_text(json.dumps(spec_document()))
    monkeypatch.setenv("MAILGATE_LDAP_URL", "ldap://127.0.0.1:1")
    monkeypatch.setenv("MAILGATE_LDAP_PASSWORD", "unused")
    monkeypatch.setenv("MAILGATE_ADMIN_TOKEN", "a-long-enough-admin-token-0123456789")
    assert main(["sync", "--offline-import", "--file", str(doc)]) == 2
    assert "only for the embedded directory" in capsys.readouterr().err
    monkeypatch.delenv("MAILGATE_LDAP_URL")
    assert main(["sync", "--offline-import", "--file", "-"]) == 2
    assert "cannot be read twice" in capsys.readouterr().err
    assert not embedded.initialised


def test_ldif_values_that_are_not_safe_strings_are_base64() -> None:
    record = ldif_record("mail=j\u00fcrgen@example.com,dc=example.com", ["mailgateAlias"],
                         {"mail": ["j\u00fcrgen@example.com"], "description": [" lead", ":x"],
                          "mailgateAliasTarget": ["a@example.com"], "empty": []})
    assert record.splitlines() == [
        "dn:: bWFpbD1qw7xyZ2VuQGV4YW1wbGUuY29tLGRjPWV4YW1wbGUuY29t",
        "objectClass: mailgateAlias",
        "mail:: asO8cmdlbkBleGFtcGxlLmNvbQ==",
        "description:: IGxlYWQ=", "description:: Ong=",
        "mailgateAliasTarget: a@example.com", ""]
