"""Fixtures of the mail-path tests: slapd at debug level "filter", Postfix, Dovecot, milters.

``slapd`` is overridden here: the same factory as tests/conftest.py
(tests.support.slapd.running_slapd), but started with ``-d filter``, so that
its log names every search that a missing index turns into a scan ("... not
indexed"); an autouse fixture fails any mail-path test during which one
happened. The root ``settings``, ``live_gateway`` etc. fixtures pick this
slapd up for the tests in this folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.slapd import ManagedSlapd

from .mailstack import ALLOW_UNINDEXED, MailStack
from tests.support.constants import BASE_DN
from tests.support.slapd import running_slapd


@pytest.fixture(scope="session")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedSlapd]:
    with running_slapd(tmp_path_factory.mktemp("slapd-filter-log"),
                       debug_level="filter") as server:
        yield server


@pytest.fixture(scope="session")
def mail_stack(slapd: ManagedSlapd) -> Iterator[MailStack]:
    # Not under pytest's tmp dir: that is mode 0700 and the mail user (nobody)
    # and Postfix's unprivileged daemons must traverse the parents.
    root = Path(tempfile.mkdtemp(prefix="mailgate-mailpath-"))
    os.chmod(root, 0o755)  # noqa: S103 (traversable by the mail user)
    stack = MailStack(root, slapd, BASE_DN)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        if os.environ.get("MAILGATE_KEEP_MAILPATH"):
            print(f"mail-path files kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True)
def every_filter_indexed(slapd: ManagedSlapd, request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if slapd logged an unindexed search while it ran."""
    start = slapd.log_path.stat().st_size if slapd.log_path.exists() else 0
    yield
    if request.node.stash.get(ALLOW_UNINDEXED, False):
        return
    with open(slapd.log_path, "rb") as log:
        log.seek(start)
        text = log.read().decode("utf-8", "replace")
    unindexed = [line for line in text.splitlines() if "not indexed" in line]
    assert not unindexed, "unindexed LDAP searches:\n" + "\n".join(unindexed[:20])
