"""Fetching over real HTTPS (trustme CA): TLS, conditional requests, limits, secrets."""

from __future__ import annotations

import json
import logging
import time

import pytest

from gateway.settings import ConfigError, Settings
from gateway.sync.fetch import Fetcher, FetchError, Validators, redact_url

from tests.support.httpsserver import DocServer
from tests.support.sync import MakeRunner, spec_document


def fetcher(settings: Settings, docs: DocServer, **changes: object) -> Fetcher:
    return Fetcher(settings.replace(json_ca_file=docs.ca_file, **changes))


def test_tls_is_verified_against_the_configured_ca(
        settings: Settings, docs: DocServer, monkeypatch: pytest.MonkeyPatch) -> None:
    url = docs.serve("/mail.json", spec_document())
    # requests would let this variable override Session.verify; the fetcher
    # passes verify= on every request, so the configured CA file still counts.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    assert json.loads(fetcher(settings, docs).fetch(url).body or b"") == spec_document()
    with pytest.raises(FetchError, match="certificate verification failed"):
        Fetcher(settings).fetch(url)     # system CAs do not know the test CA


def test_etag_and_last_modified_make_unchanged_documents_cheap(
        settings: Settings, docs: DocServer) -> None:
    url = docs.serve("/e.json", spec_document(), etag='"v1"')
    f = fetcher(settings, docs)
    first = f.fetch(url)
    assert first.validators.etag == '"v1"' and first.body
    again = f.fetch(url, first.validators)
    assert again.unchanged and again.body is None
    assert docs.seen[-1].headers["If-None-Match"] == '"v1"'

    date = "Wed, 21 Oct 2026 07:28:00 GMT"
    url = docs.serve("/m.json", spec_document(), etag=None, last_modified=date)
    first = f.fetch(url)
    assert f.fetch(url, first.validators).unchanged
    assert docs.seen[-1].headers["If-Modified-Since"] == date

    # No validators at all: the same bytes (SHA-256) also count as unchanged.
    url = docs.serve("/plain.json", spec_document(), etag=None)
    first = f.fetch(url)
    assert f.fetch(url, first.validators).unchanged
    assert not f.fetch(url, Validators(sha256="0" * 64)).unchanged


def test_redirects_are_bounded_and_https_only(settings: Settings, docs: DocServer) -> None:
    target = docs.serve("/real.json", spec_document())
    docs.serve("/hop2", b"", redirect=target)
    docs.serve("/hop1", b"", redirect="/hop2")        # relative Location
    assert fetcher(settings, docs).fetch(docs.url("/hop1")).body
    with pytest.raises(FetchError, match="more than 1 redirects"):
        fetcher(settings, docs, json_max_redirects=1).fetch(docs.url("/hop1"))
    docs.serve("/to-http", b"", redirect=f"http://127.0.0.1:{docs.port}/real.json")
    with pytest.raises(FetchError, match="non-https"):
        fetcher(settings, docs).fetch(docs.url("/to-http"))
    docs.serve("/loop", b"", redirect="/loop")
    with pytest.raises(FetchError, match="redirects"):
        fetcher(settings, docs).fetch(docs.url("/loop"))


@pytest.mark.parametrize("content_length", [True, False])
def test_size_limit_holds_while_streaming(settings: Settings, docs: DocServer,
                                          content_length: bool) -> None:
    url = docs.serve("/big.json", b"[" + b"0," * 200_000 + b"0]", etag=None,
                     content_length=content_length)
    with pytest.raises(FetchError, match="larger than the limit of 65536 bytes"):
        fetcher(settings, docs, json_max_bytes=65536).fetch(url)
    assert fetcher(settings, docs, json_max_bytes=1 << 20).fetch(url).body


def test_timeout(settings: Settings, docs: DocServer) -> None:
    url = docs.serve("/slow.json", spec_document(), delay=1.5)
    with pytest.raises(FetchError, match="timed out"):
        fetcher(settings, docs, json_timeout=0.3).fetch(url)


