"""The one way tests start a slapd, after python-ldap's ``slapdtest``.

``running_slapd(path)`` builds a :class:`~gateway.slapd.ManagedSlapd` from the
project's ``ldif/`` in ``path``, starts it on a free loopback port, waits until
a real bind succeeds (ManagedSlapd.start: not only an open port) and stops it, by its process
id, when the block ends::

    with running_slapd(tmp_path / "ldap", debug_level="filter") as slapd:
        ...
        slapd.restart()            # the same data and URL
        with slapd.stopped():      # down for the block, up again after it
            ...
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import ldap
import pytest

from gateway import metrics
from gateway.errors import DirectoryUnavailable, SlapdError
from gateway.slapd import ManagedSlapd, free_port

from .constants import BASE_DN
from .wait import wait_until

_START_ATTEMPTS = 3  # a free port can be taken by someone else before slapd binds it


class RunningSlapd(ManagedSlapd):
    """A ManagedSlapd (whose start waits for a real bind; restart()) with stopped()."""

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """slapd is down inside the block and answers again after it (even on failure)."""
        self.stop()
        try:
            yield
        finally:
            self.start()


@contextlib.contextmanager
def running_slapd(path: Path, base_dn: str = BASE_DN, *, nosync: bool = True,
                  debug_level: str = "0") -> Iterator[RunningSlapd]:
    """A slapd with its data in ``path``, running for the block (see the module doc).

    ``nosync`` (olcDbNoSync) is on by default: tests do not need durability.
    """
    server = RunningSlapd(path, base_dn, url=f"ldap://127.0.0.1:{free_port()}",
                          nosync=nosync, debug_level=debug_level)
    for attempt in range(1, _START_ATTEMPTS + 1):
        try:
            server.start()
            break
        except SlapdError:
            server.stop()
            if attempt == _START_ATTEMPTS:
                raise
            server.url = f"ldap://127.0.0.1:{free_port()}"
    try:
        yield server
    finally:
        server.stop()


def ldap_tool(slapd: ManagedSlapd, tool: str, *args: str, input: str | None = None,
              check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run an OpenLDAP client tool (ldapadd, ldapsearch, ...) as the directory admin."""
    return subprocess.run(
        [tool, "-x", "-H", slapd.url, "-D", slapd.admin_dn, "-w", slapd.password("admin"),
         *args], input=input, capture_output=True, text=True, check=check, timeout=60)


def mail_entry(slapd: ManagedSlapd, address: str, *extra: str) -> dict[str, list[str]]:
    """The entry of ``address`` as ldapsearch (the directory admin) sees it: each
    attribute's values ({} if there is none); ``extra`` operational attributes too."""
    out = ldap_tool(slapd, "ldapsearch", "-LLL", "-o", "ldif-wrap=no", "-b",
                    f"ou=domains,{slapd.base_dn}", f"(mail={address})", "*", *extra).stdout
    found: dict[str, list[str]] = {}
    for line in out.splitlines():
        name, sep, value = line.partition(": ")
        if sep:
            found.setdefault(name, []).append(value)
    return found


def empty_directory(slapd: ManagedSlapd) -> None:
    """Delete every domain, token and gateway state entry (the DIT as slapd was made)."""
    base_dn = slapd.base_dn
    for base in (f"ou=domains,{base_dn}", f"ou=tokens,ou=gateway,{base_dn}",
                 f"ou=gateway,{base_dn}"):
        found = ldap_tool(slapd, "ldapsearch", "-LLL", "-s", "one", "-b", base, "1.1",
                          check=False)
        dns = [line[4:] for line in found.stdout.splitlines() if line.startswith("dn: ")]
        dns = [dn for dn in dns if not dn.startswith("ou=tokens,")]
        if dns:
            ldap_tool(slapd, "ldapdelete", "-r", *dns)



CRASH_STARTS = 6
T = TypeVar("T")


def surviving_crashes(slapd: ManagedSlapd, body: Callable[[], T]) -> tuple[T, int]:
    """``body()``, and how many times slapd died under it.

    slapd 2.5.13 segfaults now and then under LDAP transactions, in its own
    add code (bench/txn_stress.py, docs/benchmarks.md). The tests of the
    transaction path check the gateway's side; when slapd died under one
    (the body saw the server go away and the process is gone within 5 s),
    slapd is started again, as the supervisor does, and the body runs again
    from its start (it must begin by setting up what it needs), at most
    :data:`CRASH_STARTS` times. A server that went away but still runs is
    a failure like any other.
    """
    for crashes in range(CRASH_STARTS):
        try:
            return body(), crashes
        except (DirectoryUnavailable, ldap.SERVER_DOWN):
            wait_until(lambda: slapd.pid is None, "slapd to have died (it went away)", 5)
            slapd.start()
    raise AssertionError(f"slapd died {CRASH_STARTS} times in a row")


def own_slapd_fixture(name: str) -> Any:
    """A module-scoped ``slapd`` fixture of a test module's own (overriding the
    session's): for the transaction tests, so that a crash of slapd under a
    transaction stays in that module."""
    @pytest.fixture(scope="module")
    def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedSlapd]:
        with running_slapd(tmp_path_factory.mktemp(name)) as server:
            yield server
    return slapd


def transactions(outcome: str) -> float:
    """How many LDAP transactions this process's gateway code ended with ``outcome``
    (``committed``, ``refused``): mailgate_ldap_transactions_total."""
    value = metrics.get().registry.get_sample_value("mailgate_ldap_transactions_total",
                                                   {"outcome": outcome})
    return value or 0.0
