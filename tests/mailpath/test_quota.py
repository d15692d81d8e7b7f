"""Mailbox quotas on the mail path: Dovecot enforces them, Postfix asks it at RCPT.

Real slapd, Postfix, Dovecot (quota plugin, ``quota-status -p postfix``, the
doveadm HTTP API) as ``render-config`` writes them (mailstack.py). The quota
is set through the API (``POST /mail/account/{id}/set_quota/``) and read by
Dovecot's LDAP userdb.
Every address here is new, so its maildir starts empty (the maildirs of the
session's other tests stay on disk).
"""

from __future__ import annotations

import re
import time
import uuid

import pytest

from gateway.dovecot import Dovecot
from gateway.errors import DovecotUnavailable, NotFound

from .mailstack import MailStack
from .test_mail_path import api, create_account, subject
from tests.support.api import LiveGateway
from tests.support.wait import wait_until

pytestmark = pytest.mark.timeout(180)

PASSWORD = "quota pw"
QUOTA = 10_000            # bytes
PADDING = 8               # lines of 80 bytes: messages of about 1 kB as delivered
MAX_MESSAGES = 40         # the filling loop's bound (10 kB / 1 kB: about 11)


def new_address(domain: str = "quota.example") -> str:
    return f"q-{uuid.uuid4().hex[:10]}@{domain}"


def dovecot(stack: MailStack, key: str | None = None, timeout: float = 5.0) -> Dovecot:
    return Dovecot(stack.doveadm_url, key or stack.doveadm_key, timeout=timeout)


def set_quota(gw: LiveGateway, address: str, quota: int) -> None:
    assert api(gw, "POST", f"/mail/account/{address}/set_quota/",
               json={"quota": quota}).json()["quota"] == quota


def vsizes(stack: MailStack, address: str) -> list[int]:
    """The virtual size (",W=") Dovecot wrote into each maildir file name."""
    maildir = stack.maildir(address)
    names = [p.name for sub in ("new", "cur") if (maildir / sub).is_dir()
             for p in (maildir / sub).iterdir()]
    found = [re.search(r",W=(\d+)", name) for name in names]
    assert all(found), names
    return [int(m.group(1)) for m in found if m]


def maillog_since(stack: MailStack, offset: int) -> str:
    with open(stack.maillog, "rb") as log:
        log.seek(offset)
        return log.read().decode("utf-8", "replace")


def deliver(stack: MailStack, reader: Dovecot, address: str, padding: int = PADDING) -> str:
    """One message over port 25, waited for until Dovecot counts it."""
    before = reader.usage(address).used_messages
    text = subject()
    result = stack.send25("sender@outside.test", [address], subject=text, padding=padding)
    assert result.sent, str(result)
    wait_until(lambda: reader.usage(address).used_messages == before + 1,
               f"{text} counted by Dovecot (maillog: {stack.maillog})", timeout=20,
               interval=0.05)
    return text


def test_a_full_mailbox_is_refused_at_rcpt_and_a_raised_quota_lets_the_next_message_in(
        mail_stack: MailStack, live_gateway: LiveGateway) -> None:
    """Run with -s for the time from the quota change to the next accepted message."""
    address = new_address()
    create_account(live_gateway, address, PASSWORD)
    set_quota(live_gateway, address, QUOTA)
    reader = dovecot(mail_stack)
    log_start = mail_stack.maillog.stat().st_size
    assert mail_stack.send25("sender@outside.test", [address], padding=PADDING).sent
    wait_until(lambda: reader.usage(address).used_messages == 1, "first message", timeout=20)
    delivered = 1
    # Fill it: every message starts under the limit, so Dovecot takes it (the
    # one that crosses the limit within quota_grace, 10 %) ...
    while reader.usage(address).used_bytes < QUOTA:
        assert delivered < MAX_MESSAGES, reader.usage(address)
        deliver(mail_stack, reader, address)
        delivered += 1
    full = reader.usage(address)
    assert QUOTA <= full.used_bytes <= QUOTA * 1.1, full
    assert full.used_messages == delivered
    # ... and then the next one is refused in the SMTP dialogue, at RCPT.
    refused = mail_stack.send25("sender@outside.test", [address], padding=PADDING)
    assert (refused.stage, refused.code) == ("rcpt", 552), str(refused)
    assert refused.text.startswith("5.2.2") and "Mailbox is full" in refused.text, str(refused)
    # Nothing was accepted for it, so nothing is queued, deferred or bounced.
    log = maillog_since(mail_stack, log_start)
    mine = [line for line in log.splitlines() if f"to=<{address}>" in line
            and " status=" in line]
    assert all("status=sent" in line for line in mine), mine
    assert len(mine) == delivered and "non-delivery notification" not in log, log
    assert "NOQUEUE: reject: RCPT" in log and "552 5.2.2" in log
    assert reader.usage(address) == full
    # The owner still logs in (and sees the quota over IMAP: imap_quota).
    assert mail_stack.imap_login(address, PASSWORD)
    with mail_stack.imap_session(address, PASSWORD) as session:
        typ, data = session.getquotaroot("INBOX")
        assert typ == "OK", data
        quota_line = b" ".join(d for d in data[1] if isinstance(d, bytes))
        assert b"STORAGE" in quota_line and f"{-(-QUOTA // 1024)})".encode() in quota_line, data

    # Raising the quota: the very next message is accepted (no cache on the way).
    t0 = time.perf_counter()
    set_quota(live_gateway, address, QUOTA * 10)
    t1 = time.perf_counter()
    attempts, accepted = 0, None
    deadline = t1 + 30
    while accepted is None and time.perf_counter() < deadline:
        attempts += 1
        text = subject()
        if mail_stack.send25("sender@outside.test", [address], subject=text,
                             padding=PADDING).sent:
            accepted = text
    t2 = time.perf_counter()
    assert accepted is not None, "no message accepted within 30 s of raising the quota"
    assert attempts == 1, f"{attempts} attempts before one was accepted"
    mail_stack.wait_for_mail(address, PASSWORD, accepted)
    print(f"\nquota raised: set_quota {t1 - t0:.4f} s, then the next message accepted after "
          f"{t2 - t1:.4f} s ({attempts} attempt); quota change to accepted {t2 - t0:.4f} s")
    log = maillog_since(mail_stack, log_start)
    assert "non-delivery notification" not in log and "status=bounced" not in log, log


