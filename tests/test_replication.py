"""OpenLDAP replication with real servers on loopback: a consumer of the session's
slapd (a mail host's local replica), and a provider pair with the gateway's failover.

Lags are measured from the moment the provider acknowledged a write to the
first successful bind or search on the consumer; they are printed (pytest -s)
and written to ``$MAILGATE_REPLICATION_REPORT`` if set; only generous bounds
are asserted (the machine is shared).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import ldap
import pytest

from gateway.directory import Directory
from gateway.errors import MailgateError
from gateway.mail import MailDirectory
from gateway.replication import PairedProviderSlapd, ReplicaSlapd, share_secrets
from gateway.settings import Settings
from gateway.slapd import ManagedSlapd, free_port
from gateway.sync.lock import LdapLock
from gateway.sync.runner import SyncRunner

from tests.support.constants import ADMIN_TOKEN, BASE_DN, TEST_ROUNDS

GENEROUS = 5.0  # seconds: what is asserted; the figures are reported


def report(name: str, values: dict[str, object]) -> None:
    print(f"\n{name}: {json.dumps(values)}")
    path = os.environ.get("MAILGATE_REPLICATION_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"name": name, **values}) + "\n")


def until(check: Callable[[], bool], timeout: float = GENEROUS) -> float:
    """Seconds until ``check()`` is true (polled); AssertionError after ``timeout``."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        if check():
            return time.monotonic() - start
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s: {check}")
        time.sleep(0.002)


def can_bind(url: str, dn: str, password: str) -> bool:
    conn = ldap.initialize(url)
    conn.set_option(ldap.OPT_NETWORK_TIMEOUT, 2)
    try:
        conn.simple_bind_s(dn, password)
        return True
    except (ldap.INVALID_CREDENTIALS, ldap.UNWILLING_TO_PERFORM):
        return False
    finally:
        conn.unbind_s()


def search_all(server: ManagedSlapd, as_: ManagedSlapd, *attrs: str) -> dict[str, list[str]]:
    """dn -> the values of ``attrs`` of every entry, read as the replicator."""
    out = subprocess.run(
        ["ldapsearch", "-x", "-LLL", "-o", "ldif-wrap=no", "-H", server.url,
         "-D", as_.service_dn("replicator"), "-y", str(as_.password_file("replicator")),
         "-b", BASE_DN, "(objectClass=*)", *attrs],
        capture_output=True, text=True, timeout=60, check=True).stdout
    entries: dict[str, list[str]] = {}
    for block in out.strip().split("\n\n"):
        lines = block.splitlines()
        if lines and lines[0].startswith("dn: "):
            entries[lines[0][4:].lower()] = sorted(lines[1:])
    return entries


def context_csn(server: ManagedSlapd, as_: ManagedSlapd) -> list[str]:
    return search_all(server, as_, "contextCSN").get(BASE_DN.lower(), [])


@pytest.fixture(scope="module")
def consumer(slapd: ManagedSlapd, tmp_path_factory: pytest.TempPathFactory) \
        -> Iterator[ReplicaSlapd]:
    """A read-only consumer of the session slapd, made from ldif/replica.ldif."""
    server = ReplicaSlapd(tmp_path_factory.mktemp("consumer"), BASE_DN,
                          url=f"ldap://127.0.0.1:{free_port()}", nosync=True,
                          provider_url=slapd.url)
    share_secrets(slapd, server, ("replicator",))
    server.start()
    try:
        until(lambda: can_bind(server.url, slapd.service_dn("gateway"),
                               slapd.password("gateway")))
        yield server
    finally:
        server.stop()


