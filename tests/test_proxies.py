"""MAILGATE_TRUSTED_PROXIES: the real client behind a reverse proxy, and only there."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.app import create_app
from gateway.proxies import TrustedProxies, parse_networks
from gateway.services import current
from gateway.settings import ConfigError, Settings


def _seen(trusted: str, environ: dict[str, str]) -> dict[str, Any]:
    captured: dict[str, Any] = {}

    def app(env: dict[str, Any], start_response: Any) -> list[bytes]:
        captured.update(env)
        return []

    TrustedProxies(app, parse_networks(trusted))(dict(environ), lambda *a: None)
    return captured


def test_forwarded_headers_are_believed_only_from_a_trusted_proxy() -> None:
    through = _seen("127.0.0.1 10.0.0.0/8", {
        "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http",
        "HTTP_X_FORWARDED_FOR": "198.51.100.1, 203.0.113.7, 10.1.2.3",
        "HTTP_X_FORWARDED_PROTO": "https"})
    # The right-most address that is not a trusted proxy: the client the
    # first trusted proxy saw (198.51.100.1 is what the client claimed).
    assert through["REMOTE_ADDR"] == "203.0.113.7"
    assert through["wsgi.url_scheme"] == "https"
    direct = _seen("127.0.0.1", {"REMOTE_ADDR": "192.0.2.9", "wsgi.url_scheme": "https",
                                 "HTTP_X_FORWARDED_FOR": "203.0.113.7",
                                 "HTTP_X_FORWARDED_PROTO": "http"})
    assert direct["REMOTE_ADDR"] == "192.0.2.9" and direct["wsgi.url_scheme"] == "https"
    forged = _seen("127.0.0.1", {"REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "https",
                                 "HTTP_X_FORWARDED_FOR": "not-an-address"})
    assert forged["REMOTE_ADDR"] == "127.0.0.1"


def test_the_setting_names_a_bad_entry() -> None:
    assert Settings.from_env({"MAILGATE_TRUSTED_PROXIES": "10.0.0.0/8, ::1"}).trusted_proxies \
        == parse_networks("10.0.0.0/8 ::1")
    with pytest.raises(ConfigError, match=r"MAILGATE_TRUSTED_PROXIES.*bogus"):
        Settings.from_env({"MAILGATE_TRUSTED_PROXIES": "10.0.0.0/8 bogus"})


def test_the_limiter_sees_the_client_behind_the_proxy(settings: Settings) -> None:
    app = create_app(settings.replace(auth_fail_limit=2,
                                      trusted_proxies=parse_networks("127.0.0.1")))
    client = app.test_client()
    proxy = {"REMOTE_ADDR": "127.0.0.1"}
    try:
        for _ in range(2):
            assert client.get("/mail/account/", environ_base=proxy, headers={
                "X-Forwarded-For": "203.0.113.7"}).status_code == 401
        assert client.get("/mail/account/", environ_base=proxy, headers={
            "X-Forwarded-For": "203.0.113.7"}).status_code == 429
        # Another client behind the same proxy is not blocked.
        assert client.get("/mail/account/", environ_base=proxy, headers={
            "X-Forwarded-For": "203.0.113.8"}).status_code == 401
    finally:
        current(app).directory.close()
