"""Issue 10, items 11 and 15, and writers under SIGKILL: the directory
frozen (SIGSTOP), stopped and killed, under a real ``mailgate serve``.

These tests own their slapd (the session's one is never frozen or killed).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from gateway.slapd import ManagedSlapd, free_port
from gateway.tls import ensure_self_signed

from tests.support.constants import ADMIN_TOKEN, BASE_DN
from tests.support.slapd import ldap_tool, running_slapd
from tests.support.wait import wait_until

READY_BOUND = 2.0       # documented bound of /readyz (docs/reliability.md)
LDAP_TIMEOUT = 2.0      # MAILGATE_LDAP_TIMEOUT of these tests


@pytest.fixture
def own_slapd(tmp_path: Path) -> Iterator[ManagedSlapd]:
    with running_slapd(tmp_path / "slapd", nosync=False) as server:
        try:
            yield server
        finally:
            pid = server.pid
            if pid is not None:
                os.kill(pid, signal.SIGCONT)


class Gateway:
    """``mailgate serve`` (granian, TLS) against ``own_slapd``: 1 worker, 2 threads,
    so a request stuck on LDAP is a thread other requests wait for."""

    def __init__(self, slapd: ManagedSlapd, data: Path, workers: int = 1) -> None:
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        cert, key = ensure_self_signed(data / "tls", ["127.0.0.1"])
        self.ca = str(cert)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}
        env.update(MAILGATE_LDAP_URL=slapd.url, MAILGATE_LDAP_BASE_DN=BASE_DN,
                   MAILGATE_LDAP_PASSWORD=slapd.password("gateway"),
                   MAILGATE_ADMIN_TOKEN=ADMIN_TOKEN, MAILGATE_DATA_DIR=str(data),
                   MAILGATE_LISTEN=f"127.0.0.1:{self.port}", MAILGATE_TLS_CERT=str(cert),
                   MAILGATE_TLS_KEY=str(key), MAILGATE_WORKERS=str(workers),
                   MAILGATE_THREADS="2", MAILGATE_LDAP_TIMEOUT=str(LDAP_TIMEOUT),
                   MAILGATE_PASSWORD_ROUNDS="1000")
        self.log = data / "serve.log"
        self._out = self.log.open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve"], env=env,
                                     stdout=self._out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "mailgate serve did not answer within 30 s"
            try:
                if self.get("/healthz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.1)

    def get(self, path: str, timeout: float = 30, **kwargs: object) -> requests.Response:
        method = str(kwargs.pop("method", "GET"))
        return requests.request(method, self.url + path, verify=self.ca, timeout=timeout,
                                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                                **kwargs)  # type: ignore[arg-type]

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._out.close()
        return self.log.read_text()


@pytest.fixture
def gateway(own_slapd: ManagedSlapd, tmp_path: Path) -> Iterator[Gateway]:
    served = Gateway(own_slapd, tmp_path / "var")
    try:
        yield served
    finally:
        served.stop()


def timed(call: object) -> tuple[float, requests.Response | Exception]:
    start = time.monotonic()
    try:
        result: requests.Response | Exception = call()  # type: ignore[operator]
    except requests.RequestException as exc:
        result = exc
    return time.monotonic() - start, result


# -- item 15: a frozen directory -------------------------------------------------


def test_a_frozen_directory_never_hangs_a_request(own_slapd: ManagedSlapd,
                                                  gateway: Gateway) -> None:
    created = gateway.get("/mail/account/", method="POST",
                          json={"name": "alice", "domain": "example.com", "password": "pw"})
    assert created.status_code == 201, created.text
    assert gateway.get("/readyz").status_code == 200
    pid = own_slapd.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        # Six requests that need LDAP, at once, on a gateway of two threads.
        with ThreadPoolExecutor(6) as pool:
            stuck = [pool.submit(timed, lambda: gateway.get("/mail/account/", timeout=60))
                     for _ in range(6)]
            time.sleep(0.3)   # let them reach the gateway first (not a race: any order holds)
            health = timed(lambda: gateway.get("/healthz", timeout=60))
            ready = timed(lambda: gateway.get("/readyz", timeout=60))
            answers = [f.result() for f in stuck]
        print(f"\nfrozen: /healthz {health[0]:.2f} s, /readyz {ready[0]:.2f} s, six LDAP "
              f"requests {min(t for t, _ in answers):.2f}-{max(t for t, _ in answers):.2f} s")
        assert isinstance(health[1], requests.Response) and health[1].status_code == 200
        # At worst the time until the first LDAP timeout tells the pool the
        # directory is down: every thread may be waiting on it until then.
        assert health[0] < LDAP_TIMEOUT + 0.5, f"/healthz took {health[0]:.1f} s"
        assert isinstance(ready[1], requests.Response) and ready[1].status_code == 503
        assert ready[0] < READY_BOUND + 0.5, f"/readyz took {ready[0]:.1f} s"
        for took, answer in answers:
            assert isinstance(answer, requests.Response), answer
            assert answer.status_code == 503, answer.text
            assert "Retry-After" in answer.headers
            assert took < 3 * LDAP_TIMEOUT + 1, f"a request took {took:.1f} s"
        # Every request, one after the other, keeps within the bound.
        for path in ("/mail/account/", "/mail/account/alice@example.com/", "/readyz"):
            took, answer = timed(lambda p=path: gateway.get(p, timeout=60))
            assert isinstance(answer, requests.Response) and answer.status_code == 503
            assert took < 2 * LDAP_TIMEOUT + 1, f"{path} took {took:.1f} s"
    finally:
        os.kill(pid, signal.SIGCONT)
    deadline = time.monotonic() + 3 * LDAP_TIMEOUT + 5
    while gateway.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "not ready again after SIGCONT"
        time.sleep(0.2)
    assert gateway.get("/mail/account/alice@example.com/").status_code == 200


# -- item 11: one log line per outage, not one traceback per request --------------


def _service_lines(log: str) -> list[str]:
    """What the process wrote besides access-log lines and its start/stop banner."""
    return [line for line in log.splitlines()
            if not line.startswith("mailgate: ")
            and not re.search(r" (INFO|WARNING) (gateway\.access|_?granian)\b", line)]


def test_an_outage_is_logged_once_not_per_request(own_slapd: ManagedSlapd,
                                                  gateway: Gateway) -> None:
    assert gateway.get("/mail/account/").status_code == 200
    before = len(_service_lines(gateway.log.read_text()))
    own_slapd.stop()
    requests_sent = 0
    try:
        for _round in range(20):
            for path, method in (("/mail/account/", "GET"), ("/mail/alias/", "GET"),
                                 ("/mail/account/x@example.com/", "GET"), ("/readyz", "GET"),
                                 ("/mail/account/", "POST")):
                answer = gateway.get(path, method=method, json={
                    "name": "a", "domain": "example.com", "password": "pw"}
                    if method == "POST" else None)
                requests_sent += 1
                assert answer.status_code == 503, answer.text
                assert answer.headers.get("Retry-After")
                assert "Traceback" not in answer.text
    finally:
        own_slapd.start()
    deadline = time.monotonic() + 10
    while gateway.get("/mail/account/").status_code != 200:
        assert time.monotonic() < deadline, "the gateway did not reconnect"
        time.sleep(0.2)
    log = gateway.stop()
    lines = _service_lines(log)[before:]
    assert requests_sent == 100
    assert "Traceback" not in log
    assert len([line for line in lines if "directory unavailable" in line]) == 1, lines
    assert len([line for line in lines if "directory available again" in line]) == 1, lines
    assert len(lines) <= 3, lines
    print(f"\noutage: {requests_sent} requests answered 503, {len(lines)} log lines: {lines}")


# -- slapd killed (SIGKILL) under concurrent writers ------------------------------------


def test_writers_under_sigkill_lose_no_acknowledged_entry(own_slapd: ManagedSlapd,
                                                         gateway: Gateway) -> None:
    acknowledged: list[str] = []
    answers: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(number: int) -> None:
        for index in range(400):          # bounded; stopped earlier by the test
            if stop.is_set():
                return
            name = f"w{number}-{index}"
            try:
                answer = gateway.get("/mail/account/", method="POST", timeout=30, json={
                    "name": name, "domain": f"d{number % 2}.example", "password": "pw",
                    "spoofing_whitelist": f"d{number % 2}.example"})
            except requests.RequestException:
                continue
            with lock:
                answers.append(answer.status_code)
                if answer.status_code == 201:
                    acknowledged.append(f"{name}@d{number % 2}.example")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(acknowledged) >= 30, "the writers to make progress", 30)
    pid = own_slapd.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    killed_at = len(acknowledged)
    # Writers keep going against the dead server until some were refused...
    wait_until(lambda: 503 in answers, "a write refused while slapd is dead", 30)
    own_slapd.start()
    # ... and after the restart until some more were accepted.
    wait_until(lambda: len(acknowledged) > killed_at + 5, "writes accepted again", 30)
    stop.set()
    for thread in threads:
        thread.join(60)
    assert not any(t.is_alive() for t in threads)
    assert set(answers) <= {201, 503}, sorted(set(answers))
    assert 503 in answers and killed_at >= 30
    print(f"\nsigkill: {len(acknowledged)} acknowledged ({killed_at} before the kill), "
          f"{answers.count(503)} answered 503")
    # Every 201 is there, whole; no entry is half-written.
    for address in acknowledged:
        got = gateway.get(f"/mail/account/{address}/")
        assert got.status_code == 200, (address, got.text)
        assert got.json()["password"].startswith("$6$")
        assert got.json()["spoofing_whitelist"] == address.split("@")[1]
    found = ldap_tool(own_slapd, "ldapsearch", "-LLL", "-b", f"ou=domains,{BASE_DN}",
                      "(objectClass=mailgateAccount)", "mail", "userPassword",
                      "mailgateOrigin", "mailgateSenderAllowed").stdout
    entries = [e for e in re.split(r"\n\n+", found.strip()) if e]
    assert len(entries) >= len(acknowledged)
    for entry in entries:
        for attribute in ("mail:", "userPassword::", "mailgateOrigin:",
                          "mailgateSenderAllowed:"):
            assert attribute in entry, entry