def test_account_binds_on_the_consumer_within_a_second(
        slapd: ManagedSlapd, consumer: ReplicaSlapd, mail: MailDirectory) -> None:
    lags = []
    for i in range(100):
        mail.create_account(f"lag{i:03d}", "example.com", f"pw-{i}")
        dn = f"mail=lag{i:03d}@example.com,dc=example.com,ou=domains,{BASE_DN}"
        lags.append(until(lambda dn=dn, i=i: can_bind(consumer.url, dn, f"pw-{i}")))
    lags.sort()
    figures = {"changes": len(lags), "median_ms": round(statistics.median(lags) * 1000, 1),
               "p99_ms": round(lags[98] * 1000, 1), "max_ms": round(lags[-1] * 1000, 1)}
    report("create -> bind on consumer", figures)
    assert statistics.median(lags) < 1.0 and lags[-1] < GENEROUS


def test_delete_and_password_change_reach_the_consumer(
        slapd: ManagedSlapd, consumer: ReplicaSlapd, mail: MailDirectory) -> None:
    dn = f"mail=bob@example.com,dc=example.com,ou=domains,{BASE_DN}"
    mail.create_account("bob", "example.com", "old-password")
    until(lambda: can_bind(consumer.url, dn, "old-password"))
    mail.set_password("bob@example.com", "new-password")
    changed = until(lambda: can_bind(consumer.url, dn, "new-password"))
    assert not can_bind(consumer.url, dn, "old-password")
    mail.delete_account("bob@example.com")
    gone = until(lambda: dn.lower() not in search_all(consumer, slapd, "1.1"))
    assert not can_bind(consumer.url, dn, "new-password")
    report("password change / delete -> consumer", {"password_ms": round(changed * 1000, 1),
                                                      "delete_ms": round(gone * 1000, 1)})
    assert changed < 1.0 + GENEROUS and gone < GENEROUS


def test_consumer_refuses_writes_with_a_referral_to_the_provider(
        slapd: ManagedSlapd, consumer: ReplicaSlapd, mail: MailDirectory) -> None:
    mail.create_account("carol", "example.com", "pw")
    dn = f"mail=carol@example.com,dc=example.com,ou=domains,{BASE_DN}"
    until(lambda: can_bind(consumer.url, dn, "pw"))
    conn = ldap.initialize(consumer.url)
    conn.set_option(ldap.OPT_REFERRALS, 0)
    conn.simple_bind_s(slapd.service_dn("gateway"), slapd.password("gateway"))
    with pytest.raises(ldap.REFERRAL) as refused:
        conn.modify_s(dn, [(ldap.MOD_REPLACE, "mailgateSenderAllowed", [b"*"])])
    assert slapd.url in str(refused.value)
    with pytest.raises(ldap.REFERRAL):
        conn.delete_s(dn)
    conn.unbind_s()
    assert dn.lower() in search_all(consumer, slapd, "1.1")


def test_stopped_consumer_catches_up_on_1000_changes(
        slapd: ManagedSlapd, consumer: ReplicaSlapd, settings: Settings) -> None:
    """600 adds, 200 modifies, 200 deletes while the consumer is down; then every
    entry and its entryCSN are the provider's."""
    consumer.stop()
    domain = f"dc=example.org,ou=domains,{BASE_DN}"
    ldif = [f"dn: {domain}\nobjectClass: mailgateDomain\ndc: example.org\n"]
    ldif += [f"dn: mail=u{i:04d}@example.org,{domain}\nobjectClass: mailgateAccount\n"
             f"mail: u{i:04d}@example.org\nuserPassword: secret{i}\n" for i in range(599)]
    ldif += [f"dn: mail=u{i:04d}@example.org,{domain}\nchangetype: modify\n"
             f"replace: mailgateSenderAllowed\nmailgateSenderAllowed: example.net\n"
             for i in range(200)]
    ldif += [f"dn: mail=u{i:04d}@example.org,{domain}\nchangetype: delete\n"
             for i in range(200, 400)]
    subprocess.run(["ldapmodify", "-a", "-x", "-H", slapd.url, "-D", slapd.admin_dn,
                    "-y", str(slapd.password_file("admin"))], input="\n".join(ldif),
                   capture_output=True, text=True, check=True, timeout=120)
    started = time.monotonic()
    consumer.start()
    provider_csn = context_csn(slapd, slapd)
    until(lambda: context_csn(consumer, slapd) == provider_csn, timeout=60)
    caught_up = time.monotonic() - started
    ours = search_all(slapd, slapd, "*", "entryCSN", "entryUUID")
    theirs = search_all(consumer, slapd, "*", "entryCSN", "entryUUID")
    assert len(ours) > 400  # also: no 500-entry size limit for the replicator
    assert theirs == ours
    report("consumer catch-up after 1000 changes", {"seconds": round(caught_up, 2),
                                                     "entries": len(ours)})


