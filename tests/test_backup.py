"""``mailgate backup`` and ``restore``: every entry comes back exactly as it was."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.directory import Directory
from gateway.mail import MailDirectory
from gateway.settings import Settings
from gateway.slapd import ManagedSlapd, free_port
from gateway.tokens import TokenStore

from tests.support.slapd import running_slapd

BASE_DN = "dc=backup,dc=test"


def _entries(slapd: ManagedSlapd) -> list[str]:
    """Every entry of the database as slapcat writes it (operational attributes too)."""
    dump = subprocess.run(["slapcat", "-n1", "-F", str(slapd.config_dir)], check=True,
                          capture_output=True, text=True, timeout=60).stdout
    return sorted(block.strip() for block in dump.split("\n\n") if block.strip())


def test_backup_wipe_restore_gives_back_every_entry(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "var"
    with running_slapd(data, BASE_DN) as slapd:
        for name, value in (("MAILGATE_DATA_DIR", str(data)), ("MAILGATE_LDAP_BASE_DN", BASE_DN),
                            ("MAILGATE_EMBEDDED_LDAP_URL", slapd.url)):
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("MAILGATE_LDAP_URL", raising=False)
        directory = Directory(Settings(ldap_url=slapd.url, ldap_base_dn=BASE_DN,
                                       ldap_password=slapd.password("gateway")))
        mail = MailDirectory(directory, 1000)
        mail.create_account("alice", "example.com", "alice-pw", spoofing_whitelist="example.net")
        mail.create_account("bob", "example.net", "bob-pw", submission_disabled=True)
        mail.create_alias("team", "example.com", "alice@example.com,bob@example.net")
        _info, token = TokenStore(directory, None).create(["example.com"], True, "backup test")
        directory.close()
        before = _entries(slapd)
        assert len(before) > 8

        archive = tmp_path / "directory.tar.gz"
        assert main(["backup", str(archive)]) == 0
        assert stat.S_IMODE(archive.stat().st_mode) == 0o600
        assert main(["restore", str(archive)]) == 2      # slapd still runs
        assert "stop it before a restore" in capsys.readouterr().err

    shutil.rmtree(data / "ldap")
    assert main(["restore", str(archive)]) == 0
    with running_slapd(data, BASE_DN) as restored:
        assert _entries(restored) == before
        directory = Directory(Settings(ldap_url=restored.url, ldap_base_dn=BASE_DN,
                                       ldap_password=restored.password("gateway")))
        try:
            alice = MailDirectory(directory, 1000).get_account("alice@example.com")
            assert directory.compare_password(alice.dn, "alice-pw")
            scope = TokenStore(directory, None).authenticate(token)
            assert scope is not None and scope.domains == {"example.com"} and scope.read_only
        finally:
            directory.close()


def test_restore_refuses_another_base_dn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    url = f"ldap://127.0.0.1:{free_port()}"
    monkeypatch.delenv("MAILGATE_LDAP_URL", raising=False)
    monkeypatch.setenv("MAILGATE_EMBEDDED_LDAP_URL", url)
    monkeypatch.setenv("MAILGATE_DATA_DIR", str(tmp_path / "one"))
    monkeypatch.setenv("MAILGATE_LDAP_BASE_DN", BASE_DN)
    ManagedSlapd(tmp_path / "one", BASE_DN, url=url).ensure_initialised()
    archive = tmp_path / "one.tar.gz"
    assert main(["backup", str(archive)]) == 0
    monkeypatch.setenv("MAILGATE_DATA_DIR", str(tmp_path / "two"))
    monkeypatch.setenv("MAILGATE_LDAP_BASE_DN", "dc=other,dc=test")
    capsys.readouterr()
    assert main(["restore", str(archive)]) == 2
    assert "MAILGATE_LDAP_BASE_DN" in capsys.readouterr().err
    assert not (tmp_path / "two" / "ldap").exists()