def test_usage_from_doveadm_counts_the_delivered_messages(
        mail_stack: MailStack, live_gateway: LiveGateway) -> None:
    with_quota, without = new_address("usage.example"), new_address("usage.example")
    create_account(live_gateway, with_quota, PASSWORD)
    create_account(live_gateway, without, PASSWORD)
    set_quota(live_gateway, with_quota, 50_000)
    reader = dovecot(mail_stack)
    assert mail_stack.send25("sender@outside.test", [with_quota], padding=3).sent
    wait_until(lambda: reader.usage(with_quota).used_messages == 1, "first message",
               timeout=20)
    for padding in (10, 20):
        deliver(mail_stack, reader, with_quota, padding)
    assert mail_stack.send25("sender@outside.test", [without], padding=5).sent
    wait_until(lambda: reader.usage(without).used_messages == 1, "message to the other",
               timeout=20)

    usage = reader.usage(with_quota)
    sizes = vsizes(mail_stack, with_quota)
    assert usage.used_messages == 3 == len(sizes)
    assert usage.used_bytes == sum(sizes)
    assert usage.limit_bytes == -(-50_000 // 1024) * 1024   # Dovecot reports kilobytes
    other = reader.usage(without)
    assert (other.used_messages, other.used_bytes) == (1, sum(vsizes(mail_stack, without)))
    assert other.limit_bytes is None                          # no quota: no limit

    ghost = new_address("usage.example")
    total = reader.domain_usage("usage.example", [with_quota, without, ghost])
    assert (total.mailboxes, total.used_messages) == (2, 4)
    assert total.used_bytes == usage.used_bytes + other.used_bytes
    assert total.unknown == (ghost,)
    with pytest.raises(NotFound, match="Dovecot does not know"):
        reader.usage(ghost)


def test_wrong_key_or_dovecot_stopped_is_dovecot_unavailable(
        mail_stack: MailStack, live_gateway: LiveGateway) -> None:
    address = new_address("usage.example")
    create_account(live_gateway, address, PASSWORD)
    assert dovecot(mail_stack).usage(address).used_messages == 0
    with pytest.raises(DovecotUnavailable, match="refused the API key") as wrong:
        dovecot(mail_stack, key="not-" + mail_stack.doveadm_key).usage(address)
    assert mail_stack.doveadm_key not in str(wrong.value)
    assert "directory" not in str(wrong.value).lower()
    with mail_stack.dovecot_stopped():
        with pytest.raises(DovecotUnavailable, match=r"^Dovecot.*connection refused") as down:
            dovecot(mail_stack).usage(address)
        assert down.value.status == 503 and down.value.headers() == {"Retry-After": "5"}
        # quota-status down: Postfix defers the recipient (451), never accepts unchecked.
        deferred = mail_stack.send25("sender@outside.test", [address])
        assert (deferred.stage, deferred.code) == ("rcpt", 451), str(deferred)
        assert "quota check unavailable" in deferred.text, str(deferred)
    assert dovecot(mail_stack).usage(address).used_messages == 0

