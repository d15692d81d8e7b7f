"""The access log middleware: one combined-format line per request, no secrets."""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.accesslog import AccessLog, escape, format_line

LINE = re.compile(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO gateway\.access'
                  r'(?: \[req [^]]+\])?: (\S+) "([^"]*)" (\d{3}) (\d+|-) "([^"]*)" "([^"]*)" '
                  r'\d+\.\dms$')
TOKEN = "s3cret-token-0123456789abcdef"


def environ(**extra: Any) -> dict[str, Any]:
    base = {"REMOTE_ADDR": "127.0.0.1", "REQUEST_METHOD": "GET", "SCRIPT_NAME": "",
            "PATH_INFO": "/mail/account/a@example.com/", "QUERY_STRING": "",
            "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_USER_AGENT": "curl/8"}
    base.update(extra)
    return base


def app(body: list[bytes], length: bool = True, status: str = "200 OK") -> Any:
    def wsgi(env: dict[str, Any], start_response: Any) -> Any:
        headers = [("Content-Type", "application/json")]
        if length:
            headers.append(("Content-Length", str(sum(map(len, body)))))
        start_response(status, headers)
        return iter(body)  # as werkzeug does: an iterator, not a list
    return wsgi


def serve(wsgi: Any, env: dict[str, Any], log: Path) -> tuple[bytes, list[str]]:
    with log.open("a", encoding="utf-8") as stream:
        logged = AccessLog(wsgi, stream)
        started: list[Any] = []
        result = logged(env, lambda status, headers, exc_info=None: started.append(status))
        body = b"".join(result)
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return body, log.read_text(encoding="utf-8").splitlines()


@pytest.fixture
def log(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "access.log"


def test_one_combined_line(log: Path) -> None:
    body, lines = serve(app([b'{"id": 1}']), environ(QUERY_STRING="page=2"), log)
    assert body == b'{"id": 1}'
    [line] = lines
    match = LINE.match(line)
    assert match is not None, line
    assert match.groups() == ("127.0.0.1", "GET /mail/account/a@example.com/?page=2 HTTP/1.1",
                              "200", "9", "-", "curl/8")


def test_streamed_body_is_counted(log: Path) -> None:
    body, [line] = serve(app([b"ab", b"cde"], length=False, status="404 NOT FOUND"),
                         environ(), log)
    assert body == b"abcde"
    match = LINE.match(line)
    assert match is not None and match.group(3, 4) == ("404", "5")


@pytest.mark.parametrize("authorization", [
    f"Bearer {TOKEN}",
    "Basic " + base64.b64encode(f":{TOKEN}".encode()).decode(),
    # A client that puts the token where the user name goes.
    "Basic " + base64.b64encode(f"{TOKEN}:".encode()).decode(),
])
def test_no_token_in_the_line(log: Path, authorization: str) -> None:
    _body, [line] = serve(app([b"{}"]), environ(HTTP_AUTHORIZATION=authorization,
                                                 HTTP_COOKIE=f"session={TOKEN}"), log)
    assert TOKEN not in line
    assert base64.b64encode(f"{TOKEN}:".encode()).decode() not in line
    assert " - - " not in line   # no user fields at all


def test_client_text_cannot_forge_a_line(log: Path) -> None:
    agent = 'x" 200 0 "-" "y\n127.0.0.1 - - [forged]'
    _body, lines = serve(app([b"{}"]), environ(HTTP_USER_AGENT=agent,
                                               PATH_INFO="/caf\xc3\xa9\"/"), log)
    assert len(lines) == 1
    match = LINE.match(lines[0])
    assert match is not None, lines[0]
    assert match.group(2) == "GET /caf\\xc3\\xa9\\x22/ HTTP/1.1"
    assert escape("plain") == "plain"


def test_an_exception_is_logged_as_500(log: Path) -> None:
    def broken(env: dict[str, Any], start_response: Any) -> Any:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        serve(broken, environ(), log)
    [line] = log.read_text().splitlines()
    assert '" 500 - "' in line


def test_format_line_is_one_line() -> None:
    line = format_line(environ(REQUEST_METHOD="POST"), "201 CREATED", None, 0.002)
    assert line.endswith("\n") and line.count("\n") == 1
    assert '"POST /mail/account/a@example.com/ HTTP/1.1" 201 - ' in line


def test_writes_go_straight_to_the_descriptor(tmp_path: Path) -> None:
    read, write = os.pipe()
    with os.fdopen(write, "w") as stream:
        AccessLog(app([b"{}"]), stream)(environ(), lambda *a: None)
        # Nothing buffered in Python: the line is in the pipe before any flush.
        data = os.read(read, 4096)
    os.close(read)
    assert data.count(b"\n") == 1 and b'"GET /mail/account/a@example.com/ HTTP/1.1" 200 2' in data


def test_query_values_are_masked_but_paging(log: Path) -> None:
    query = f"domain=example.com&page=2&page_size=10&token={TOKEN}&{TOKEN}"
    _body, [line] = serve(app([b"{}"]), environ(PATH_INFO="/mail/account/",
                                                QUERY_STRING=query), log)
    assert TOKEN not in line
    assert '"GET /mail/account/?domain=example.com&page=2&page_size=10&token=***&*** ' \
           'HTTP/1.1"' in line


def test_json_lines_carry_the_request_id(tmp_path: Path) -> None:
    log = tmp_path / "access.json"
    with log.open("a", encoding="utf-8") as stream:
        result = AccessLog(app([b"{}"]), stream, "json")(
            environ(**{"mailgate.request_id": "req-7", "QUERY_STRING": f"token={TOKEN}"}),
            lambda *a: None)
        b"".join(result)
    [line] = log.read_text().splitlines()
    data = json.loads(line)
    assert data["logger"] == "gateway.access" and data["request_id"] == "req-7"
    assert data["status"] == 200 and data["bytes"] == 2 and data["client"] == "127.0.0.1"
    assert data["request"] == "GET /mail/account/a@example.com/?token=*** HTTP/1.1"
    assert TOKEN not in line and data["duration_ms"] >= 0
