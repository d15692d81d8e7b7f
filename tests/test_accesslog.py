"""The cheaper access logger writes exactly gunicorn's lines."""

from __future__ import annotations

import base64
import datetime
import time
from types import SimpleNamespace
from typing import Any

import pytest
from gunicorn import glogging
from gunicorn.config import Config

from gateway.accesslog import DEFAULT_FORMAT, AccessLogger


@pytest.fixture(autouse=True)
def one_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both loggers format the same moment (no flake at a second's turn)."""
    monkeypatch.setattr(time, "strftime", lambda fmt, *args: "[24/Nov/2026:03:57:14 +0000]")


def line(logger: Any, environ: dict[str, Any], status: str, sent: int | None) -> str:
    resp = SimpleNamespace(status=status, sent=sent,
                           headers=[("Content-Type", "application/json")])
    req = SimpleNamespace(headers=[("HOST", "x"), ("USER-AGENT", "curl/8")])
    atoms = logger.atoms(resp, req, environ, datetime.timedelta(microseconds=1234))
    return str(logger.cfg.access_log_format % glogging.SafeAtoms(atoms))


@pytest.mark.parametrize("auth", [None, "Bearer secret", "Basic " + base64.b64encode(
    b"ops:token").decode()])
@pytest.mark.parametrize("sent", [None, 0, 262])
def test_the_same_line_as_gunicorn(auth: str | None, sent: int | None) -> None:
    """The same line as gunicorn's, except for the secrets: no Basic user name
    and no query value other than domain, page and page_size."""
    config = Config()
    assert config.access_log_format == DEFAULT_FORMAT
    environ = {"REMOTE_ADDR": "127.0.0.1", "REQUEST_METHOD": "GET",
               "RAW_URI": '/mail/account/a"b@example.com/?page=2&x=1&token=s3cr3t',
               "SERVER_PROTOCOL": "HTTP/1.1",
               "PATH_INFO": "/mail/account/", "QUERY_STRING": "page=2&x=1&token=s3cr3t",
               "HTTP_USER_AGENT": 'curl "8"'}
    if auth:
        environ["HTTP_AUTHORIZATION"] = auth
    ours, theirs = AccessLogger(config), glogging.Logger(config)
    expected = dict(environ, RAW_URI='/mail/account/a"b@example.com/?page=2&x=***&token=***')
    expected.pop("HTTP_AUTHORIZATION", None)
    written = line(ours, environ, "200 OK", sent)
    assert written == line(theirs, expected, "200 OK", sent)
    assert "s3cr3t" not in written and "token" not in written.replace("token=***", "")


def test_other_formats_keep_every_atom() -> None:
    config = Config()
    config.set("access_log_format", '%(h)s %({user-agent}i)s %(D)s')
    environ = {"REMOTE_ADDR": "::1", "REQUEST_METHOD": "GET", "RAW_URI": "/",
               "SERVER_PROTOCOL": "HTTP/1.1"}
    assert line(AccessLogger(config), environ, "204 No Content", None) == \
        line(glogging.Logger(config), environ, "204 No Content", None)
