"""gateway.dovecot against real HTTP servers that answer as a broken Dovecot would.

What a working doveadm HTTP API answers is tested against the real Dovecot
(tests/mailpath/test_quota.py). Here: the request is doveadm's (path, the
``X-Dovecot-API`` header, the JSON commands), and every way of not getting a
usable answer (non-2xx, the key refused, garbage, a missing tag, silence, no
listener, not configured) is DovecotUnavailable (503) naming Dovecot, with the
key in no message. And the settings that configure it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from gateway.dovecot import BATCH, Dovecot
from gateway.errors import DovecotUnavailable, NotFound
from gateway.services import Services
from gateway.settings import ConfigError, Settings
from gateway.slapd import free_port

KEY = "the-doveadm-key-4711"
ADDRESS = "alice@example.com"


def ok_answer(commands: list[list[Any]]) -> list[list[Any]]:
    """What doveadm answers for an empty mailbox with a 10 kB limit."""
    answers: list[list[Any]] = []
    for name, params, tag in commands:
        if params["user"].startswith("ghost"):
            answers.append(["error", {"type": "exitCode", "exitCode": 67}, tag])
        elif name == "quotaGet":
            answers.append(["doveadmResponse", [
                {"root": "User quota", "type": "STORAGE", "value": "0", "limit": "10",
                 "percent": "0"},
                {"root": "User quota", "type": "MESSAGE", "value": "0", "limit": "-",
                 "percent": "0"}], tag])
        else:
            answers.append(["doveadmResponse", [{"messages": "2", "vsize": "1234"}], tag])
    return answers


class Fake:
    """An HTTP server on loopback; ``answer(commands)`` -> (status, body bytes)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        self.answer = lambda commands: (200, json.dumps(ok_answer(commands)).encode())
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                commands = json.loads(body)
                fake.requests.append((self.path, dict(self.headers), commands))
                status, data = fake.answer(commands)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # gave up
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"


@pytest.fixture
def fake() -> Iterator[Fake]:
    server = Fake()
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()
        thread.join(10)


def test_the_request_is_doveadms_and_the_answer_is_read(fake: Fake) -> None:
    usage = Dovecot(fake.url, KEY).usage(ADDRESS)
    assert (usage.used_bytes, usage.used_messages, usage.limit_bytes) == (1234, 2, 10 * 1024)
    path, headers, commands = fake.requests[0]
    assert path == "/doveadm/v1"
    assert headers["Authorization"] == "X-Dovecot-API " + base64.b64encode(KEY.encode()).decode()
    assert headers["Content-Type"] == "application/json"
    assert commands == [
        ["quotaGet", {"user": ADDRESS}, "q0"],
        ["mailboxStatus", {"user": ADDRESS, "field": ["vsize", "messages"],
                           "mailboxMask": ["*"], "totalSum": True}, "s0"]]
    # A URL with a path of its own is used as it is.
    Dovecot(fake.url + "/proxied/doveadm/", KEY).usage(ADDRESS)
    assert fake.requests[1][0] == "/proxied/doveadm"


def test_a_mailbox_dovecot_does_not_know_is_not_found(fake: Fake) -> None:
    with pytest.raises(NotFound, match=r"Dovecot does not know the mailbox ghost@example\.com"):
        Dovecot(fake.url, KEY).usage("ghost@example.com")


def test_a_domain_total_is_asked_in_bounded_batches(fake: Fake) -> None:
    addresses = [f"u{i}@example.com" for i in range(BATCH * 2 + 3)] + ["ghost@example.com"]
    total = Dovecot(fake.url, KEY).domain_usage("example.com", addresses + addresses[:5])
    assert (total.mailboxes, total.used_bytes, total.used_messages) == (
        BATCH * 2 + 3, 1234 * (BATCH * 2 + 3), 2 * (BATCH * 2 + 3))
    assert total.unknown == ("ghost@example.com",)
    assert [len(r[2]) for r in fake.requests] == [2 * BATCH, 2 * BATCH, 8]  # repeats once


