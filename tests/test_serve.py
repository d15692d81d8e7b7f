"""``mailgate serve`` in embedded mode, as an operator runs it (make run)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from gateway.slapd import ManagedSlapd, free_port

from tests.support.wait import wait_until


class Served:
    def __init__(self, data: Path, **env: str) -> None:
        self.data = data
        self.env = env
        self.port, self.ldap_port = free_port(), free_port()
        self.proc: subprocess.Popen[str] | None = None
        self.output = ""

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = dict(os.environ, MAILGATE_DATA_DIR=str(self.data),
                   MAILGATE_LISTEN=f"127.0.0.1:{self.port}",
                   MAILGATE_EMBEDDED_LDAP_URL=f"ldap://127.0.0.1:{self.ldap_port}",
                   MAILGATE_PASSWORD_ROUNDS="1000", MAILGATE_WORKERS="2")
        for name in list(env):
            if name.startswith("MAILGATE_") and name not in (
                    "MAILGATE_DATA_DIR", "MAILGATE_LISTEN", "MAILGATE_EMBEDDED_LDAP_URL",
                    "MAILGATE_PASSWORD_ROUNDS", "MAILGATE_WORKERS"):
                del env[name]
        env.update(self.env)
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve"], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        proc = self.proc

        def listening() -> bool:
            assert proc.poll() is None, proc.stdout.read()  # type: ignore[union-attr]
            return _port_open(self.port)

        wait_until(listening, f"mailgate serve to listen on port {self.port}", timeout=30,
                   interval=0.1)

    def start_ready(self, timeout: float = 60) -> None:
        """Start, then wait (bounded) until /readyz answers 200."""
        self.start()
        wait_until(lambda: self.get("/readyz").status_code == 200, "readiness", timeout)

    def stop(self, how: signal.Signals = signal.SIGTERM) -> int | None:
        """Stop with ``how``; the exit status (None if it had to be killed)."""
        status: int | None = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(how)
            try:
                self.output, _ = self.proc.communicate(timeout=30)
                status = self.proc.returncode
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.output, _ = self.proc.communicate(timeout=10)
        self.proc = None
        return status

    def get(self, path: str, **kwargs: object) -> requests.Response:
        token = (self.data / "admin-token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}",
                   **kwargs.pop("headers", {})}  # type: ignore[dict-item]
        return requests.request(kwargs.pop("method", "GET"), self.url + path,  # type: ignore[arg-type]
                                headers=headers,
                                verify=str(self.data / "tls" / "cert.pem"), timeout=30,
                                **kwargs)  # type: ignore[arg-type]


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 0.2):
            return True
    except OSError:
        return False


def test_embedded_serve_end_to_end(served: Served) -> None:
    served.start()
    token_file = served.data / "admin-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((served.data / "secrets" / "ldap-admin.password").stat().st_mode) == 0o600
    assert served.get("/readyz").json() == {"status": "ready"}
    created = served.get("/mail/account/", method="POST",
                         json={"name": "alice", "domain": "example.com", "password": "pw"})
    assert created.status_code == 201, created.text
    # Plain HTTP gets no API answer on the HTTPS port.
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{served.port}/mail/account/", timeout=5)
    # Swagger UI and the OpenAPI document come from the gateway itself.
    docs = served.get("/docs/")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    external = [u for u in re.findall(r'(?:src|href)="([^"]+)"', docs.text)
                if u.startswith(("http:", "https:", "//"))]
    assert external == []
    for asset in re.findall(r'(?:src|href)="(/swaggerui/[^"]+)"', docs.text):
        assert served.get(asset).status_code == 200, asset
    # The token as a Basic user name (a client's mistake) is refused, and not logged.
    token = token_file.read_text().strip()
    refused = requests.get(f"{served.url}/mail/account/", auth=(token, ""),
                           verify=str(served.data / "tls" / "cert.pem"), timeout=30)
    assert refused.status_code == 401
    spec = served.get("/swagger.json").json()
    for path in ("/mail/account/", "/mail/account/{account_id}/",
                 "/mail/account/{account_id}/set_password/",
                 "/mail/account/{account_id}/disable_submission/",
                 "/mail/account/{account_id}/enable_submission/",
                 "/mail/account/{account_id}/set_spoofing_whitelist/",
                 "/mail/alias/", "/mail/alias/{alias_id}/"):
        assert path in spec["paths"], path
    # Existing LDAP tools, pointed where serve says, see the entry.
    admin_pw = served.data / "secrets" / "ldap-admin.password"
    found = subprocess.run(
        ["ldapsearch", "-x", "-LLL", "-H", f"ldap://127.0.0.1:{served.ldap_port}",
         "-D", "cn=admin,dc=mail,dc=internal", "-y", str(admin_pw),
         "-b", "ou=domains,dc=mail,dc=internal", "(mail=alice@example.com)", "mail"],
        capture_output=True, text=True, timeout=30, check=True)
    assert "mail: alice@example.com" in found.stdout
    assert served.stop(signal.SIGTERM) == 0
    output = served.output
    # The access log: one line per request in the log format, without the token.
    access = re.compile(r'INFO gateway\.access \[req [^]]+\]: 127\.0\.0\.1 "(\S+ \S+ HTTP/1\.1)" '
                        r'(\d{3}) (\d+|-) "[^"]*" "[^"]*" [\d.]+ms$', re.MULTILINE)
    requests_logged = {(m.group(1), m.group(2)) for m in access.finditer(output)}
    assert ("GET /readyz HTTP/1.1", "200") in requests_logged
    assert ("POST /mail/account/ HTTP/1.1", "201") in requests_logged
    assert ("GET /mail/account/ HTTP/1.1", "401") in requests_logged
    assert f"https://127.0.0.1:{served.port}/docs/" in output
    assert str(token_file.resolve()) in output
    assert f"ldap://127.0.0.1:{served.ldap_port}" in output
    assert "cn=admin,dc=mail,dc=internal" in output and str(admin_pw.resolve()) in output
    assert token_file.read_text().strip() not in output
    assert not _port_open(served.ldap_port), "serve must stop the slapd it started"
    # Data is kept between runs; SIGINT (Ctrl-C) stops it cleanly too.
    served.start()
    assert served.get("/mail/account/alice@example.com/").status_code == 200
    assert served.stop(signal.SIGINT) == 0
    assert not _port_open(served.port) and not _port_open(served.ldap_port)
    assert '"GET /mail/account/alice@example.com/ HTTP/1.1" 200 ' in served.output


def test_directory_command_runs_only_slapd(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}
    env.update(MAILGATE_DATA_DIR=str(tmp_path / "var"),
               MAILGATE_EMBEDDED_LDAP_URL=f"ldap://127.0.0.1:{port}")
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "directory"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
    reader.start()
    try:

        def listening() -> bool:
            assert proc.poll() is None, "".join(lines)
            return _port_open(port)

        wait_until(listening, f"mailgate directory's slapd on port {port}", timeout=30,
                   interval=0.1)
        secret = tmp_path / "var" / "secrets" / "ldap-postfix.password"

        def binds() -> bool:
            whoami = subprocess.run(
                ["ldapwhoami", "-x", "-H", f"ldap://127.0.0.1:{port}", "-o", "nettimeout=2",
                 "-D", "cn=postfix,ou=services,dc=mail,dc=internal", "-y", str(secret)],
                capture_output=True, text=True, timeout=30, check=False)
            return whoami.returncode == 0

        assert binds()
        # Issue 20: a slapd that dies is started again, without a human.
        managed = ManagedSlapd(tmp_path / "var", "dc=mail,dc=internal")
        first = managed.running_pid()
        assert first is not None
        # Killed only once the command has finished starting it (its banner):
        # a slapd dying during the first start is a failed start (exit 1).
        wait_until(lambda: any(line.startswith("mailgate: secrets") for line in lines),
                   "the command's banner", timeout=30, interval=0.05)
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: managed.running_pid() not in (None, first), "a new slapd",
                   timeout=30, interval=0.1)
        wait_until(binds, "LDAP answering after the restart", timeout=30, interval=0.2)
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=90)
        reader.join(timeout=30)
    output = "".join(lines)
    assert proc.returncode == 0, output
    assert f"ldap://127.0.0.1:{port}" in output
    assert "restarting it" in output and "running again" in output, output
    assert not _port_open(port)


def test_json_logs_one_object_a_line_with_the_request_id(tmp_path: Path) -> None:
    served = Served(tmp_path / "var", MAILGATE_LOG_FORMAT="json")
    try:
        served.start()
        wait_until(lambda: served.get("/readyz").status_code == 200, "readiness", 30)
        created = served.get("/mail/account/", method="POST", headers={"X-Request-ID": "j-1"},
                             json={"name": "jay", "domain": "example.com", "password": "pw"})
        assert created.status_code == 201 and created.headers["X-Request-ID"] == "j-1"
    finally:
        served.stop(signal.SIGTERM)
    lines = [line for line in served.output.splitlines()
             if line.strip() and not line.startswith("mailgate: ")]   # the start banner
    parsed = [json.loads(line) for line in lines]   # every log line is one JSON object
    loggers = {p["logger"] for p in parsed}
    assert {"gateway.access", "gateway.mail", "_granian"} <= loggers, loggers
    mine = [p for p in parsed if p.get("request_id") == "j-1"]
    assert {p["logger"] for p in mine} == {"gateway.mail", "gateway.access"}
    assert all({"time", "level", "message"} <= set(p) for p in parsed)
