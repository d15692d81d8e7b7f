"""``mailgate serve`` checks its ports and its directory before it says anything,
and keeps the managed slapd running."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from gateway.app import create_app
from gateway.services import current
from gateway.settings import Settings
from gateway.slapd import ManagedSlapd, free_port, listening

from tests.support.api import Client
from tests.support.slapd import running_slapd
from tests.support.wait import wait_until

BASE_DN = "dc=mail,dc=internal"



class Serve:
    def __init__(self, data: Path, port: int | None = None,
                 ldap_port: int | None = None) -> None:
        self.data = data
        self.port = port or free_port()
        self.ldap_port = ldap_port or free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}
        env.update(MAILGATE_DATA_DIR=str(data), MAILGATE_LISTEN=f"127.0.0.1:{self.port}",
                   MAILGATE_EMBEDDED_LDAP_URL=f"ldap://127.0.0.1:{self.ldap_port}",
                   MAILGATE_PASSWORD_ROUNDS="1000", MAILGATE_WORKERS="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve"], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)

    def ready(self) -> bool:
        if not (self.data / "tls" / "cert.pem").exists():
            return False
        try:
            return requests.get(f"https://127.0.0.1:{self.port}/readyz", timeout=2,
                                verify=str(self.data / "tls" / "cert.pem")).status_code == 200
        except requests.RequestException:
            return False

    def finish(self, timeout: float = 30, terminate: bool = True) -> str:
        if terminate and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            output, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            output, _ = self.proc.communicate(timeout=10)
        return output


@pytest.fixture
def serves() -> Iterator[list[Serve]]:
    started: list[Serve] = []
    yield started
    for serve in started:
        serve.finish()


def test_a_managed_slapd_that_dies_is_started_again(tmp_path: Path, serves: list[Serve]) -> None:
    serve = Serve(tmp_path / "var")
    serves.append(serve)
    wait_until(lambda: serve.ready() or serve.proc.poll() is not None, "serve to be ready",
               timeout=60, interval=0.1)
    slapd = ManagedSlapd(tmp_path / "var", BASE_DN)
    first = slapd.running_pid()
    assert first is not None
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: slapd.running_pid() not in (None, first), "a new slapd", timeout=30,
               interval=0.1)
    wait_until(serve.ready, "readiness after the restart", timeout=30, interval=0.1)
    output = serve.finish()
    assert "restarting it" in output and "running again" in output, output
    assert not listening(f"ldap://127.0.0.1:{serve.ldap_port}")


@pytest.mark.parametrize(("taken", "variable"), [("ldap_port", "MAILGATE_EMBEDDED_LDAP_URL"),
                                                 ("port", "MAILGATE_LISTEN")])
def test_a_taken_port_is_refused_before_the_banner(tmp_path: Path, taken: str,
                                                   variable: str) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        serve = Serve(tmp_path / "var", **{taken: squatter.getsockname()[1]})
        output = serve.finish(timeout=60, terminate=False)
    assert serve.proc.returncode == 2, output
    assert variable in output
    assert "mailgate: API" not in output and "Traceback" not in output
    assert not listening(f"ldap://127.0.0.1:{serve.ldap_port}"), "no slapd left behind"


def test_another_directory_on_the_ldap_port_is_refused(tmp_path: Path) -> None:
    with running_slapd(tmp_path / "other", BASE_DN) as other:
        serve = Serve(tmp_path / "var", ldap_port=urlsplit(other.url).port)
        output = serve.finish(timeout=60, terminate=False)
    assert serve.proc.returncode == 2, output
    assert "MAILGATE_EMBEDDED_LDAP_URL" in output and "mailgate: API" not in output


def test_refused_credentials_are_one_log_line_503_and_not_ready(
        slapd: ManagedSlapd, caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(Settings(ldap_url=slapd.url, ldap_base_dn=slapd.base_dn,
                              ldap_password="not-the-password", admin_token="a" * 32,
                              ldap_timeout=2.0))
    client = Client(app, token="a" * 32)
    caplog.set_level(logging.INFO)
    try:
        for path in ("/mail/account/", "/mail/alias/", "/readyz") * 4:
            answer = client.get(path)
            assert answer.status_code == 503, (path, answer.json)
            assert answer.headers["Retry-After"]
    finally:
        current(app).directory.close()
    lines = [r for r in caplog.records if r.name.startswith("gateway")]
    refused = [r for r in lines if "refused the gateway's credentials" in r.getMessage()]
    assert len(refused) == 1, [r.getMessage() for r in lines]
    assert "MAILGATE_LDAP_PASSWORD" in refused[0].getMessage()
    assert not any(r.exc_info for r in lines)
