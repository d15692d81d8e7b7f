"""The cluster-wide LDAP lock against the real slapd."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from gateway.directory import Directory
from gateway.errors import LockLost
from gateway.settings import Settings
from gateway.slapd import ManagedSlapd
from gateway.sync.lock import LdapLock

from tests.support.constants import BASE_DN
from tests.support.slapd import ldap_tool

DN = f"cn=test-lock,ou=gateway,{BASE_DN}"


def expire(slapd: ManagedSlapd) -> None:
    """Move the lock's expiry into the past, as if its holder had stalled."""
    ldap_tool(slapd, "ldapmodify", input=f"dn: {DN}\nchangetype: modify\n"
              "replace: mailgateLockExpires\nmailgateLockExpires: 20000101000000Z\n")


def test_one_holder_at_a_time(directory: Directory) -> None:
    first, second = LdapLock(directory, "test-lock"), LdapLock(directory, "test-lock")
    assert first.acquire() and first.held
    assert not second.acquire()
    holder = second.holder()
    assert holder is not None and holder.owner == first.owner
    first.release()
    assert second.holder() is None
    assert second.acquire()
    second.release()


def test_exactly_one_of_many_takes_over_a_stale_lock(
        directory: Directory, slapd: ManagedSlapd) -> None:
    stalled = LdapLock(directory, "test-lock")
    assert stalled.acquire()
    expire(slapd)
    contenders = [LdapLock(directory, "test-lock") for _ in range(8)]
    barrier = threading.Barrier(len(contenders))
    won: list[bool] = []

    def race(lock: LdapLock) -> None:
        barrier.wait()
        won.append(lock.acquire())

    threads = [threading.Thread(target=race, args=(c,)) for c in contenders]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(won) == [False] * 7 + [True]
    winner = next(c for c in contenders if c.held)
    # The stalled holder can neither renew nor release the new holder's lock.
    with pytest.raises(LockLost):
        stalled.renew()
    stalled.release()
    assert winner.holder() is not None and winner.holder().owner == winner.owner  # type: ignore[union-attr]
    winner.release()


def test_a_lock_whose_holder_died_on_this_host_is_taken_at_once(
        settings: Settings, directory: Directory) -> None:
    # A process takes the lock (TTL one hour) and dies without releasing it.
    code = ("import os, sys\n"
            "from gateway.directory import Directory\n"
            "from gateway.settings import Settings\n"
            "from gateway.sync.lock import LdapLock\n"
            f"s = Settings(ldap_url={settings.ldap_url!r}, ldap_base_dn={BASE_DN!r},"
            f" ldap_password={settings.ldap_password!r})\n"
            "assert LdapLock(Directory(s), 'test-lock', ttl=3600).acquire()\n"
            "os._exit(0)\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    lock = LdapLock(directory, "test-lock", ttl=3600)
    holder = lock.holder()
    assert holder is not None and holder.owner != lock.owner
    assert lock.acquire()
    lock.release()


def test_a_live_holder_keeps_its_lock_and_renews_it(directory: Directory) -> None:
    first = LdapLock(directory, "test-lock", ttl=0.8)
    assert first.acquire()
    with first.kept():
        threading.Event().wait(1.5)          # longer than the TTL: renewals keep it
        first.check()
        assert not LdapLock(directory, "test-lock").acquire()
    assert first.holder() is None


def test_check_fails_once_the_expiry_passes_without_renewal(directory: Directory) -> None:
    lock = LdapLock(directory, "test-lock", ttl=1)
    assert lock.acquire()
    threading.Event().wait(2.1)
    with pytest.raises(LockLost):
        lock.check()
    lock.release()
