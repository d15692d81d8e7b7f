"""Shared fixtures: a real slapd built from ldif/, and gateway objects on top.

One slapd per test session (started on a free loopback port, data in a temp
dir, olcDbNoSync for speed). After each test the mail subtree and the tokens
are emptied again, so tests do not see each other's entries.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.directory import Directory
from gateway.mail import MailDirectory
from gateway.settings import Settings
from gateway.slapd import ManagedSlapd, free_port

BASE_DN = "dc=mail,dc=test"
ADMIN_TOKEN = "test-admin-token-0123456789abcdef"
TEST_ROUNDS = 1000  # cheap hashes for tests; the default (100 000) is tested on its own


@pytest.fixture(scope="session")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedSlapd]:
    server = ManagedSlapd(tmp_path_factory.mktemp("slapd"), BASE_DN,
                          url=f"ldap://127.0.0.1:{free_port()}", nosync=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def ldap_tool(slapd: ManagedSlapd, tool: str, *args: str, input: str | None = None,
              check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run an OpenLDAP client tool (ldapadd, ldapsearch, ...) as the directory admin."""
    return subprocess.run(
        [tool, "-x", "-H", slapd.url, "-D", slapd.admin_dn, "-w", slapd.password("admin"),
         *args], input=input, capture_output=True, text=True, check=check, timeout=60)


def _empty_directory(slapd: ManagedSlapd) -> None:
    for base in (f"ou=domains,{BASE_DN}", f"ou=tokens,ou=gateway,{BASE_DN}",
                 f"ou=gateway,{BASE_DN}"):
        found = ldap_tool(slapd, "ldapsearch", "-LLL", "-s", "one", "-b", base, "1.1",
                          check=False)
        dns = [line[4:] for line in found.stdout.splitlines() if line.startswith("dn: ")]
        dns = [dn for dn in dns if not dn.startswith("ou=tokens,")]
        if dns:
            ldap_tool(slapd, "ldapdelete", "-r", *dns)


@pytest.fixture
def settings(slapd: ManagedSlapd, tmp_path: Path) -> Iterator[Settings]:
    yield Settings(
        ldap_url=slapd.url, ldap_base_dn=BASE_DN, ldap_password=slapd.password("gateway"),
        admin_token=ADMIN_TOKEN, password_rounds=TEST_ROUNDS, data_dir=tmp_path,
        ldap_timeout=5.0,
    )
    _empty_directory(slapd)


@pytest.fixture
def directory(settings: Settings) -> Iterator[Directory]:
    d = Directory(settings)
    yield d
    d.close()


@pytest.fixture
def mail(directory: Directory, settings: Settings) -> MailDirectory:
    return MailDirectory(directory, settings.password_rounds)