# -- two providers -------------------------------------------------------------


@pytest.fixture(scope="module")
def providers(tmp_path_factory: pytest.TempPathFactory) \
        -> Iterator[tuple[PairedProviderSlapd, PairedProviderSlapd]]:
    urls = [f"ldap://127.0.0.1:{free_port()}" for _ in range(2)]
    one = PairedProviderSlapd(tmp_path_factory.mktemp("provider1"), BASE_DN, url=urls[0],
                              nosync=True, server_id=1, peer_url=urls[1])
    two = PairedProviderSlapd(tmp_path_factory.mktemp("provider2"), BASE_DN, url=urls[1],
                              nosync=True, server_id=2, peer_url=urls[0])
    one.ensure_initialised()
    share_secrets(one, two)
    one.start()
    two.start()
    try:
        until(lambda: two.binds("gateway"), timeout=20)
        yield one, two
    finally:
        two.stop()
        one.stop()


def pair_settings(one: ManagedSlapd, two: ManagedSlapd, tmp_path: Path) -> Settings:
    return Settings(ldap_url=f"{one.url} {two.url}", ldap_base_dn=BASE_DN,
                    ldap_password=one.password("gateway"), admin_token=ADMIN_TOKEN,
                    password_rounds=TEST_ROUNDS, data_dir=tmp_path, ldap_timeout=5.0)


def test_providers_replicate_each_other(
        providers: tuple[PairedProviderSlapd, PairedProviderSlapd], tmp_path: Path) -> None:
    one, two = providers
    for writer, reader, name in ((one, two, "from1"), (two, one, "from2")):
        settings = pair_settings(writer, reader, tmp_path)
        directory = Directory(settings)
        try:
            MailDirectory(directory, TEST_ROUNDS).create_account(name, "pair.example", "pw")
        finally:
            directory.close()
        dn = f"mail={name}@pair.example,dc=pair.example,ou=domains,{BASE_DN}"
        until(lambda dn=dn, reader=reader: can_bind(reader.url, dn, "pw"))
    until(lambda: search_all(one, one, "*", "entryCSN") == search_all(two, one, "*", "entryCSN"))


def test_gateway_fails_over_and_does_not_flap(
        providers: tuple[PairedProviderSlapd, PairedProviderSlapd], tmp_path: Path) -> None:
    from gateway.app import create_app
    from gateway.services import current

    one, two = providers
    app = create_app(pair_settings(one, two, tmp_path))
    pool = current(app).directory.pool
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    results: list[tuple[float, int]] = []
    stop = threading.Event()
    counter = iter(range(1_000_000))

    def load() -> None:
        client = app.test_client()  # type: ignore[attr-defined]
        while not stop.is_set():
            n = next(counter)
            created = client.post("/mail/account/", headers=headers, json={
                "name": f"f{n:06d}", "domain": "failover.example", "password": "pw"})
            results.append((time.monotonic(), created.status_code))
            read = client.get(f"/mail/account/f{n:06d}@failover.example/", headers=headers)
            results.append((time.monotonic(), read.status_code))

    workers = [threading.Thread(target=load) for _ in range(2)]
    try:
        for worker in workers:
            worker.start()
        until(lambda: len(results) >= 40, timeout=30)
        assert pool.url == one.url
        one.stop()
        stopped = time.monotonic()
        until(lambda: sum(1 for t, _ in results if t > stopped) >= 40, timeout=30)
        assert pool.url == two.url
        one.start()
        until(lambda: one.binds("gateway"), timeout=20)
        back = time.monotonic()
        until(lambda: sum(1 for t, _ in results if t > back) >= 40, timeout=30)
        assert pool.url == two.url  # sticky: no return to provider 1 while 2 works
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
        current(app).directory.close()
    failed = [(t, code) for t, code in results if code not in (200, 201)]
    report("failover", {"requests": len(results), "failed": len(failed),
                        "failed_codes": sorted({c for _, c in failed})})
    # At most the requests in flight when provider 1 stopped: one per worker.
    assert len(failed) <= len(workers), failed
    # Provider 1 caught up with what was written to provider 2 meanwhile.
    until(lambda: search_all(one, one, "entryCSN") == search_all(two, one, "entryCSN"),
          timeout=30)


