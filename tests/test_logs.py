"""One log format, and the request id on every line a request causes."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from collections.abc import Iterator

import pytest

from gateway import logs
from gateway.app import create_app
from gateway.services import current
from gateway.settings import ConfigError, Settings

from tests.support.api import Client
from tests.support.slapd import running_slapd


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Everything logged, as MAILGATE_LOG_FORMAT=json writes it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.formatter("json"))
    handler.addFilter(logs._RequestId())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_the_request_id_is_echoed_and_on_every_line(client: Client,
                                                    captured: io.StringIO) -> None:
    created = client.post("/mail/account/", headers={"X-Request-ID": "abc-123"},
                          json={"name": "logged", "domain": "example.com", "password": "pw"})
    assert created.status_code == 201
    assert created.headers["X-Request-ID"] == "abc-123"
    mine = [line for line in lines(captured) if "logged@example.com" in str(line["message"])]
    assert mine and all(line["request_id"] == "abc-123" for line in mine)
    # A header that is no reasonable id is replaced, not echoed.
    other = client.get("/mail/account/", headers={"X-Request-ID": "bad id; with spaces"})
    assert other.headers["X-Request-ID"] != "bad id; with spaces"
    assert len(other.headers["X-Request-ID"]) == 32
    # Outside a request, no id.
    logging.getLogger("gateway.test").info("outside")
    assert "request_id" not in lines(captured)[-1]


def test_an_ldap_error_line_carries_the_request_id(tmp_path: object,
                                                   captured: io.StringIO) -> None:
    with running_slapd(tmp_path / "slapd") as server:  # type: ignore[operator]
        app = create_app(Settings(ldap_url=server.url, ldap_base_dn=server.base_dn,
                                  ldap_password=server.password("gateway"),
                                  admin_token="t" * 32, ldap_timeout=2.0))
        client = Client(app, token="t" * 32)
        try:
            assert client.get("/mail/account/").status_code == 200
            with server.stopped():
                down = client.get("/mail/account/", headers={"X-Request-ID": "outage-1"})
                assert down.status_code == 503
        finally:
            current(app).directory.close()
    ldap_lines = [line for line in lines(captured) if str(line["logger"]).startswith(
        "gateway.directory")]
    assert ldap_lines, lines(captured)
    assert ldap_lines[0]["request_id"] == "outage-1"


def test_text_and_json_formats() -> None:
    record = logging.makeLogRecord({"name": "gateway.x", "levelname": "WARNING",
                                    "msg": "hello %s", "args": ("world",),
                                    "request_id": "r1", "status": 201})
    text = logs.formatter("text").format(record)
    assert text.endswith(" WARNING gateway.x [req r1]: hello world")
    assert text[:4].isdigit() and "T" in text[:20] and text.split()[0].endswith("Z")
    data = json.loads(logs.formatter("json").format(record))
    assert data["message"] == "hello world" and data["request_id"] == "r1"
    assert data["status"] == 201 and data["level"] == "WARNING"
    assert Settings.from_env({"MAILGATE_LOG_FORMAT": "JSON"}).log_format == "json"
    with pytest.raises(ConfigError, match="MAILGATE_LOG_FORMAT"):
        Settings.from_env({"MAILGATE_LOG_FORMAT": "xml"})


def test_timestamps_match_the_calendar_across_seconds() -> None:
    """The per-second cache of the date part never shows a stale second."""
    def expected(when: float) -> str:
        stamp = dt.datetime.fromtimestamp(when, dt.UTC)
        return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"

    # Same second twice, the next second, back to an earlier one, a new day.
    for when in (1764549912.125, 1764549912.5, 1764549913.004, 1764549912.9,
                 1764633599.999, 1764633599.9999996, 1764633600.0, 0.25):
        assert logs.timestamp(when) == expected(when)
    assert logs.timestamp(1764549912.125) == "2025-12-01T00:45:12.125Z"