def test_an_address_doveadm_would_read_as_a_mask_is_asked_with_quotaget_alone(
        fake: Fake) -> None:
    def answer(commands: list[list[Any]]) -> tuple[int, bytes]:
        rows = [{"username": user, "root": "User quota", "type": kind, "value": value,
                 "limit": "-", "percent": "0"}
                for user in ("a*b@example.com", "axb@example.com")
                for kind, value in (("STORAGE", "3" if user == "a*b@example.com" else "9"),
                                    ("MESSAGE", "1"))]
        return 200, json.dumps([["doveadmResponse", rows, commands[0][2]]]).encode()
    fake.answer = answer
    usage = Dovecot(fake.url, KEY).usage("a*b@example.com")
    assert (usage.used_bytes, usage.used_messages, usage.limit_bytes) == (3 * 1024, 1, None)
    assert [c[0] for c in fake.requests[0][2]] == ["quotaGet"]


@pytest.mark.parametrize(("status", "body", "message"), [
    (401, b"", "refused the API key (MAILGATE_DOVECOT_API_KEY)"),
    (403, b"", "refused the API key"),
    (500, b"oops", "answered HTTP 500"),
    (302, b"", "answered HTTP 302"),
    (200, b"<html>not json</html>", "gave an answer that is not doveadm's"),
    (200, b'{"not": "a list"}', "gave an answer that is not doveadm's"),
    (200, b'[["doveadmResponse", [], "other-tag"]]', "gave an answer that is not doveadm's"),
    (200, b'[["doveadmResponse", [{"type": "STORAGE"}], "q0"], '
          b'["doveadmResponse", [], "s0"]]', "gave an answer that is not doveadm's"),
    (200, b'[["error", {"type": "exitCode", "exitCode": 75}, "q0"], '
          b'["doveadmResponse", [], "s0"]]', "could not read the mailbox alice@example.com "
                                             "(doveadm exit code 75)"),
])
def test_every_unusable_answer_is_dovecot_unavailable(fake: Fake, status: int, body: bytes,
                                                      message: str) -> None:
    fake.answer = lambda commands: (status, body)
    with pytest.raises(DovecotUnavailable) as caught:
        Dovecot(fake.url, KEY).usage(ADDRESS)
    assert message in caught.value.message
    assert caught.value.message.startswith("Dovecot")
    assert caught.value.status == 503 and caught.value.headers() == {"Retry-After": "5"}
    assert KEY not in caught.value.message and "directory" not in caught.value.message


def test_no_listener_and_silence_are_dovecot_unavailable_within_the_timeout() -> None:
    with pytest.raises(DovecotUnavailable, match=r"cannot be reached \(connection refused\)"):
        Dovecot(f"http://127.0.0.1:{free_port()}", KEY).usage(ADDRESS)
    with contextlib.closing(socket.socket()) as silent:   # accepts, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        start = time.monotonic()
        with pytest.raises(DovecotUnavailable, match=r"did not answer within 0\.5 s"):
            Dovecot(f"http://127.0.0.1:{silent.getsockname()[1]}", KEY, timeout=0.5).usage(
                ADDRESS)
        assert time.monotonic() - start < 3


def test_a_domain_total_keeps_to_its_deadline(fake: Fake) -> None:
    def slow(commands: list[list[Any]]) -> tuple[int, bytes]:
        time.sleep(0.3)
        return 200, json.dumps(ok_answer(commands)).encode()
    fake.answer = slow
    start = time.monotonic()
    with pytest.raises(DovecotUnavailable, match=r"mailboxes of example\.com within 0\.5 s"):
        Dovecot(fake.url, KEY).domain_usage(
            "example.com", [f"u{i}@example.com" for i in range(BATCH * 10)], deadline=0.5)
    assert time.monotonic() - start < 2.5
    assert len(fake.requests) < 10


