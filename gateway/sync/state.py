"""The sync's shared state, kept in LDAP (the gateway's only state).

Two ``mailgateStateObject`` entries under ``ou=gateway,<base>``, each holding
one JSON document in ``mailgateState``:

* ``cn=sync-state``: per source (keyed by a hash of its URL, which may carry
  secrets) the validators of the last applied version (ETag, Last-Modified,
  SHA-256), when the sync last ran and last checked, and when it last did a
  full reconcile. Small: every scheduled tick of every process reads it.
* ``cn=sync-history``: the last :data:`KEEP_RUNS` runs, newest first, for
  ``GET /sync/status``.

Only the holder of the sync lock writes them; anyone reads.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ..directory import Directory, eq
from ..entries import A_CN, A_STATE, OC_STATE, Layout
from ..errors import Conflict, MailgateError, NotFound

log = logging.getLogger(__name__)

STATE_CN = "sync-state"
HISTORY_CN = "sync-history"
KEEP_RUNS = 20


class StateStore:
    def __init__(self, directory: Directory) -> None:
        self.dir = directory
        self.layout = Layout(directory.base_dn)

    def _dn(self, cn: str) -> str:
        return self.layout.state(cn)

    def _load(self, cn: str) -> dict[str, Any]:
        entry = self.dir.read(self._dn(cn), eq("objectClass", OC_STATE), [A_STATE])
        raw = entry.attrs.get(A_STATE) if entry is not None else None
        if not raw:
            return {}
        try:
            data = json.loads(raw[0])
        except ValueError:
            log.warning("ignoring unreadable %s in %s", A_STATE, self._dn(cn))
            return {}
        return data if isinstance(data, dict) else {}

    def _save(self, cn: str, data: dict[str, Any]) -> None:
        value = json.dumps(data, separators=(",", ":"), sort_keys=True).encode("utf-8")
        dn = self._dn(cn)
        try:
            self.dir.modify(dn, {A_STATE: [value]})
        except NotFound:
            try:
                self.dir.add(dn, OC_STATE, {A_CN: [cn], A_STATE: [value]})
            except Conflict:
                self.dir.modify(dn, {A_STATE: [value]})

    def load_state(self) -> dict[str, Any]:
        return self._load(STATE_CN)

    def save_state(self, state: dict[str, Any]) -> None:
        self._save(STATE_CN, state)

    def runs(self) -> list[dict[str, Any]]:
        runs = self._load(HISTORY_CN).get("runs")
        return [r for r in runs if isinstance(r, dict)] if isinstance(runs, list) else []

    def record_run(self, run: dict[str, Any]) -> bool:
        """Add ``run`` to the history, newest (by start) first; the newest
        KEEP_RUNS are kept. False if LDAP could not be reached (the caller
        records it later). Never raises."""
        try:
            runs = [run, *[r for r in self.runs() if r.get("id") != run.get("id")]]
            # A run recorded late (after an outage) goes where its start puts it.
            runs.sort(key=lambda r: str(r.get("started", "")), reverse=True)
            self._save(HISTORY_CN, {"runs": runs[:KEEP_RUNS]})
        except MailgateError as exc:
            log.error("could not record the sync run in LDAP: %s", exc.message)
            return False
        return True