def test_auth_header_goes_to_the_source_only(settings: Settings, docs: DocServer) -> None:
    secret = "Bearer s3cr3t-t0ken"
    url = docs.serve("/auth.json", spec_document(), require=("Authorization", secret))
    with pytest.raises(FetchError, match="HTTP 401"):
        fetcher(settings, docs).fetch(url)
    f = fetcher(settings, docs, json_auth_header=f"Authorization: {secret}")
    assert f.fetch(url).body
    # A redirect to another origin (localhost is not 127.0.0.1) gets no credentials.
    docs.serve("/elsewhere", b"", redirect=f"https://localhost:{docs.port}/auth.json")
    with pytest.raises(FetchError, match="HTTP 401"):
        f.fetch(docs.url("/elsewhere"))
    assert "Authorization" not in docs.seen[-1].headers


def test_redact_url() -> None:
    assert redact_url("https://user:pw@h.example:8443/a/b.json?token=abc&x=1#frag") == \
        "https://***@h.example:8443/a/b.json?token=***&x=***#***"
    assert redact_url("https://h.example/doc.json") == "https://h.example/doc.json"
    assert "abc" not in redact_url("https://h.example/x?abc")


def test_credentials_never_reach_logs_or_status(
        make_runner: MakeRunner, docs: DocServer, caplog: pytest.LogCaptureFixture) -> None:
    header = "X-Api-Key: k3y-s3cret"
    docs.serve("/priv.json", spec_document(), require=("X-Api-Key", "k3y-s3cret"))
    good = f"https://user:pa55word@127.0.0.1:{docs.port}/priv.json?token=t0ken-s3cret"
    bad = f"https://127.0.0.1:{docs.port}/missing.json?access_token=t0ken-s3cret"
    with caplog.at_level(logging.DEBUG):
        failed = make_runner(good, bad, json_auth_header=header).run()
        applied = make_runner(good, json_auth_header=header).run()
        status = make_runner(good, bad, json_auth_header=header).status()
    assert failed.result == "failed" and "missing.json?access_token=***" in failed.reason
    assert applied.result == "applied", applied.reason
    shown = caplog.text + json.dumps(status) + json.dumps(failed.as_json()) \
        + json.dumps(applied.as_json())
    for secret in ("pa55word", "t0ken-s3cret", "k3y-s3cret"):
        assert secret not in shown
    assert "https://***@127.0.0.1" in json.dumps(status["sources"])


def test_a_trickling_source_is_cut_off_at_the_total_limit(settings: Settings,
                                                          docs: DocServer) -> None:
    """Issue 10, item 4: one byte every 0.4 s never trips the per-read timeout
    (1 s), but the whole fetch ends at MAILGATE_JSON_TOTAL_TIMEOUT (3 s)."""
    body = json.dumps(spec_document()).encode()[:80]      # 80 bytes: 32 s if not cut
    url = docs.serve("/slow.json", body, trickle=0.4)
    f = fetcher(settings, docs, json_timeout=1.0, json_total_timeout=3.0)
    start = time.monotonic()
    with pytest.raises(FetchError, match=r"not complete after 3 s.*TOTAL_TIMEOUT"):
        f.fetch(url)
    took = time.monotonic() - start
    print(f"\ntrickle: cut off after {took:.2f} s")
    assert 3.0 <= took < 3.0 + 1.0 + 1.0, f"the fetch took {took:.1f} s"


def test_the_total_limit_is_configured_and_validated() -> None:
    assert Settings.from_env({}).json_fetch_limit == 300.0
    assert Settings.from_env({"MAILGATE_JSON_TIMEOUT": "5"}).json_fetch_limit == 50.0
    assert Settings.from_env({"MAILGATE_JSON_TOTAL_TIMEOUT": "42"}).json_fetch_limit == 42.0
    for bad in ("0", "-1", "x", "100000"):
        with pytest.raises(ConfigError, match="MAILGATE_JSON_TOTAL_TIMEOUT"):
            Settings.from_env({"MAILGATE_JSON_TOTAL_TIMEOUT": bad})
    with pytest.raises(ConfigError, match="MAILGATE_JSON_TOTAL_TIMEOUT"):
        Settings.from_env({"MAILGATE_JSON_TIMEOUT": "30", "MAILGATE_JSON_TOTAL_TIMEOUT": "10"})
