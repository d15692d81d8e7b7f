"""Bulk writes in LDAP transactions (RFC 5805) against the real slapd.

What ``Directory.write_many`` promises: batches are committed whole, a batch
slapd refuses is replayed write by write (the refused write reported, the
others applied), the assertion and Relax Rules controls work inside a
transaction, and a transaction whose connection dies, or that is aborted,
leaves nothing.

slapd 2.5.13 segfaults now and then under transactions (the reason they are
off by default, docs/benchmarks.md): each test runs on this module's own
slapd, from a directory it sets up itself, again on a restarted slapd if
slapd died under it (tests.support.slapd.surviving_crashes).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from ldap.controls import RequestControl
from ldap.extop import ExtendedRequest

from gateway.directory import Directory, Write, eq, txn
from gateway.entries import (
    A_ORIGIN,
    OC_ACCOUNT,
    OC_ALIAS,
    ORIGIN_API,
    ORIGIN_SYNC,
    Layout,
    alias_attrs,
    role_changes,
)
from gateway.errors import AssertionFailed, Conflict
from gateway.mail import MailDirectory
from gateway.settings import Settings
from gateway.slapd import ManagedSlapd

from tests.support.constants import BASE_DN
from tests.support.slapd import (
    empty_directory,
    mail_entry,
    own_slapd_fixture,
    surviving_crashes,
    transactions,
)

LAYOUT = Layout(BASE_DN)


slapd = own_slapd_fixture("slapd-txn")


def add_alias(address: str, origin: str = ORIGIN_SYNC) -> Write:
    return Write("add", LAYOUT.address(address),
                 alias_attrs(address, ["someone@example.net"], origin), OC_ALIAS)


def addresses(mail: MailDirectory) -> set[str]:
    return {a.id for a in mail.list_aliases(None, page_size=1000).results}


@pytest.fixture
def fresh(slapd: ManagedSlapd, mail: MailDirectory) -> Callable[[], None]:
    """Empty the directory and make the domain example.com (the start of every body)."""
    def make() -> None:
        empty_directory(slapd)
        mail.domains.ensure("example.com")
    return make


def test_the_directory_offers_transactions(directory: Directory) -> None:
    conn = directory.pool.connect()
    try:
        assert txn.offered(conn)
    finally:
        conn.unbind_s()


def test_batches_are_committed_whole_and_each_write_counted_once(
        directory: Directory, mail: MailDirectory, slapd: ManagedSlapd,
        fresh: Callable[[], None]) -> None:
    writes = [add_alias(f"a{i}@example.com") for i in range(25)]

    def body() -> None:
        fresh()
        sent: list[str] = []
        directory.on_write = lambda _op, dn: sent.append(dn)
        committed = transactions("committed")
        outcomes = list(directory.write_many(writes, transaction_size=10))
        assert [(w.dn, e) for w, e in outcomes] == [(w.dn, None) for w in writes]
        assert transactions("committed") - committed == 3        # 10 + 10 + 5
        assert sorted(sent) == sorted(w.dn for w in writes)
        assert addresses(mail) == {f"a{i}@example.com" for i in range(25)}

    surviving_crashes(slapd, body)


def test_a_refused_batch_is_replayed_singly_reporting_the_refused_write(
        directory: Directory, mail: MailDirectory, slapd: ManagedSlapd,
        fresh: Callable[[], None]) -> None:
    writes = [add_alias(f"b{i}@example.com") for i in range(4)]
    writes.insert(2, add_alias("taken@example.com"))

    def body() -> None:
        fresh()
        assert [e for _w, e in directory.write_many([add_alias("taken@example.com")])] \
            == [None]
        refused = transactions("refused")
        outcomes = {w.dn: e for w, e in directory.write_many(writes, transaction_size=10)}
        assert transactions("refused") - refused == 1
        assert isinstance(outcomes.pop(LAYOUT.address("taken@example.com")), Conflict)
        assert set(outcomes.values()) == {None}
        assert addresses(mail) == {"taken@example.com",
                                   *(f"b{i}@example.com" for i in range(4))}

    surviving_crashes(slapd, body)


def test_assertions_hold_inside_a_transaction(
        directory: Directory, mail: MailDirectory, slapd: ManagedSlapd,
        fresh: Callable[[], None]) -> None:
    owned = eq(A_ORIGIN, ORIGIN_SYNC)

    def body() -> None:
        fresh()
        setup = [add_alias("sync1@example.com"), add_alias("sync2@example.com"),
                 add_alias("adopted@example.com", ORIGIN_API)]
        assert all(e is None for _w, e in directory.write_many(setup, transaction_size=0))
        committed, refused = transactions("committed"), transactions("refused")
        # Every assertion holds: one committed transaction.
        both = [Write("delete", LAYOUT.address("sync1@example.com"), assertion=owned),
                add_alias("new1@example.com")]
        assert [e for _w, e in directory.write_many(both, transaction_size=10)] == [None, None]
        assert transactions("committed") - committed == 1
        # One fails: the transaction is refused, the entry survives and the
        # failed assertion is reported; the other writes are applied singly.
        mixed = [Write("delete", LAYOUT.address("sync2@example.com"), assertion=owned),
                 Write("delete", LAYOUT.address("adopted@example.com"), assertion=owned),
                 add_alias("new2@example.com")]
        outcomes = [e for _w, e in directory.write_many(mixed, transaction_size=10)]
        assert outcomes[0] is None and isinstance(outcomes[1], AssertionFailed)
        assert outcomes[2] is None
        assert transactions("refused") - refused == 1
        assert addresses(mail) == {"adopted@example.com", "new1@example.com",
                                   "new2@example.com"}

    surviving_crashes(slapd, body)


def test_relax_rules_change_the_structural_class_inside_a_transaction(
        directory: Directory, slapd: ManagedSlapd, fresh: Callable[[], None]) -> None:
    hashed = "{CRYPT}$6$rounds=5000$salt$" + "x" * 86
    to_account = {**role_changes("account"), "userPassword": [hashed]}
    writes = [Write("modify", LAYOUT.address(f"role{i}@example.com"), to_account, relax=True)
              for i in (1, 2)]

    def body() -> None:
        fresh()
        setup = [add_alias("role1@example.com"), add_alias("role2@example.com")]
        assert all(e is None for _w, e in directory.write_many(setup, transaction_size=0))
        committed = transactions("committed")
        assert [e for _w, e in directory.write_many(writes, transaction_size=10)] \
            == [None, None]
        assert transactions("committed") - committed == 1

    surviving_crashes(slapd, body)
    for i in (1, 2):
        assert mail_entry(slapd, f"role{i}@example.com")["objectClass"] == [OC_ACCOUNT]


def test_size_zero_and_the_setting(settings: Settings, mail: MailDirectory,
                                   slapd: ManagedSlapd, fresh: Callable[[], None]) -> None:
    single = Directory(settings.replace(ldap_transaction_size=0))
    batched = Directory(settings.replace(ldap_transaction_size=3))

    def body() -> None:
        fresh()
        committed = transactions("committed")
        list(single.write_many([add_alias(f"d{i}@example.com") for i in range(4)]))
        assert transactions("committed") == committed
        list(batched.write_many([add_alias(f"e{i}@example.com") for i in range(4)]))
        # 3 in a transaction, then a batch of one: a single write.
        assert transactions("committed") - committed == 1
        assert len(addresses(mail)) == 8

    try:
        surviving_crashes(slapd, body)
    finally:
        single.close()
        batched.close()
    assert Settings().ldap_transaction_size == 0     # off by default


def _queue_adds(conn: object, count: int) -> bytes:
    """Start a transaction on ``conn`` and queue ``count`` adds in it; its identifier."""
    _name, identifier = conn.extop_s(ExtendedRequest(txn.START_OID, None))  # type: ignore[attr-defined]
    control = RequestControl(txn.SPECIFICATION_OID, True, identifier or b"")
    for i in range(count):
        write = add_alias(f"lost{i}@example.com")
        conn.result3(conn.add_ext(write.dn, [  # type: ignore[attr-defined]
            ("objectClass", [write.object_class.encode()]),
            *((k, [str(v).encode() for v in vs]) for k, vs in write.attrs.items())],
            serverctrls=[control]))
    return bytes(identifier or b"")


def test_a_transaction_cut_off_or_aborted_leaves_nothing(
        directory: Directory, mail: MailDirectory, slapd: ManagedSlapd,
        fresh: Callable[[], None]) -> None:
    def body() -> None:
        fresh()
        conn = directory.pool.connect()
        _queue_adds(conn, 3)
        conn.unbind_s()    # gone before the end request: slapd drops the queued writes
        assert addresses(mail) == set()
        conn = directory.pool.connect()
        try:
            identifier = _queue_adds(conn, 3)
            conn.extop_s(txn.end_request(identifier, commit=False))
        finally:
            conn.unbind_s()
        assert addresses(mail) == set()
        # The same writes in a transaction of their own go through.
        again = [add_alias(f"lost{i}@example.com") for i in range(3)]
        assert all(e is None for _w, e in directory.write_many(again, transaction_size=10))
        assert len(addresses(mail)) == 3

    surviving_crashes(slapd, body)


def test_a_cascade_domain_delete_goes_in_transactions(
        settings: Settings, mail: MailDirectory, slapd: ManagedSlapd,
        fresh: Callable[[], None]) -> None:
    batched = Directory(settings.replace(ldap_transaction_size=50))
    writes = [add_alias(f"c{i:03d}@example.com") for i in range(120)]

    def body() -> None:
        fresh()
        assert all(e is None for _w, e in batched.write_many(writes, transaction_size=0))
        committed, refused = transactions("committed"), transactions("refused")
        deleted = MailDirectory(batched, 1000).domains.delete("example.com", True)
        assert (deleted.aliases, deleted.entries) == (120, 120)
        # 50 + 50 + 20. slapd 2.5.13 refuses (result 80, "other") a transaction
        # that deletes the last children of an entry: that batch is replayed
        # as single deletes.
        done = transactions("committed") - committed
        assert done >= 2 and done + transactions("refused") - refused == 3
        assert mail.domains.find("example.com") is None and addresses(mail) == set()

    try:
        surviving_crashes(slapd, body)
    finally:
        batched.close()
