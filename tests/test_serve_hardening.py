"""Issue 10, items 9 and 10, against a real ``mailgate serve`` (granian, TLS):
no token in any line the process writes, and the security headers."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from tests.test_serve import Served


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[Served]:
    server = Served(tmp_path / "var")
    try:
        yield server
    finally:
        server.stop()


def _forms(token: str) -> list[dict[str, object]]:
    """Every way a client may send (or mis-send) the token."""
    def basic(user: str, password: str) -> dict[str, str]:
        raw = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {raw}"}

    return [
        {"headers": {"Authorization": f"Bearer {token}"}},
        {"headers": basic(token, "")},             # curl -u TOKEN:
        {"headers": basic("", token)},             # curl -u :TOKEN
        {"headers": basic("ops", token)},
        {"headers": basic(token, token)},
        {"headers": {"Authorization": f"Basic {base64.b64encode(token.encode()).decode()}"}},
        {"headers": {"Authorization": token}},
        {"headers": {"Authorization": f"Token {token}"}},
        {"headers": {"X-Api-Key": token}},
        {"params": {"token": token}},
        {"params": {"access_token": token, "page": "1"}},
        {"params": {"domain": "example.com", "api_key": token}},
    ]


def _needles(token: str) -> list[str]:
    found = [token, quote(token, safe=""), token[:16], token[-16:]]
    for raw in (token, f"{token}:", f":{token}", f"ops:{token}", f"{token}:{token}"):
        encoded = base64.b64encode(raw.encode()).decode()
        found += [encoded, encoded.rstrip("=")]
    # Any base64 alignment of the token inside a longer value.
    for prefix in ("", "x", "xx"):
        encoded = base64.b64encode((prefix + token).encode()).decode()
        skip = {"": 0, "x": 2, "xx": 3}[prefix]
        found.append(encoded[skip:skip + 16])
    return found


def test_no_token_in_any_log_line_and_security_headers(serving: Served) -> None:
    served = serving
    served.start()
    token = (served.data / "admin-token").read_text().strip()
    assert len(token) >= 24
    ca = str(served.data / "tls" / "cert.pem")
    wrong = "mgt_0123456789abcdef_" + "W" * 43
    answers: list[requests.Response] = []
    for secret in (token, wrong):
        for form in _forms(secret):
            for path in ("/mail/account/", "/mail/account/nobody@example.com/", "/sync/status",
                         "/healthz", "/nowhere"):
                answers.append(requests.get(served.url + path, verify=ca, timeout=30,
                                            **form))  # type: ignore[arg-type]
    assert {r.status_code for r in answers} >= {200, 401, 404}
    assert any(r.status_code == 200 and r.request.path_url.startswith("/mail/account/")
               for r in answers)

    # item 10: on every answer, whatever its status.
    answers.append(served.get("/swagger.json"))
    answers.append(served.get("/docs/"))
    answers.append(served.get("/mail/account/", method="PATCH"))
    for response in answers:
        headers = response.headers
        where = f"{response.request.method} {response.request.path_url} {response.status_code}"
        assert headers.get("Strict-Transport-Security", "").startswith("max-age=31536000"), where
        assert headers.get("X-Content-Type-Options") == "nosniff", where
        assert "no-store" in headers.get("Cache-Control", ""), where
        assert "gunicorn" not in headers.get("Server", "").lower(), where

    served.stop()
    output = served.output
    assert "GET /mail/account/" in output, "the access log is not where the test looks"
    for secret in (token, wrong):
        for needle in _needles(secret):
            assert needle not in output, f"a form of a token is in the log: {needle}"
    written = list(Path(served.data).rglob("*.log"))
    for path in written:
        text = path.read_text(errors="replace")
        for needle in _needles(token):
            assert needle not in text, path
