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
from gateway.services import current
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


class LiveGateway:
    """The gateway app served over real HTTPS on a loopback port, in a thread."""

    def __init__(self, app: object, url: str, ca: Path, token: str) -> None:
        import requests

        self.app = app
        self.url = url
        self.ca = ca
        self.admin_token = token
        self.session = requests.Session()
        self.session.verify = str(ca)
        self.session.headers["Authorization"] = f"Bearer {token}"

    def __call__(self, method: str, path: str, **kwargs: object) -> object:
        # verify per request: requests lets REQUESTS_CA_BUNDLE override session.verify
        kwargs.setdefault("verify", str(self.ca))
        return self.session.request(method, self.url + path, timeout=30, **kwargs)


@pytest.fixture
def live_gateway(settings: Settings, tmp_path: Path) -> Iterator[LiveGateway]:
    """``live_gateway("POST", "/mail/account/", json={...})`` -> requests.Response."""
    import ssl
    import threading

    from werkzeug.serving import make_server

    from gateway import create_app
    from gateway.tls import ensure_self_signed

    cert, key = ensure_self_signed(tmp_path / "tls", ["127.0.0.1"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    app = create_app(settings)
    server = make_server("127.0.0.1", 0, app, threaded=True, ssl_context=context)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield LiveGateway(app, f"https://127.0.0.1:{server.server_port}", cert, ADMIN_TOKEN)
    finally:
        server.shutdown()
        thread.join(10)
        current(app).directory.close()


@pytest.fixture
def app(settings: Settings) -> Iterator[object]:
    from gateway import create_app

    application = create_app(settings)
    yield application
    current(application).directory.close()


class Client:
    """Flask test client that sends the admin token unless told otherwise."""

    def __init__(self, app: object, token: str | None = ADMIN_TOKEN) -> None:
        self.raw = app.test_client()  # type: ignore[attr-defined]
        self.token = token

    def with_token(self, token: str | None) -> Client:
        other = Client.__new__(Client)
        other.raw, other.token = self.raw, token
        return other

    def __getattr__(self, method: str) -> object:
        call = getattr(self.raw, method)

        def request(path: str, **kwargs: object) -> object:
            headers = dict(kwargs.pop("headers", {}) or {})  # type: ignore[call-overload]
            if self.token is not None:
                headers.setdefault("Authorization", f"Bearer {self.token}")
            return call(path, headers=headers, **kwargs)

        return request


@pytest.fixture
def client(app: object) -> Client:
    return Client(app)
