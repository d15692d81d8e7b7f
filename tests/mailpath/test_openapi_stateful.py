"""Issue 20: the stateful fuzzing of tests/test_openapi_fuzz.py over every route,
the usage routes included, with the gateway reading the real Dovecot of the
mail stack (its doveadm HTTP API): 0 server errors, 0 schema violations."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from schemathesis.openapi import from_wsgi

from gateway.app import create_app
from gateway.services import current
from gateway.settings import Settings
from gateway.slapd import ManagedSlapd

from .mailstack import MailStack
from tests.test_openapi_fuzz import stateful_workflows

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def app(settings: Settings, mail_stack: MailStack) -> Iterator[Any]:
    made = create_app(dataclasses.replace(
        settings, dovecot_url=mail_stack.doveadm_url, dovecot_api_key=mail_stack.doveadm_key,
        allowed_hosts=("localhost",)))
    yield made
    current(made).directory.close()


def test_stateful_workflows_with_dovecot(app: Any, slapd: ManagedSlapd) -> None:
    schema = from_wsgi("/swagger.json", app)
    assert any("/usage/" in r.ok().label for r in schema.get_all_operations())
    stateful_workflows(app, slapd, schema)
