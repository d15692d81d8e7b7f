"""gateway.api.hot: the two hot reads answer exactly as the app does, and only
the ordinary cases are answered in front of Flask.

Each request goes once through the whole app (the hot layer in front) and once
straight to the Flask app behind it; status, body and headers must be the same
(the request id and the date apart). A counter between the hot layer and the
Flask app counts what reached Flask, so each case also shows which path
answered it.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import Client as WsgiClient

from gateway.accesslog import AccessLog
from gateway.app import create_app
from gateway.proxies import parse_networks
from gateway.services import current
from gateway.settings import Settings
from gateway.slapd import free_port

from tests.support.api import Client
from tests.support.constants import ADMIN_TOKEN
from tests.test_metrics import scrape, value

ACCOUNT_RULE = "/mail/account/<path:account_id>/"
VOLATILE = {"X-Request-ID", "Date"}


class Paths:
    """The app with its hot layer (``hot``) and the Flask app behind it (``plain``)."""

    def __init__(self, app: Flask) -> None:
        layer = app.wsgi_app
        behind = layer.app  # type: ignore[attr-defined]
        self.reached_flask = 0

        def counted(environ: dict[str, Any], start_response: Any) -> Any:
            self.reached_flask += 1
            return behind(environ, start_response)

        layer.app = counted  # type: ignore[attr-defined]
        self.hot = WsgiClient(app)
        self.plain = WsgiClient(behind)

    def both(self, path: str, token: str | None = ADMIN_TOKEN, method: str = "GET",
             headers: dict[str, str] | None = None) -> tuple[Any, bool]:
        """(the answer, whether the hot layer answered it) after checking that both
        paths answer the same."""
        sent = dict(headers or {})
        if token is not None:
            sent.setdefault("Authorization", f"Bearer {token}")
        before = self.reached_flask
        hot = self.hot.open(path, method=method, headers=sent)
        answered_in_front = self.reached_flask == before
        plain = self.plain.open(path, method=method, headers=sent)
        assert (hot.status, hot.get_data()) == (plain.status, plain.get_data()), path
        assert _headers(hot) == _headers(plain), path
        return hot, answered_in_front


def _headers(response: Any) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k not in VOLATILE}


@pytest.fixture
def paths(app: Flask, client: Client) -> Paths:
    for name in ("alice", "bob"):
        assert client.post("/mail/account/", json={
            "name": name, "domain": "example.com", "password": f"pw-{name}",
            "spoofing_whitelist": "example.org"}).status_code == 201
    assert client.post("/mail/account/", json={
        "name": "carol", "domain": "example.net", "password": "pw-carol"}).status_code == 201
    assert client.post("/mail/alias/", json={
        "name": "team", "domain": "example.com",
        "to": "alice@example.com,bob@example.com"}).status_code == 201
    return Paths(app)


def test_found_entries_are_answered_in_front_of_flask(paths: Paths) -> None:
    answer, hot = paths.both("/mail/account/alice@example.com/")
    assert hot and answer.status_code == 200
    body = answer.get_json()
    assert body["id"] == "alice@example.com"
    assert body["spoofing_whitelist"] == "example.org"
    assert body["password"].startswith("$6$")
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.headers["Strict-Transport-Security"] and answer.headers["Cache-Control"]
    assert answer.headers["X-Request-ID"]

    answer, hot = paths.both("/mail/alias/team@example.com/")
    assert hot and answer.get_json()["to"] == "alice@example.com,bob@example.com"

    # Any case, and the two other ways to present the token.
    answer, hot = paths.both("/mail/account/ALICE@Example.COM/")
    assert hot and answer.get_json()["id"] == "alice@example.com"
    basic = base64.b64encode(f"anyone:{ADMIN_TOKEN}".encode()).decode()
    for authorization in (ADMIN_TOKEN, f"Basic {basic}"):
        answer, hot = paths.both("/mail/account/bob@example.com/", token=None,
                                 headers={"Authorization": authorization})
        assert hot and answer.status_code == 200


def test_missing_entries_are_answered_in_front_as_the_app_answers(paths: Paths) -> None:
    for path in ("/mail/account/nobody@example.com/", "/mail/alias/nobody@example.com/",
                 "/mail/alias/alice@example.com/", "/mail/account/team@example.com/"):
        answer, hot = paths.both(path)
        assert hot and answer.status_code == 404, path
        assert answer.get_json()["message"]


def test_everything_else_goes_to_the_app(paths: Paths) -> None:
    cases: list[tuple[str, str | None, str, dict[str, str], int]] = [
        ("/mail/account/alice@example.com/", None, "GET", {}, 401),
        ("/mail/account/alice@example.com/", "not-the-token", "GET", {}, 401),
        ("/mail/account/alice@example.com/", None, "GET", {"Authorization": "Bearer"}, 401),
        ("/mail/account/not-an-address/", ADMIN_TOKEN, "GET", {}, 404),
        ("/mail/account/a@b@example.com/", ADMIN_TOKEN, "GET", {}, 404),
        ("/mail/account/alice@example.com/x/", ADMIN_TOKEN, "GET", {}, 404),
        ("/mail/account//", ADMIN_TOKEN, "GET", {}, 404),
        ("/mail/account/alice@example.com", ADMIN_TOKEN, "GET", {}, 308),
        ("/mail/account/alice@example.com/", ADMIN_TOKEN, "HEAD", {}, 200),
        ("/mail/account/alice@example.com/", ADMIN_TOKEN, "OPTIONS", {}, 200),
        ("/mail/account/", ADMIN_TOKEN, "GET", {}, 200),
        ("/mail/domain/example.com/", ADMIN_TOKEN, "GET", {}, 200),
        ("/mail/nothing/example.com/", ADMIN_TOKEN, "GET", {}, 404),
        ("/mail/account/jos\u00e9@example.com/", ADMIN_TOKEN, "GET", {}, 404),
    ]
    for path, token, method, headers, status in cases:
        answer, hot = paths.both(path, token=token, method=method, headers=headers)
        assert not hot, (path, method)
        assert answer.status_code == status, (path, method, answer.status_code)


def test_scoped_tokens_read_only_their_domains(app: Flask, paths: Paths) -> None:
    tokens = current(app).tokens
    _info, scoped = tokens.create(["example.com"], read_only=True)
    answer, hot = paths.both("/mail/account/alice@example.com/", token=scoped)
    assert hot and answer.status_code == 200
    answer, hot = paths.both("/mail/account/carol@example.net/", token=scoped)
    assert not hot and answer.status_code == 403   # the app says why
    answer, hot = paths.both("/mail/account/nobody@example.net/", token=scoped)
    assert not hot and answer.status_code == 403   # no telling what exists elsewhere
    tokens.revoke(_info.id)
    answer, hot = paths.both("/mail/account/alice@example.com/", token=scoped)
    assert not hot and answer.status_code == 401


def test_a_given_request_id_is_kept_on_both_paths(paths: Paths) -> None:
    for path in ("/mail/account/alice@example.com/", "/mail/account/not-an-address/"):
        answer = paths.hot.get(path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}",
                                              "X-Request-ID": "panel-42"})
        assert answer.headers["X-Request-ID"] == "panel-42"


def test_the_hot_reads_are_counted_under_the_app_route(app: Flask, paths: Paths) -> None:
    client = Client(app)
    before = scrape(client)
    for _ in range(3):
        assert paths.both("/mail/account/alice@example.com/")[0].status_code == 200
    after = scrape(client)
    total = "mailgate_http_requests_total"
    # Each case ran on both paths: 3 in front of Flask and 3 in it, under one label.
    grew = (value(after, total, route=ACCOUNT_RULE, method="GET", status="200")
            - value(before, total, route=ACCOUNT_RULE, method="GET", status="200"))
    assert grew == 6
    count = "mailgate_http_request_duration_seconds_count"
    assert (value(after, count, route=ACCOUNT_RULE, method="GET")
            - value(before, count, route=ACCOUNT_RULE, method="GET")) == 6


@pytest.fixture
def unreachable_app(settings: Settings) -> Iterator[Flask]:
    down = dataclasses.replace(settings, ldap_url=f"ldap://127.0.0.1:{free_port()}",
                               ldap_timeout=1.0)
    application = create_app(down)
    yield application
    current(application).directory.close()


def test_an_unreachable_directory_is_a_503_on_both_paths(unreachable_app: Flask,
                                                          tmp_path: Path) -> None:
    paths = Paths(unreachable_app)
    answer, hot = paths.both("/mail/account/alice@example.com/")
    assert hot and answer.status_code == 503
    assert answer.headers["Retry-After"]
    assert "unreachable" in answer.get_json()["message"].lower()


def test_behind_a_proxy_the_access_log_names_the_client(settings: Settings,
                                                        tmp_path: Path) -> None:
    proxied = dataclasses.replace(settings, trusted_proxies=parse_networks("127.0.0.1"))
    application = create_app(proxied)
    try:
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        assert Client(application).post("/mail/account/", json={
            "name": "dave", "domain": "example.com", "password": "pw"}).status_code == 201
        with (tmp_path / "access.log").open("w") as stream:
            served = WsgiClient(AccessLog(application.wsgi_app, stream, "text"))
            answer = served.get("/mail/account/dave@example.com/",
                                headers={**admin, "X-Forwarded-For": "203.0.113.9"},
                                environ_base={"REMOTE_ADDR": "127.0.0.1"})
            assert answer.status_code == 200
            answer.close()   # the line is written when the answer is done
        line = (tmp_path / "access.log").read_text()
        assert ': 203.0.113.9 "GET /mail/account/dave@example.com/ HTTP/1.1" 200 ' in line, line
        assert answer.headers["X-Request-ID"] in line
    finally:
        current(application).directory.close()
