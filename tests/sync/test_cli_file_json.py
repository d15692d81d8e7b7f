"""``mailgate sync --file`` (a local document, same rules), ``--json``, ``token list --json``."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.directory import Directory
from gateway.mail import MailDirectory
from gateway.settings import Settings
from gateway.tokens import TokenStore

from tests.support.constants import ADMIN_TOKEN, BASE_DN
from tests.support.httpsserver import DocServer
from tests.support.sync import BOB_HASH, CHEAP_HASH, spec_document


@pytest.fixture
def env(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("MAILGATE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MAILGATE_LDAP_URL", settings.ldap_url or "")
    monkeypatch.setenv("MAILGATE_LDAP_PASSWORD", settings.ldap_password or "")
    monkeypatch.setenv("MAILGATE_LDAP_BASE_DN", BASE_DN)
    monkeypatch.setenv("MAILGATE_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("MAILGATE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MAILGATE_LOG_LEVEL", "WARNING")
    return monkeypatch


def _write(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document))
    return path


def test_a_local_file_goes_through_validation_plan_guard_and_apply(
        env: pytest.MonkeyPatch, mail: MailDirectory, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    mail.create_account("bob", "example.com", "pw")
    document = spec_document()
    document["example.com"]["account"].append(  # type: ignore[index]
        {"name": "eve", "password": "plain text"})
    doc = _write(tmp_path / "mail.json", document)

    # No MAILGATE_JSON_URLS is needed. The dry run writes nothing.
    assert main(["sync", "--file", str(doc), "--dry-run", "--json"]) == 0
    planned = json.loads(capsys.readouterr().out)
    assert planned["result"] == "planned"
    assert planned["sources"] == [{"url": str(doc), "status": "fetched",
                                   "bytes": doc.stat().st_size}]
    plan = planned["plan"]
    assert plan["create"] == [
        {"kind": "account", "address": "alice@example.com"},
        {"kind": "alias", "address": "office@example.com",
         "to": ["alice@example.com", "bob@example.com"]}]
    assert plan["update"] == [{"kind": "account", "address": "bob@example.com",
                               "fields": ["password"], "takeover": True, "origin": "api"}]
    assert [(s["name"], s["reason"].split(":")[0]) for s in plan["skipped"]] == [
        ("eve", "password")]
    assert plan["counts"]["created"] == 2
    shown = json.dumps(planned)
    assert BOB_HASH not in shown and "plain text" not in shown    # names of fields, no values
    assert mail.list_accounts(None).count == 1

    # Applied like a fetched document: partial, since an entry was skipped.
    assert main(["sync", "--file", str(doc)]) == 1
    out = capsys.readouterr().out
    assert "skipped example.com 'eve': password:" in out
    assert "sync partial: 2 created, 1 updated" in out
    assert mail.get_account("alice@example.com").origin == "sync"
    # A clean document is applied; the same file again is unchanged.
    doc = _write(tmp_path / "mail.json", spec_document())
    assert main(["sync", "--file", str(doc), "--once"]) == 0
    assert "sync applied" in capsys.readouterr().out
    assert main(["sync", "--file", str(doc), "--once"]) == 0
    assert "sync unchanged" in capsys.readouterr().out

    # The delete guard holds for files too.
    empty = _write(tmp_path / "empty.json", {"example.com": {}})
    assert main(["sync", "--file", str(empty)]) == 3
    assert "sync refused" in capsys.readouterr().out
    assert main(["sync", "--file", str(empty), "--force", "--json"]) == 0
    applied = json.loads(capsys.readouterr().out)
    assert applied["result"] == "applied" and applied["counts"]["deleted"] == 3


def test_a_file_beyond_max_aliases_is_partial_with_the_limit_in_json(
        env: pytest.MonkeyPatch, mail: MailDirectory, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    mail.domains.create("example.com", {"max_aliases": 1})
    document = spec_document()
    document["example.com"]["alias"].append(  # type: ignore[index]
        {"name": "sales", "to": "bob@example.com"})
    doc = _write(tmp_path / "mail.json", document)

    assert main(["sync", "--file", str(doc), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["result"] == "partial" and report["counts"]["created"] == 3
    assert report["skipped"] == [{"domain": "example.com", "name": "sales", "source": "",
                                  "reason": report["skipped"][0]["reason"]}]
    assert report["skipped"][0]["reason"].startswith(
        "max_aliases: example.com holds 1 aliases (with this run's), its max_aliases is 1")
    assert mail.domains.get("example.com").aliases == 1


def test_a_file_from_stdin_and_its_errors(env: pytest.MonkeyPatch, mail: MailDirectory,
                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    document = {"example.org": {"account": [{"name": "c", "password": CHEAP_HASH}]}}
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(json.dumps(document)
                                                                  .encode())))
    assert main(["sync", "--file", "-"]) == 0
    assert mail.dir.compare_password(mail.get_account("c@example.org").dn, "cheap")
    capsys.readouterr()

    assert main(["sync", "--file", str(tmp_path / "missing.json")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["sync"]) == 2
    assert "--once, --dry-run, --file or --offline-import" in capsys.readouterr().err
    broken = tmp_path / "broken.json"
    broken.write_text('{"example.org": {"account": [')
    assert main(["sync", "--file", str(broken), "--json"]) == 1
    failed = json.loads(capsys.readouterr().out)
    assert failed["result"] == "failed" and str(broken) in failed["reason"]
    env.setenv("MAILGATE_JSON_MAX_BYTES", "1024")
    big = _write(tmp_path / "big.json", {"example.org": {"alias": [
        {"name": f"a{n}", "to": "x@example.net"} for n in range(100)]}})
    assert main(["sync", "--file", str(big), "--dry-run"]) == 1
    assert "MAILGATE_JSON_MAX_BYTES" in capsys.readouterr().out
    assert mail.get_account("c@example.org")


def test_a_file_run_between_url_runs_is_reconciled_back(
        env: pytest.MonkeyPatch, docs: DocServer, mail: MailDirectory, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A file run forgets the sources' validators: the next URL run cannot be "unchanged"."""
    env.setenv("MAILGATE_JSON_CA_FILE", str(docs.ca_file))
    env.setenv("MAILGATE_JSON_URLS", docs.url("/mail.json"))
    docs.serve("/mail.json", spec_document())
    assert main(["sync", "--once"]) == 0
    other = _write(tmp_path / "other.json", {"example.com": {"alias": [
        {"name": "office", "to": "carol@example.net"}]}})
    assert main(["sync", "--file", str(other), "--force"]) == 0
    assert mail.get_alias("office@example.com").to == "carol@example.net"
    capsys.readouterr()

    assert main(["sync", "--dry-run", "--json"]) == 0      # the URL source, as JSON
    planned = json.loads(capsys.readouterr().out)
    assert [c["address"] for c in planned["plan"]["create"]] == [
        "alice@example.com", "bob@example.com"]
    assert main(["sync", "--once", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["result"] == "applied" and report["trigger"] == "cli"
    assert mail.get_alias("office@example.com").to == "alice@example.com,bob@example.com"


def test_token_list_json(env: pytest.MonkeyPatch, directory: Directory,
                         capsys: pytest.CaptureFixture[str]) -> None:
    store = TokenStore(directory, None)
    info, secret = store.create(["example.com", "example.org"], True, "ops")
    assert main(["token", "list", "--json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out) == [{"id": info.id, "domains": ["example.com", "example.org"],
                                "read_only": True, "description": "ops"}]
    assert secret not in out
