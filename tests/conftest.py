"""Shared fixtures: a real slapd built from ldif/, and gateway objects on top.

One slapd per test session (tests.support.slapd.running_slapd: a free loopback
port, data in a temp dir, olcDbNoSync for speed). After each test the mail
subtree and the tokens are emptied again, so tests do not see each other's
entries. Helpers (BASE_DN, ADMIN_TOKEN, Client, ldap_tool, wait_until, ...)
are in tests/support/; this file holds fixtures only.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.app import create_app
from gateway.directory import Directory
from gateway.mail import MailDirectory
from gateway.services import current
from gateway.settings import Settings
from gateway.slapd import ManagedSlapd

from tests.support.api import Client, LiveGateway, serving
from tests.support.constants import ADMIN_TOKEN, BASE_DN, TEST_ROUNDS
from tests.support.slapd import empty_directory, running_slapd
from tests.test_serve import Served


@pytest.fixture(scope="session")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedSlapd]:
    with running_slapd(tmp_path_factory.mktemp("slapd")) as server:
        yield server


@pytest.fixture
def settings(slapd: ManagedSlapd, tmp_path: Path) -> Iterator[Settings]:
    yield Settings(
        ldap_url=slapd.url, ldap_base_dn=BASE_DN, ldap_password=slapd.password("gateway"),
        admin_token=ADMIN_TOKEN, password_rounds=TEST_ROUNDS, data_dir=tmp_path,
        ldap_timeout=5.0,
        # The names the tests reach the app by: the Flask test client's Host
        # (localhost) and the loopback servers' (127.0.0.1:<a free port>).
        allowed_hosts=("localhost", "127.0.0.1"),
    )
    empty_directory(slapd)


@pytest.fixture
def directory(settings: Settings) -> Iterator[Directory]:
    d = Directory(settings)
    yield d
    d.close()


@pytest.fixture
def mail(directory: Directory, settings: Settings) -> MailDirectory:
    return MailDirectory(directory, settings.password_rounds)


@pytest.fixture
def live_gateway(settings: Settings, tmp_path: Path) -> Iterator[LiveGateway]:
    """``live_gateway("POST", "/mail/account/", json={...})`` -> requests.Response."""
    app = create_app(settings)
    try:
        with serving(app, tmp_path / "tls") as live:
            yield live
    finally:
        current(app).directory.close()


@pytest.fixture
def app(settings: Settings) -> Iterator[object]:
    application = create_app(settings)
    yield application
    current(application).directory.close()


@pytest.fixture
def client(app: object) -> Client:
    return Client(app)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """``mailgate serve`` in a child process, not started (tests/test_serve.py);
    stopped after the test. Tests that need other settings define their own."""
    server = Served(tmp_path / "var")
    try:
        yield server
    finally:
        server.stop()
