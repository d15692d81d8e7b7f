"""LDAP transactions (RFC 5805): many writes, one commit.

slapd syncs every commit to disk; a bulk write made of single operations
pays one fsynced LMDB commit per entry, as ``ldapadd`` does. Sent in one
transaction, a batch of writes is one commit: on this machine 2 000 adds
took 1.68 s as single operations and 0.22 s in transactions of 100
(docs/benchmarks.md, B1 and the stress test).

python-ldap has no API for them, so the three pieces are built here: the
Start Transaction extended operation (``1.3.6.1.1.21.1``, no value; the
answer's value is the transaction's identifier), the Transaction
Specification control (``1.3.6.1.1.21.2``, critical, its value the
identifier) on every write of the transaction, and the End Transaction
extended operation (``1.3.6.1.1.21.3``), whose value pyasn1 encodes::

    txnEndReq ::= SEQUENCE {
         commit         BOOLEAN DEFAULT TRUE,
         identifier     OCTET STRING }

What slapd 2.5 does with them, as tests/test_directory_txn.py checks: each
write of a transaction is answered "success" at once (it is only queued);
the writes are carried out in order at the end, in one LMDB transaction, and
all or none are applied. One refused write (an entry that exists, an
assertion that fails, a value the schema refuses) fails the end request
with that write's result code and nothing of the transaction is applied.
The RFC 4528 assertion and OpenLDAP's Relax Rules control work inside a
transaction as outside. A connection that dies before the end leaves
nothing: slapd discards the queued writes.

Off by default (``MAILGATE_LDAP_TRANSACTION_SIZE=0``): slapd 2.5.13 segfaults
under transactions that hold adds, in its own add code, one crash every few
hundred transactions (bench/txn_stress.py, docs/benchmarks.md: 55 in 20 000
transactions of 5 adds, none in 20 000 of 5 modifies). A crash
mid-transaction leaves nothing of it (LMDB commits whole or not at all; 416
crashes read back, never a batch in part): the writer sees
DirectoryUnavailable and the next sync run converges.

The failing write's message id is not needed: :meth:`.Directory.write_many`
replays a refused batch as single operations, which finds and reports the
failing entry and applies the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import ldap as _pl
from ldap.controls import RequestControl
from ldap.extop import ExtendedRequest
from pyasn1.codec.ber import encoder
from pyasn1.type import namedtype, univ

from .model import Write

START_OID = "1.3.6.1.1.21.1"
SPECIFICATION_OID = "1.3.6.1.1.21.2"
END_OID = "1.3.6.1.1.21.3"

Send = Callable[[Any, Write, Any], int]


def end_request(identifier: bytes, commit: bool = True) -> ExtendedRequest:
    """The End Transaction request: commit (or abort) ``identifier``."""
    value = univ.Sequence(componentType=namedtype.NamedTypes(
        namedtype.DefaultedNamedType("commit", univ.Boolean(True)),
        namedtype.NamedType("identifier", univ.OctetString())))
    if not commit:
        value["commit"] = False
    value["identifier"] = identifier
    return ExtendedRequest(END_OID, encoder.encode(value))


def offered(conn: Any) -> bool:
    """Does the server on ``conn`` advertise both transaction operations?"""
    try:
        found = conn.search_ext_s("", _pl.SCOPE_BASE, "(objectClass=*)",
                                  ["supportedExtension"], timeout=conn.timeout)
    except (_pl.NO_SUCH_OBJECT, _pl.INSUFFICIENT_ACCESS):
        return False
    names = {v.decode("ascii", "replace") for _dn, attrs in found
             for v in attrs.get("supportedExtension", ())}
    return {START_OID, END_OID} <= names


def commit(conn: Any, writes: Sequence[Write], send: Send) -> bool:
    """Apply ``writes`` in one transaction on ``conn``, in order.

    True: all were applied. False: the server refused the transaction (one
    write was refused, or the transaction itself) and none was applied.
    python-ldap's errors of a lost server (SERVER_DOWN, TIMEOUT, ...) pass:
    then the transaction was committed entirely or not at all.
    """
    _name, identifier = conn.extop_s(ExtendedRequest(START_OID, None))
    control = RequestControl(SPECIFICATION_OID, True, identifier or b"")
    refused = False
    pending: list[int] = []
    for write in writes:
        try:
            pending.append(send(conn, write, control))
        except _pl.SERVER_DOWN:
            raise
        except _pl.LDAPError:
            refused = True    # refused before sending (a DN libldap cannot encode)
            break
    for msgid in pending:     # every answer is read, refused or not
        try:
            conn.result3(msgid)
        except (_pl.SERVER_DOWN, _pl.TIMEOUT):
            raise
        except _pl.LDAPError:
            refused = True
    try:
        conn.extop_s(end_request(identifier or b"", commit=not refused))
    except (_pl.SERVER_DOWN, _pl.TIMEOUT):
        raise
    except _pl.LDAPError:
        return False
    return not refused
