"""The one LDAP boundary: nothing outside this package talks to LDAP.

* Every operation runs on a pooled python-ldap connection (:mod:`.pool`); a
  connection that died while idle (slapd restarted) is replaced and the
  operation retried once, so the gateway reconnects by itself. While slapd is
  down every call raises DirectoryUnavailable (HTTP 503).
* Callers never write filter strings or DNs: :func:`eq`, :func:`all_of`,
  :func:`any_of`, :func:`rdn` escape every value (:mod:`.filters`).
* LDAP errors become :mod:`gateway.errors` types; nothing above this package
  sees a python-ldap exception.
* Lists are sorted and counted by slapd (:mod:`.views`); bulk writes are
  batched in LDAP transactions (RFC 5805, :mod:`.txn`) where the server
  offers them, pipelined single operations otherwise
  (:meth:`Directory.write_many`).

One LDAP client library: python-ldap (libldap, in C) does every operation,
the escaping of filter values and DNs (``ldap.filter``, ``ldap.dn``), and the
controls: paged results, server-side sort and virtual list view, and the
RFC 4528 assertion (``ldap.controls.libldap.AssertionControl``, encoded by
libldap); the RFC 5805 transaction operations, which it has no API for, are
built in :mod:`.txn` with pyasn1. It was chosen with numbers (:mod:`.pool`:
a 100 000-entry read in 1.1 s against ldap3's 6.2 s, ``ldapsearch`` 0.6 s). ldap3 appears only in
``bench/`` as a baseline; pyasn1 (python-ldap's own dependency) encodes only
the End Transaction request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import ldap as _pl
from ldap.controls import RequestControl, SimplePagedResultsControl

from .. import metrics
from ..errors import AssertionFailed, DirectoryUnavailable, MailgateError, NotFound
from ..settings import Settings
from . import pool as _pool
from . import txn as _txn
from .filters import (
    Filter,
    all_of,
    any_of,
    assertion,
    at_most,
    ends_with,
    eq,
    not_,
    parent_dn,
    present,
    rdn,
    starts_with,
)
from .model import Attrs, Changes, Entry, SortedPage, Write
from .views import ListViews, as_entry, collect, entries

__all__ = [
    "AssertionFailed", "Attrs", "Changes", "Directory", "Entry", "Filter", "SortedPage",
    "Write", "all_of", "any_of", "as_entry", "at_most", "ends_with", "eq", "not_", "parent_dn",
    "present", "rdn", "starts_with",
]

T = TypeVar("T")

# OpenLDAP's Relax Rules control (draft-zeilenga-ldap-relax): a modify may
# change the structural object class. slapd accepts it from the gateway's
# identity with its ordinary write access.
RELAX_OID = "1.3.6.1.4.1.4203.666.5.12"


def _values(values: Sequence[str | bytes]) -> list[bytes]:
    return [v if isinstance(v, bytes) else v.encode("utf-8") for v in values]


def _send(conn: Any, write: Write, control: Any = None) -> int:
    """Send one write without waiting for its answer; the message id.

    ``control``: one more request control (a transaction's specification).
    """
    controls: list[Any] | None = None if control is None else [control]
    if write.assertion is not None:
        controls = [*(controls or []), assertion(write.assertion)]
    if write.relax:
        controls = [*(controls or []), RequestControl(RELAX_OID, True)]
    if write.op == "add":
        classes = [write.object_class, *write.attrs.get("objectClass", ())]
        modlist = [("objectClass", _values(classes))]
        modlist += [(k, _values(v)) for k, v in write.attrs.items() if v and k != "objectClass"]
        return int(conn.add_ext(write.dn, modlist, serverctrls=controls))
    if write.op == "modify":
        mods = [(_pl.MOD_REPLACE, k, _values(v) or None) for k, v in write.attrs.items()]
        return int(conn.modify_ext(write.dn, mods, serverctrls=controls))
    if write.op == "increment":
        mods = [(_pl.MOD_INCREMENT, k, _values(v)) for k, v in write.attrs.items()]
        return int(conn.modify_ext(write.dn, mods, serverctrls=controls))
    if write.op in ("add_values", "delete_values"):
        op = _pl.MOD_ADD if write.op == "add_values" else _pl.MOD_DELETE
        mods = [(op, k, _values(v)) for k, v in write.attrs.items()]
        return int(conn.modify_ext(write.dn, mods, serverctrls=controls))
    if write.op == "delete":
        return int(conn.delete_ext(write.dn, serverctrls=controls))
    raise ValueError(f"unknown write operation {write.op!r}")


class Directory:
    """The operations mailgate needs, as the gateway's service identity."""

    def __init__(self, settings: Settings) -> None:
        self.pool = _pool.Pool(settings)
        self.views = ListViews(self.pool)
        self.base_dn = settings.ldap_base_dn
        self.bind_dn = self.pool.bind_dn
        self.transaction_size = settings.ldap_transaction_size
        # Called as on_write(operation, dn) before every write request is sent
        # (add, modify, delete): lets tests and benchmarks count real writes.
        self.on_write: Callable[[str, str], None] | None = None
        self._operations = metrics.get().ldap_operations
        self._searches = self._operations.labels("search")
        self._transactions = metrics.get().ldap_transactions

    def _writing(self, operation: str, dn: str) -> None:
        self._operations.labels(operation).inc()
        if self.on_write is not None:
            self.on_write(operation, dn)

    def close(self) -> None:
        self.views.close()
        self.pool.close()

    # -- reads ----------------------------------------------------------------

    def _search(self, base: str, scope: int, flt: Filter, attrs: Sequence[str],
                limit: int = 0) -> list[Entry]:
        def op(conn: Any) -> list[Entry]:
            try:
                msgid = conn.search_ext(base, scope, flt, list(attrs) or None, sizelimit=limit)
                _type, data, _msgid, _controls = conn.result3(msgid)
            except _pl.NO_SUCH_OBJECT:
                return []
            except _pl.SIZELIMIT_EXCEEDED:
                return []  # only small bounded lookups set a limit
            return entries(data)
        self._searches.inc()
        return self.pool.run(op)

    def ping(self, timeout: float | None = None) -> None:
        """Raise DirectoryUnavailable unless the directory answers a read.

        Without ``timeout``: a read on a pooled connection. With it (readiness
        probes): on a fresh connection, bind and read within about ``timeout``
        seconds, whatever the pool's connections are busy with.
        """
        if timeout is None:
            self.read(self.base_dn, Filter("(objectClass=*)"), ["1.1"])
        else:
            self.pool.probe(timeout)

    def context_csn(self, url: str | None = None, timeout: float = 2.0) -> list[str]:
        """The base entry's contextCSN values on ``url`` (default: the server in
        use), on a fresh connection within about ``timeout`` seconds."""
        return self.pool.read_base("contextCSN", timeout, url or self.pool.url)

    def read(self, dn: str, flt: Filter, attrs: Sequence[str]) -> Entry | None:
        """The entry at ``dn`` if it matches ``flt``; None if absent or not matching."""
        found = self._search(dn, _pl.SCOPE_BASE, flt, attrs)
        return found[0] if found else None

    def find(self, base: str, flt: Filter, attrs: Sequence[str],
             limit: int = 0) -> list[Entry]:
        """Entries below ``base`` matching ``flt`` (no paging: small results only)."""
        return self._search(base, _pl.SCOPE_SUBTREE, flt, attrs, limit)

    def children(self, base: str, flt: Filter, attrs: Sequence[str]) -> list[Entry]:
        """Entries just below ``base`` matching ``flt`` (one level; small results only)."""
        return self._search(base, _pl.SCOPE_ONELEVEL, flt, attrs)

    def iterate(self, base: str, flt: Filter, attrs: Sequence[str],
                page_size: int = 1000) -> Iterator[Entry]:
        """All matching entries, fetched in simple-paged chunks (RFC 2696).

        One connection is held for the whole iteration; a failure part-way
        raises DirectoryUnavailable (a paged search cannot be resumed). The
        next page is asked for before this one is handed out, so slapd reads
        it while the caller works (a sync's read: 1.2 s instead of 1.8 s for
        120 000 entries).
        """
        self._searches.inc()
        paging = SimplePagedResultsControl(True, size=page_size, cookie="")
        names = list(attrs) or None
        with self.pool.borrow() as (conn, _reused):
            try:
                msgid: int | None = conn.search_ext(base, _pl.SCOPE_SUBTREE, flt, names,
                                                    serverctrls=[paging])
                while msgid is not None:
                    data, response = collect(conn, msgid, as_entry)
                    cookies = [c.cookie for c in response
                               if c.controlType == SimplePagedResultsControl.controlType]
                    msgid = None
                    if cookies and cookies[0]:
                        paging.cookie = cookies[0]
                        msgid = conn.search_ext(base, _pl.SCOPE_SUBTREE, flt, names,
                                                serverctrls=[paging])
                    yield from data
            except _pl.NO_SUCH_OBJECT:
                return
            except _pl.LDAPError as exc:
                raise _pool.unavailable(exc) from None

    def sorted_page(self, base: str, flt: Filter, attrs: Sequence[str], sort_attr: str,
                    offset: int, count: int, convert: Callable[[Entry], T],
                    continuation: bool = False) -> SortedPage[T]:
        """Entries ``offset`` (1-based) to ``offset+count-1`` in ``sort_attr`` order,
        each as ``convert`` makes it of the entry (``as_entry``: the entry itself).

        ``continuation``: a later page of a listing, which may continue slapd's
        sorted snapshot of the same search made at most 30 s ago.
        """
        self._searches.inc()
        return self.views.page(base, flt, attrs, sort_attr, offset, count, continuation,
                               convert)

    def compare_password(self, dn: str, password: str) -> bool:
        """Does a simple bind as ``dn`` succeed? (used by tests and the CLI)"""
        self._operations.labels("bind").inc()
        try:
            conn = self.pool.open()
        except _pl.LDAPError:
            raise DirectoryUnavailable("LDAP server unreachable", outage="down") from None
        try:
            conn.simple_bind_s(dn, password)
            return True
        except (_pl.INVALID_CREDENTIALS, _pl.UNWILLING_TO_PERFORM, _pl.INVALID_DN_SYNTAX):
            return False
        except _pl.LDAPError as exc:
            raise _pool.unavailable(exc) from None
        finally:
            _pool.close(conn)

    # -- writes ---------------------------------------------------------------

    def _write(self, write: Write, tolerated: tuple[type[Exception], ...] = ()) \
            -> MailgateError | None:
        """Apply one write; the server's refusal as an error (None: done).

        Refusals of a ``tolerated`` python-ldap type come back as NotFound.
        """
        self._writing(write.op, write.dn)

        def op(conn: Any) -> MailgateError | None:
            try:
                conn.result3(_send(conn, write))
            except _pool.DOWN:
                raise
            except tolerated:
                return NotFound("refused")
            except _pl.LDAPError as exc:
                return _pool.write_error(exc)
            return None
        return self.pool.run(op)

    def add(self, dn: str, object_class: str, attrs: Mapping[str, Sequence[str | bytes]]) -> None:
        """Add an entry; Conflict if it exists, NotFound if its parent does not."""
        error = self._write(Write("add", dn, attrs, object_class))
        if error is not None:
            raise error

    def modify(self, dn: str, changes: Changes) -> None:
        """Replace each named attribute's values (an empty list deletes it)."""
        if changes:
            error = self._write(Write("modify", dn, changes))
            if error is not None:
                raise error

    def add_values(self, dn: str, changes: Changes) -> None:
        """Add values to each named attribute (atomic on the server, no read first).

        NotFound if the entry does not exist; Conflict if a value is there already.
        """
        error = self._write(Write("add_values", dn, changes))
        if error is not None:
            raise error

    def delete_values(self, dn: str, changes: Changes) -> None:
        """Remove these values; values (or the entry) already gone are no error."""
        error = self._write(Write("delete_values", dn, changes))
        if error is not None and not isinstance(error, NotFound):
            raise error

    def modify_if(self, dn: str, changes: Changes, assertion: Filter,
                  relax: bool = False) -> bool:
        """Like :meth:`modify`, but only while the entry matches ``assertion``.

        The test and the change are one atomic operation on the server (the
        LDAP assertion control, RFC 4528). False if the entry no longer
        matches; NotFound if it is gone.
        """
        error = self._write(Write("modify", dn, changes, assertion=assertion, relax=relax))
        if isinstance(error, AssertionFailed):
            return False
        if error is not None:
            raise error
        return True

    def increment_if(self, dn: str, deltas: Mapping[str, int],
                     assertion: Filter | None = None) -> bool:
        """Add each delta (negative: subtract) to an INTEGER attribute, in one
        atomic modify (RFC 4525), only while the entry matches ``assertion``.

        False if the entry does not match; NotFound if it or an attribute is
        missing (slapd increments only a value that is there).
        """
        changes = {k: [str(int(v))] for k, v in deltas.items() if v}
        if not changes:
            return True
        error = self._write(Write("increment", dn, changes, assertion=assertion))
        if isinstance(error, AssertionFailed):
            return False
        if error is not None:
            raise error
        return True

    def delete(self, dn: str) -> None:
        error = self._write(Write("delete", dn))
        if error is not None:
            raise error

    def delete_if(self, dn: str, assertion: Filter) -> bool:
        """Delete ``dn`` only if it matches ``assertion``, atomically (RFC 4528).

        False if it does not match or is already gone.
        """
        error = self._write(Write("delete", dn, assertion=assertion))
        if isinstance(error, AssertionFailed | NotFound):
            return False
        if error is not None:
            raise error
        return True

    def delete_if_leaf(self, dn: str, assertion: Filter | None = None) -> bool:
        """Delete ``dn`` if it has no children (and matches ``assertion``);
        False if it has, does not match or is gone."""
        error = self._write(Write("delete", dn, assertion=assertion),
                            tolerated=(_pl.NOT_ALLOWED_ON_NONLEAF,))
        if isinstance(error, NotFound | AssertionFailed):
            return False
        if error is not None:
            raise error
        return True

    def write_many(self, writes: Iterable[Write], window: int = 16,
                   transaction_size: int | None = None) \
            -> Iterator[tuple[Write, MailgateError | None]]:
        """Apply ``writes`` on one connection and yield each with its outcome.

        The outcome is None (done) or the server's refusal as an error
        (Conflict, NotFound, AssertionFailed, Invalid, DirectoryUnavailable
        for anything else). slapd may carry out the writes in any order: never
        put two writes of one entry in one call. A lost connection raises
        DirectoryUnavailable; writes not yet yielded may or may not have been
        applied (callers must be idempotent).

        In transactions (:mod:`.txn`) of ``transaction_size`` writes
        (default ``MAILGATE_LDAP_TRANSACTION_SIZE``) when the server offers
        them: one fsynced commit per batch instead of one per write. A batch's
        writes are yielded once it is committed, all applied; a batch the
        server refuses (one of its writes was refused: nothing of it was
        applied) is replayed as single operations, which reports the
        refused write and applies the others. Otherwise (size 0 or 1, a
        server without transactions, a batch of one) pipelined single
        operations: up to ``window`` requests in flight, so slapd works on
        some while the next are encoded and sent (about 2 100 adds a second
        against 1 500 for ``ldapadd``, with fsync on).
        """
        size = self.transaction_size if transaction_size is None else transaction_size
        with self.pool.borrow(pooled=False) as (conn, _reused):
            try:
                batched = size > 1 and _txn.offered(conn)
            except _pool.DOWN as exc:
                raise _pool.unavailable(exc) from None
            if not batched:
                yield from self._pipelined(conn, writes, window)
                return
            batch: list[Write] = []
            for write in writes:
                batch.append(write)
                if len(batch) >= size:
                    yield from self._batch(conn, batch, window)
                    batch = []
            yield from self._batch(conn, batch, window)

    def _batch(self, conn: Any, batch: list[Write],
               window: int) -> Iterator[tuple[Write, MailgateError | None]]:
        """One transaction of ``batch``; replayed as single writes if refused."""
        if len(batch) > 1:
            for write in batch:
                self._writing(write.op, write.dn)
            try:
                committed = _txn.commit(conn, batch, _send)
            except _pool.DOWN as exc:
                raise _pool.unavailable(exc) from None
            if committed:
                self._transactions.labels("committed").inc()
                for write in batch:
                    yield write, None
                return
            self._transactions.labels("refused").inc()
        yield from self._pipelined(conn, batch, window)

    def _pipelined(self, conn: Any, writes: Iterable[Write],
                   window: int) -> Iterator[tuple[Write, MailgateError | None]]:
        """Single writes, up to ``window`` in flight, each with its outcome."""
        pending: dict[int, Write] = {}

        def finish() -> tuple[Write, MailgateError | None]:
            msgid = next(iter(pending))
            write = pending.pop(msgid)
            try:
                conn.result3(msgid)
            except _pool.DOWN as exc:
                raise _pool.unavailable(exc) from None
            except _pl.LDAPError as exc:
                return write, _pool.write_error(exc)
            return write, None

        for write in writes:
            self._writing(write.op, write.dn)
            try:
                pending[_send(conn, write)] = write
            except _pool.DOWN as exc:
                raise _pool.unavailable(exc) from None
            except _pl.LDAPError as exc:   # refused before sending (bad DN, ...)
                yield write, _pool.write_error(exc)
                continue
            if len(pending) >= window:
                yield finish()
        while pending:
            yield finish()
