"""``mailgate sync --dry-run|--once`` and ``mailgate export`` (in-process main())."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.cli.sync import Progress
from gateway.mail import MailDirectory
from gateway.settings import Settings
from gateway.slapd import ManagedSlapd

from tests.support.constants import ADMIN_TOKEN, BASE_DN
from tests.support.httpsserver import DocServer
from tests.support.slapd import ldap_tool
from tests.support.sync import CHEAP_HASH, MakeRunner, spec_document


@pytest.fixture
def env(settings: Settings, docs: DocServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("LDAP_URL", "LDAP_PASSWORD", "ADMIN_TOKEN", "LDAP_BASE_DN", "DATA_DIR",
                 "JSON_CA_FILE", "LOG_LEVEL"):
        monkeypatch.delenv(f"MAILGATE_{name}", raising=False)
    monkeypatch.setenv("MAILGATE_LDAP_URL", settings.ldap_url or "")
    monkeypatch.setenv("MAILGATE_LDAP_PASSWORD", settings.ldap_password or "")
    monkeypatch.setenv("MAILGATE_LDAP_BASE_DN", BASE_DN)
    monkeypatch.setenv("MAILGATE_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("MAILGATE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MAILGATE_JSON_CA_FILE", str(docs.ca_file))
    monkeypatch.setenv("MAILGATE_JSON_URLS", docs.url("/mail.json"))
    monkeypatch.setenv("MAILGATE_LOG_LEVEL", "WARNING")
    return monkeypatch


def test_dry_run_prints_the_plan_and_writes_nothing(
        env: pytest.MonkeyPatch, docs: DocServer, mail: MailDirectory,
        capsys: pytest.CaptureFixture[str]) -> None:
    mail.create_account("bob", "example.com", "pw")
    document = spec_document()
    document["example.com"]["account"].append(  # type: ignore[index]
        {"name": "eve", "password": "plain"})
    docs.serve("/mail.json", document)

    assert main(["sync", "--dry-run"]) == 0

    out = capsys.readouterr().out
    assert "create account alice@example.com" in out
    assert "create alias office@example.com -> alice@example.com,bob@example.com" in out
    assert "update account bob@example.com: password (takes over the entry, origin api)" in out
    assert "skip example.com 'eve': password:" in out
    assert "plan: 0 domains to create, 2 creates, 1 updates (1 takeovers)" in out
    assert mail.list_accounts(None).count == 1
    assert mail.get_account("bob@example.com").origin == "api"


def test_once_and_its_exit_codes(env: pytest.MonkeyPatch, docs: DocServer,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    docs.serve("/mail.json", spec_document())
    assert main(["sync", "--once"]) == 0
    assert "sync applied: 3 created" in capsys.readouterr().out
    assert main(["sync", "--once"]) == 0
    assert "sync unchanged" in capsys.readouterr().out
    docs.serve("/mail.json", {"example.com": {}})
    assert main(["sync", "--once"]) == 3
    assert "sync refused" in capsys.readouterr().out
    assert main(["sync", "--once", "--force"]) == 0
    assert "3 deleted" in capsys.readouterr().out
    document = spec_document()
    document["example.com"]["account"].append(  # type: ignore[index]
        {"name": "eve", "password": "plain"})
    docs.serve("/mail.json", document)
    assert main(["sync", "--once"]) == 1       # partial: entries were skipped
    out = capsys.readouterr().out
    assert "skipped example.com 'eve'" in out and "sync partial: 3 created" in out
    assert "(1 entry skipped)" in out
    del docs.routes["/mail.json"]
    assert main(["sync", "--once"]) == 1
    env.delenv("MAILGATE_JSON_URLS")
    assert main(["sync", "--once"]) == 2


def test_export_round_trip(env: pytest.MonkeyPatch, docs: DocServer, mail: MailDirectory,
                           slapd: ManagedSlapd, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    mail.create_account("alice", "example.com", "pw", True, "office@example.com,example.org",
                        quota=5_000_000)
    mail.create_account("anna", "bücher.example", "pw")
    mail.create_alias("office", "example.com", "alice@example.com,x@example.net")
    ldap_tool(slapd, "ldapadd", input=f"dn: dc=empty.example,ou=domains,{BASE_DN}\n"
                                       "objectClass: mailgateDomain\ndc: empty.example\n")
    exported = tmp_path / "export.json"
    assert main(["export", "-o", str(exported)]) == 0
    assert exported.stat().st_mode & 0o777 == 0o600
    first = json.loads(exported.read_text())
    assert first["example.com"]["account"][0] == {
        "name": "alice", "password": mail.get_account("alice@example.com").password,
        "spoofing_whitelist": "office@example.com,example.org", "submission_disabled": True,
        "subaddress_extension": False, "quota": 5_000_000}
    assert first["xn--bcher-kva.example"]["account"][0]["quota"] == 0
    assert first["empty.example"] == {"account": [], "alias": []}
    assert "xn--bcher-kva.example" in first

    # Empty the directory, sync the export back, export again: the same document.
    for domain in first:
        ldap_tool(slapd, "ldapdelete", "-r", f"dc={domain},ou=domains,{BASE_DN}")
    docs.serve("/mail.json", exported.read_bytes())
    assert main(["sync", "--once"]) == 0
    capsys.readouterr()
    assert main(["export"]) == 0
    assert json.loads(capsys.readouterr().out) == first
    assert mail.get_account("alice@example.com").origin == "sync"


def test_export_leaves_out_passwords_the_sync_would_not_accept(
        env: pytest.MonkeyPatch, slapd: ManagedSlapd, mail: MailDirectory,
        capsys: pytest.CaptureFixture[str]) -> None:
    mail.create_account("ok", "example.com", "pw")
    ldap_tool(slapd, "ldapadd", input=(
        f"dn: mail=old@example.com,dc=example.com,ou=domains,{BASE_DN}\n"
        "objectClass: mailgateAccount\nmail: old@example.com\n"
        "userPassword: {SSHA}c2VjcmV0c2FsdHNhbHQ=\n"))
    assert main(["export", "--domain", "EXAMPLE.com"]) == 0
    captured = capsys.readouterr()
    accounts = json.loads(captured.out)["example.com"]["account"]
    assert [a["name"] for a in accounts] == ["ok", "old"]
    assert "password" not in accounts[1] and "SSHA" not in captured.out
    assert "old@example.com: the stored password is not a crypt hash" in captured.err


def test_progress_lines_for_long_phases() -> None:
    stream = io.StringIO()
    progress = Progress(stream, every=0.0)
    progress("applying", 500, 1000)
    progress("applying", 1000, 1000)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("mailgate sync: applying 500/1000 (")
    assert lines[-1].startswith("mailgate sync: applying 1000/1000")
    quiet = io.StringIO()
    Progress(quiet, every=60)("reading", 10, 10)   # quick phases print nothing
    assert quiet.getvalue() == ""


def test_accounts_of_a_cli_sync_bind(env: pytest.MonkeyPatch, docs: DocServer,
                                     make_runner: MakeRunner, mail: MailDirectory) -> None:
    docs.serve("/mail.json", {"example.com": {"account": [
        {"name": "c", "password": CHEAP_HASH}]}})
    assert main(["sync", "--once"]) == 0
    account = mail.get_account("c@example.com")
    assert mail.dir.compare_password(account.dn, "cheap")


def test_dry_run_and_once_beyond_a_domain_limit(
        env: pytest.MonkeyPatch, docs: DocServer, mail: MailDirectory,
        capsys: pytest.CaptureFixture[str]) -> None:
    mail.domains.create("example.com", {"max_accounts": 1})
    docs.serve("/mail.json", spec_document())     # alice and bob

    assert main(["sync", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "create account alice@example.com" in out
    assert "create account bob@example.com" not in out
    assert "skip example.com 'bob': max_accounts: example.com holds 1 accounts" in out
    assert mail.list_accounts(None).count == 0

    # A domain without limits beside it: its changes stay in the plan (the dry
    # run looks only at bounded domains' changes, and puts the others back).
    document = spec_document()
    document["free.example"] = {"account": [{"name": "carol", "password": CHEAP_HASH}]}
    docs.serve("/mail.json", document)
    assert main(["sync", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "create account carol@free.example" in out
    assert "create account alice@example.com" in out
    assert "create account bob@example.com" not in out
    docs.serve("/mail.json", spec_document())

    assert main(["sync", "--once"]) == 1       # partial: bob did not fit
    out = capsys.readouterr().out
    assert "skipped example.com 'bob': max_accounts: " in out
    assert "sync partial: 2 created" in out and "(1 entry skipped)" in out
    assert [a.id for a in mail.list_accounts(None).results] == ["alice@example.com"]
    assert mail.domains.get("example.com").accounts == 1