def test_the_key_is_in_no_repr(fake: Fake) -> None:
    assert KEY not in repr(Dovecot(fake.url, KEY))
    assert KEY not in repr(Settings(dovecot_url=fake.url, dovecot_api_key=KEY))
    with pytest.raises(ValueError, match="not an http"):
        Dovecot("ftp://dovecot", KEY)


def test_not_configured_is_dovecot_unavailable_without_retry_after(settings: Settings) -> None:
    services = Services.build(settings)
    try:
        assert services.dovecot is None
        with pytest.raises(DovecotUnavailable, match="not configured") as caught:
            services.usage_reader()
        assert caught.value.status == 503 and caught.value.headers() == {}
        assert "MAILGATE_DOVECOT_URL" in caught.value.message
    finally:
        services.directory.close()
    configured = Services.build(settings.replace(dovecot_url="http://127.0.0.1:8080",
                                                 dovecot_api_key=KEY, dovecot_timeout=2.5))
    try:
        reader = configured.usage_reader()
        assert (reader.url, reader.timeout) == ("http://127.0.0.1:8080", 2.5)
    finally:
        configured.directory.close()


def test_dovecot_unavailable_is_one_warning_line_without_traceback(
        client: Any, caplog: pytest.LogCaptureFixture) -> None:
    created = client.post("/mail/account/", json={"name": "u", "domain": "nodove.example",
                                                  "password": "pw-12345678"})
    assert created.status_code == 201, created.get_json()
    with caplog.at_level(logging.INFO):
        answer = client.get("/mail/account/u@nodove.example/usage/")
    assert answer.status_code == 503 and "Dovecot" in answer.get_json()["message"]
    assert "Retry-After" not in answer.headers      # not configured: retrying is no help
    logged = [r for r in caplog.records if "Dovecot" in r.getMessage()]
    assert [(r.levelname, r.exc_info) for r in logged] == [("WARNING", None)]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# -- settings --------------------------------------------------------------------------


def test_dovecot_settings(tmp_path: Path) -> None:
    assert Settings.from_env({}).dovecot_url is None
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    read = Settings.from_env({"MAILGATE_DOVECOT_URL": "http://dovecot:8080/",
                              "MAILGATE_DOVECOT_API_KEY_FILE": str(key_file),
                              "MAILGATE_DOVECOT_TIMEOUT": "2"})
    assert (read.dovecot_url, read.dovecot_api_key, read.dovecot_timeout) == (
        "http://dovecot:8080", KEY, 2.0)


@pytest.mark.parametrize(("env", "variable", "why"), [
    ({"MAILGATE_DOVECOT_URL": "http://dovecot:8080"}, "MAILGATE_DOVECOT_API_KEY",
     "required when MAILGATE_DOVECOT_URL is set"),
    ({"MAILGATE_DOVECOT_URL": "dovecot:8080", "MAILGATE_DOVECOT_API_KEY": KEY},
     "MAILGATE_DOVECOT_URL", "expected http://host:port"),
    ({"MAILGATE_DOVECOT_URL": "http://dovecot:99999", "MAILGATE_DOVECOT_API_KEY": KEY},
     "MAILGATE_DOVECOT_URL", "not a valid URL"),
    ({"MAILGATE_DOVECOT_URL": "http://u:p@dovecot:8080", "MAILGATE_DOVECOT_API_KEY": KEY},
     "MAILGATE_DOVECOT_URL", "credentials"),
    ({"MAILGATE_DOVECOT_API_KEY": KEY, "MAILGATE_DOVECOT_API_KEY_FILE": "/x"},
     "MAILGATE_DOVECOT_API_KEY", "either"),
    ({"MAILGATE_DOVECOT_TIMEOUT": "0"}, "MAILGATE_DOVECOT_TIMEOUT", "between"),
])
def test_bad_dovecot_settings_name_the_variable(env: dict[str, str], variable: str,
                                                why: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert caught.value.variable == variable and why in str(caught.value)
    assert KEY not in str(caught.value)
