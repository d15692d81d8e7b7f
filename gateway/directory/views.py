"""Sorted pages of a search: server-side sort and virtual list view (sssvlv).

slapd sorts and counts, so a page of 10 000 out of 100 000 entries never needs
the whole result in the gateway's memory. A list view is slapd's sorted
snapshot of a result, bound to the connection that asked for it. Page 1 of a
list always sorts afresh; later pages continue the newest view of the same
search while it was last used less than ``VIEW_TTL`` ago, so paging through
a million entries sorts once, not once a page, and sees one consistent
snapshot (like a cursor) however long the whole listing takes; a view nobody
pages on for ``VIEW_TTL`` is closed. Views are taken out of the table while in
use: two requests never share one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import ldap as _pl
from ldap.controls import DecodeControlTuples
from ldap.controls.sss import SSSRequestControl
from ldap.controls.vlv import VLVRequestControl, VLVResponseControl

from ..errors import DirectoryUnavailable
from . import pool as _pool
from .filters import Filter
from .model import Entry, SortedPage

SORT_RULE = "caseIgnoreOrderingMatch"
VIEW_TTL = 30.0  # seconds since the view's last page
MAX_VIEWS = 2  # per process; slapd's olcSssVlvMax bounds all of them
# offsetRangeError (61), virtualListViewError (76): slapd's answer to a view
# of an empty result.
_EMPTY_VIEW = (61, 76)
T = TypeVar("T")


@dataclass
class _View:
    conn: Any
    context: bytes | None
    used: float      # time.monotonic() of its last page


def entries(data: list[tuple[str | None, Any]]) -> list[Entry]:
    """Search results as entries (references and the like left out)."""
    new = tuple.__new__
    return [new(Entry, (dn, attrs)) for dn, attrs in data or ()
            if dn is not None and isinstance(attrs, dict)]


def as_entry(entry: Entry) -> Entry:
    return entry


def collect(conn: Any, msgid: int,
            convert: Callable[[Entry], T]) -> tuple[list[T], list[Any]]:
    """A search's entries, each through ``convert`` as it arrives, and the
    controls of its final result; all within the connection's timeout.

    One message at a time, not ``result3(msgid)`` (all at once), so that
    Python turns each entry into objects while slapd still sends the next
    ones instead of after the last: 11-13 µs of wall time an entry instead of
    17-19, and less of slapd's CPU (``bench/read_modes.py``). Converting each
    entry as it arrives leaves only the converted page in memory (B6's peak
    went from 77 to 70 MiB). docs/benchmarks.md, B6.
    """
    deadline = time.monotonic() + conn.timeout
    found: list[T] = []
    add = found.append
    new = tuple.__new__
    clock = time.monotonic
    # python-ldap's C call without the Python wrapper around it, when it has
    # one: the wrapper's lock guards a connection against other threads (a
    # borrowed connection has one user) and it decodes the controls of every
    # entry (which have none): a quarter of the GIL time of a page (py-spy).
    low = getattr(conn, "_l", None)
    while True:
        timeout = deadline - clock()
        if timeout <= 0:   # as result3(msgid) would: the whole answer within the timeout
            raise _pl.TIMEOUT({"desc": "Timed out", "info": "search result not complete"})
        if low is not None:
            kind, data, _msgid, controls = low.result4(msgid, 0, timeout, 0, 0, 0)
        else:
            kind, data, _msgid, controls = conn.result3(msgid, 0, timeout)
        if kind == _pl.RES_SEARCH_ENTRY:
            for dn, attrs in data:
                add(convert(new(Entry, (dn, attrs))))
        elif kind == _pl.RES_SEARCH_RESULT:
            return found, DecodeControlTuples(controls) if low is not None else controls


class ListViews:
    def __init__(self, connections: _pool.Pool) -> None:
        self._pool = connections
        self._views: dict[tuple[Any, ...], _View] = {}
        self._lock = threading.Lock()

    def page(self, base: str, flt: Filter, attrs: Sequence[str], sort_attr: str,
             offset: int, count: int, continuation: bool,
             convert: Callable[[Entry], T]) -> SortedPage[T]:
        with self._pool.guarded():
            return self._page_of(base, flt, attrs, sort_attr, offset, count, continuation,
                                 convert)

    def _page_of(self, base: str, flt: Filter, attrs: Sequence[str], sort_attr: str,
                 offset: int, count: int, continuation: bool,
                 convert: Callable[[Entry], T]) -> SortedPage[T]:
        key = (base, flt, tuple(attrs), sort_attr)
        view = self._take(key) if continuation else None
        if view is not None:
            try:
                return self._page(key, view, offset, count, convert)
            except _pl.TIMEOUT as exc:
                raise _pool.unavailable(exc) from None   # frozen: no second wait
            except _pl.LDAPError:
                pass  # the view expired in slapd or slapd restarted: sort afresh
        try:
            return self._page(key, _View(self._pool.connect(), None, time.monotonic()),
                              offset, count, convert)
        except _pl.LDAPError as exc:
            raise _pool.unavailable(exc) from None

    def _page(self, key: tuple[Any, ...], view: _View, offset: int, count: int,
              convert: Callable[[Entry], T]) -> SortedPage[T]:
        base, flt, attrs, sort_attr = key
        controls = [
            SSSRequestControl(True, [f"{sort_attr}:{SORT_RULE}"]),
            VLVRequestControl(True, before_count=0, after_count=count - 1, offset=offset,
                              content_count=0, context_id=view.context),
        ]
        try:
            msgid = view.conn.search_ext(base, _pl.SCOPE_SUBTREE, flt, list(attrs) or None,
                                         serverctrls=controls)
            data, response = collect(view.conn, msgid, convert)
        except BaseException as exc:
            _pool.close(view.conn)
            if view.context is None and (isinstance(exc, _pl.NO_SUCH_OBJECT) or (
                    isinstance(exc, _pl.LDAPError) and _pool.result_code(exc) in _EMPTY_VIEW)):
                return SortedPage(0, [])
            raise
        vlv = [c for c in response if c.controlType == VLVResponseControl.controlType]
        if not vlv:
            _pool.close(view.conn)
            raise DirectoryUnavailable("the directory did not answer the list view control "
                                       "(is the sssvlv overlay loaded?)")
        view.context = vlv[0].context_id
        view.used = time.monotonic()
        self._keep(key, view)
        total = int(vlv[0].content_count)
        return SortedPage(total, data if offset <= total else [])

    def _take(self, key: tuple[Any, ...]) -> _View | None:
        with self._lock:
            view = self._views.pop(key, None)
        if view is not None and time.monotonic() - view.used > VIEW_TTL:
            _pool.close(view.conn)
            return None
        return view

    def _keep(self, key: tuple[Any, ...], view: _View) -> None:
        now = time.monotonic()
        with self._lock:
            dropped = [v for k, v in self._views.items()
                       if k == key or now - v.used > VIEW_TTL]
            self._views = {k: v for k, v in self._views.items()
                           if k != key and now - v.used <= VIEW_TTL}
            self._views[key] = view
            while len(self._views) > MAX_VIEWS:
                dropped.append(self._views.pop(next(iter(self._views))))
        for old in dropped:
            _pool.close(old.conn)

    def close(self) -> None:
        with self._lock:
            views, self._views = list(self._views.values()), {}
        for view in views:
            _pool.close(view.conn)