def test_sync_lock_is_pinned_to_the_first_provider(
        providers: tuple[PairedProviderSlapd, PairedProviderSlapd], tmp_path: Path) -> None:
    """Two runners at the same time, one of them failed over to provider 2: their
    lock lives on provider 1 for both, so exactly one acquires it, every time."""
    one, two = providers
    settings = pair_settings(one, two, tmp_path)
    runners = [SyncRunner(settings), SyncRunner(settings)]
    runners[1].directory.pool._current = 1  # this one's API traffic is on provider 2
    try:
        for _round in range(20):
            locks = [runner.new_lock() for runner in runners]
            barrier = threading.Barrier(2)
            won: list[bool] = [False, False]

            def take(i: int, barrier: threading.Barrier = barrier,
                     won: list[bool] = won, locks: list[LdapLock] = locks) -> None:
                barrier.wait()
                won[i] = locks[i].acquire()

            threads = [threading.Thread(target=take, args=(i,)) for i in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            assert sorted(won) == [False, True]
            for lock in locks:
                lock.release()
    finally:
        for runner in runners:
            runner.close()
    one.stop()  # provider 1 down: no lock, hence no sync (the API fails over)
    runner = SyncRunner(settings)
    try:
        with pytest.raises(MailgateError):
            runner.new_lock().acquire()
    finally:
        runner.close()
        one.start()


# -- the commands ---------------------------------------------------------------


def test_render_config_replica_applies_to_a_mailgate_cn_config(
        slapd: ManagedSlapd, tmp_path: Path) -> None:
    from gateway import cli

    status = cli.main(["render-config", "replica", "--provider", slapd.url, "--rid", "7",
                       "--base-dn", BASE_DN, "--out", str(tmp_path / "out"),
                       "--password-file", str(slapd.password_file("replicator"))])
    assert status == 0
    rendered = tmp_path / "out" / "replica.ldif"
    assert rendered.stat().st_mode & 0o777 == 0o600
    text = rendered.read_text()
    assert f"provider={slapd.url}" in text and "rid=007" in text
    assert f"olcUpdateRef: {slapd.url}" in text and "${" not in text
    fresh = ManagedSlapd(tmp_path / "fresh", BASE_DN)
    fresh.ensure_initialised()
    subprocess.run(["slapmodify", "-n0", "-F", str(fresh.config_dir), "-l", str(rendered)],
                   check=True, capture_output=True, timeout=60)
    config = subprocess.run(["slapcat", "-n0", "-F", str(fresh.config_dir), "-o",
                             "ldif-wrap=no"], check=True, capture_output=True, text=True,
                            timeout=60).stdout
    assert "olcSyncrepl: {0}rid=007 " in config and f"olcUpdateRef: {slapd.url}" in config


def test_mailgate_directory_replica_of(slapd: ManagedSlapd, tmp_path: Path) -> None:
    import signal
    import sys

    from gateway.slapd import listening

    url = f"ldap://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}
    env.update(MAILGATE_DATA_DIR=str(tmp_path / "replica"), MAILGATE_LDAP_BASE_DN=BASE_DN,
               MAILGATE_EMBEDDED_LDAP_URL=url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "directory", "--replica-of", slapd.url,
         "--replicator-password-file", str(slapd.password_file("replicator"))],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def ready() -> bool:
        if proc.poll() is not None:
            output = proc.stdout.read().decode() if proc.stdout else ""
            raise AssertionError(f"mailgate directory exited with {proc.returncode}: {output}")
        return listening(url, 0.2) and can_bind(url, slapd.service_dn("dovecot"),
                                                slapd.password("dovecot"))

    try:
        until(ready, timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0



# -- the lag /metrics reports (contextCSN) ----------------------------------------------


def _replica_metrics(settings: Settings, urls: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """{metric name: {replica URL: value}} of the replica gauges of one scrape."""
    from gateway.app import create_app
    from gateway.services import current

    from tests.support.api import Client
    from tests.test_metrics import parse

    app = create_app(settings.replace(ldap_replica_urls=urls))
    try:
        answer = Client(app).get("/metrics")
        assert answer.status_code == 200  # type: ignore[attr-defined]
        samples = parse(answer.get_data(as_text=True))  # type: ignore[attr-defined]
    finally:
        current(app).directory.close()
    found: dict[str, dict[str, float]] = {}
    for (name, labels), number in samples.items():
        if name.startswith("mailgate_replica_"):
            found.setdefault(name, {})[dict(labels)["replica"]] = number
    return found


def test_metrics_report_each_replica_and_its_lag_from_context_csn(
        slapd: ManagedSlapd, consumer: ReplicaSlapd, settings: Settings,
        mail: MailDirectory) -> None:
    closed = f"ldap://127.0.0.1:{free_port()}"   # nothing listens there
    mail.create_account("lagging", "example.com", "pw")
    until(lambda: context_csn(consumer, slapd) == context_csn(slapd, slapd))
    # The gateway's own identity reads contextCSN on both (the ACL of config.ldif).
    provider_csn = mail.dir.context_csn()
    assert provider_csn and [f"contextCSN: {v}" for v in provider_csn] == \
        context_csn(slapd, slapd)
    assert mail.dir.context_csn(consumer.url) == provider_csn
    found = _replica_metrics(settings, (consumer.url, closed))
    assert found["mailgate_replica_up"] == {consumer.url: 1.0, closed: 0.0}
    assert found["mailgate_replica_lag_seconds"] == {consumer.url: 0.0}   # none for closed
    # A consumer that stopped: it does not answer, and after it missed changes
    # its figure, once it answers, is how far its copy was behind.
    consumer.stop()
    try:
        before = [v.removeprefix("contextCSN: ") for v in context_csn(slapd, slapd)]
        started = time.time()
        found = _replica_metrics(settings, (consumer.url,))
        assert found["mailgate_replica_up"] == {consumer.url: 0.0}
        mail.create_account("missed", "example.com", "pw")
        elapsed = time.time() - started
        after = [v.removeprefix("contextCSN: ") for v in context_csn(slapd, slapd)]
    finally:
        consumer.start()
    from gateway.replication import replica_lag

    # The real CSNs, the provider's now against the stopped consumer's copy:
    # behind by at least the time between the two changes' CSNs.
    assert 0.0 < replica_lag(after, before) < elapsed + GENEROUS
    assert replica_lag(before, after) == 0.0   # ahead is not behind
    assert replica_lag(after, []) > 1e9        # never replicated: as bad as it gets
    until(lambda: context_csn(consumer, slapd) == context_csn(slapd, slapd), timeout=30)
    assert _replica_metrics(settings, (consumer.url,))["mailgate_replica_lag_seconds"] == {
        consumer.url: 0.0}
