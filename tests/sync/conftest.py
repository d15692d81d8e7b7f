"""Fixtures of the sync tests: the HTTPS document server, runners, write counting."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from passlib.hash import md5_crypt, sha512_crypt

from gateway.settings import Settings
from gateway.sync.runner import SyncRunner

from . import httpsserver
from .httpsserver import DocServer

SEED_HASH = "$1$9hW1N3SC$J6vfo890zc50GC1jYHP211"   # SPEC.md section 2 (password unknown)
BOB_PASSWORD = "bob-secret-100000"
BOB_HASH = sha512_crypt.using(rounds=100_000).hash(BOB_PASSWORD)
CAROL_PASSWORD = "carol-md5"
CAROL_HASH = md5_crypt.hash(CAROL_PASSWORD)
CHEAP_HASH = sha512_crypt.using(rounds=1000).hash("cheap")


def spec_document() -> dict[str, object]:
    """The document of SPEC.md section 2 (bob's hash made here, rounds=100000)."""
    return {
        "example.com": {
            "account": [
                {"name": "alice", "password": SEED_HASH},
                {"name": "bob", "password": BOB_HASH},
            ],
            "alias": [
                {"name": "office", "to": "alice@example.com,bob@example.com"},
            ],
        },
    }


@pytest.fixture(scope="session")
def https_docs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocServer]:
    docs, server = httpsserver.start(tmp_path_factory.mktemp("https"))
    try:
        yield docs
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def docs(https_docs: DocServer) -> DocServer:
    https_docs.reset()
    return https_docs


@dataclass
class Writes:
    """Every LDAP write request a Directory sends: (operation, dn)."""

    ops: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, operation: str, dn: str) -> None:
        self.ops.append((operation, dn))

    def mail(self) -> list[tuple[str, str]]:
        """Only writes to the mail subtree (not the lock and status entries)."""
        return [(op, dn) for op, dn in self.ops if ",ou=domains," in dn]

    def clear(self) -> None:
        self.ops.clear()


MakeRunner = Callable[..., SyncRunner]


@pytest.fixture
def make_runner(settings: Settings, docs: DocServer) -> Iterator[MakeRunner]:
    """``make_runner("/a.json", "/b.json", sync_max_delete_fraction=1.0)``: a SyncRunner
    for those paths of the document server, with write counting on ``runner.writes``."""
    made: list[SyncRunner] = []

    def make(*paths: str, **changes: object) -> SyncRunner:
        urls = tuple(p if p.startswith("https:") else docs.url(p) for p in paths)
        runner = SyncRunner(settings.replace(json_urls=urls, json_ca_file=docs.ca_file,
                                             **changes))
        writes = Writes()
        runner.directory.on_write = writes
        runner.writes = writes  # type: ignore[attr-defined]
        made.append(runner)
        return runner

    yield make
    for runner in made:
        runner.close()
