"""``GET /mail/account/{id}/usage/`` and ``GET /mail/domain/{name}/usage/`` over
real HTTPS, read from the real Dovecot of the mail stack (its doveadm HTTP API),
and the quota set through ``POST .../set_quota/`` as Dovecot applies it."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.app import create_app
from gateway.services import current
from gateway.settings import Settings

from .mailstack import MailStack
from .test_quota import deliver, dovecot
from tests.support.api import LiveGateway, serving

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def gateway(settings: Settings, mail_stack: MailStack, tmp_path: Path) -> Iterator[LiveGateway]:
    """The gateway with MAILGATE_DOVECOT_URL and its key set, served over HTTPS."""
    with_dovecot = dataclasses.replace(settings, dovecot_url=mail_stack.doveadm_url,
                                       dovecot_api_key=mail_stack.doveadm_key)
    app = create_app(with_dovecot)
    try:
        with serving(app, tmp_path / "tls") as live:
            yield live
    finally:
        current(app).directory.close()


def test_usage_of_an_account_and_of_its_domain(gateway: LiveGateway,
                                               mail_stack: MailStack) -> None:
    domain = f"u{uuid.uuid4().hex[:8]}.example"
    made = gateway("POST", "/mail/domain/", json={"name": domain, "max_quota": 10**9,
                                                  "default_quota": 10**8})
    assert made.status_code == 201, made.text
    addresses = [f"a@{domain}", f"b@{domain}"]
    for address in addresses:
        name = address.split("@")[0]
        created = gateway("POST", "/mail/account/", json={"name": name, "domain": domain,
                                                           "password": "usage pw"})
        assert created.status_code == 201, created.text
        assert created.json()["quota"] == 10**8
    set_quota = gateway("POST", f"/mail/account/{addresses[0]}/set_quota/",
                        json={"quota": 2 * 10**8})
    assert set_quota.status_code == 200, set_quota.text
    reader = dovecot(mail_stack)
    deliver(mail_stack, reader, addresses[0])
    deliver(mail_stack, reader, addresses[0])
    deliver(mail_stack, reader, addresses[1])
    truth = [reader.usage(a) for a in addresses]
    # Dovecot applies the quota the API set (it reports whole kilobytes).
    assert truth[0].limit_bytes is not None
    assert abs(truth[0].limit_bytes - 2 * 10**8) < 1024

    one = gateway("GET", f"/mail/account/{addresses[0]}/usage/")
    assert one.status_code == 200, one.text
    assert one.json() == {"quota": 2 * 10**8, "used_bytes": truth[0].used_bytes,
                          "used_messages": 2,
                          "percent": round(100 * truth[0].used_bytes / (2 * 10**8), 1)}
    total = gateway("GET", f"/mail/domain/{domain}/usage/")
    assert total.status_code == 200, total.text
    assert total.json() == {
        "name": domain, "accounts": 2, "quota_allocated": 3 * 10**8,
        "used_bytes": truth[0].used_bytes + truth[1].used_bytes, "used_messages": 3,
        "percent": round(100 * (truth[0].used_bytes + truth[1].used_bytes) / 10**9, 1)}
    assert gateway("GET", f"/mail/account/nobody@{domain}/usage/").status_code == 404


def test_usage_without_dovecot_is_a_503_naming_dovecot(live_gateway: LiveGateway) -> None:
    created = live_gateway("POST", "/mail/account/", json={
        "name": "a", "domain": "nodovecot.example", "password": "pw"})
    assert created.status_code == 201, created.text
    for path in ("/mail/account/a@nodovecot.example/usage/",
                 "/mail/domain/nodovecot.example/usage/"):
        answer = live_gateway("GET", path)
        assert answer.status_code == 503, answer.text
        assert "Dovecot" in answer.json()["message"]
        assert "LDAP" not in answer.json()["message"]
    # The account's own read never asks Dovecot.
    assert live_gateway("GET", "/mail/account/a@nodovecot.example/").status_code == 200
