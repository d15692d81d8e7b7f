"""Fixtures of the sync tests: the HTTPS document server, runners with write counting.

The document of SPEC.md, its hashes and Writes are in tests/support/sync.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.settings import Settings
from gateway.sync.runner import SyncRunner

from tests.support import httpsserver
from tests.support.httpsserver import DocServer
from tests.support.sync import MakeRunner, Writes


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
