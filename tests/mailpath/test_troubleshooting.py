"""docs/troubleshooting.md: every command on the page, run against the real mail stack.

The page's ``sh setup`` block names a mail host's paths; it is the one block
not run as written: this test gives every variable it sets (and the settings
``/etc/mailgate/mailgate.env`` would hold) the values of the test's own
gateway, slapd, Postfix maps, Dovecot and mail log, and fails if the block
sets a name it does not know. Every other ``sh`` block runs as written in
bash (``set -e``: each command must succeed), with ``mailgate`` on PATH, after
the state the page describes was made: alice, bob, office, the catch-all, a
delivered message, a partial sync run from a real Basic JSON source, and a
replica (the provider itself, so current). What the output must show is
checked per walkthrough.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.app import create_app
from gateway.mail import MailDirectory
from gateway.services import current
from gateway.settings import Settings
from gateway.slapd import ManagedSlapd

from .mailstack import ALLOW_UNINDEXED, MailStack, _clean_env
from .test_mail_path import subject
from tests.support import httpsserver
from tests.support.api import LiveGateway, serving
from tests.support.constants import ADMIN_TOKEN, BASE_DN
from tests.support.sync import CHEAP_HASH

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "troubleshooting.md"
BLOCK = re.compile(r"^```([^\n]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
ASSIGNED = re.compile(r"(?:^|[\s;])([A-Z_][A-Z0-9_]*)=")


def blocks() -> list[tuple[str, str]]:
    return [(info.strip(), body) for info, body in BLOCK.findall(PAGE.read_text("utf-8"))]


def test_the_page_has_one_setup_block_and_only_shell_commands() -> None:
    infos = [info for info, _ in blocks()]
    assert infos.count("sh setup") == 1 and infos[0] == "sh setup"
    assert set(infos) == {"sh", "sh setup"}, infos
    assert infos.count("sh") >= 10


@pytest.fixture
def gateway(settings: Settings, slapd: ManagedSlapd, tmp_path: Path) -> Iterator[LiveGateway]:
    """The gateway over HTTPS, with the provider itself as its one replica."""
    app = create_app(settings.replace(ldap_replica_urls=(slapd.url,)))
    try:
        with serving(app, tmp_path / "tls") as live:
            yield live
    finally:
        current(app).directory.close()


def test_every_command_of_the_troubleshooting_page_runs(
        mail_stack: MailStack, gateway: LiveGateway, mail: MailDirectory,
        slapd: ManagedSlapd, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    # Not this page's searches: a sync run of some of the domains reads them
    # with a substring filter on mail (gateway/sync/current.py), unindexed.
    request.node.stash[ALLOW_UNINDEXED] = True
    # The state the page describes.
    mail.create_account("alice", "example.com", "alice pw", subaddress_extension=True,
                        spoofing_whitelist="office@example.com,skylime.net")
    mail.create_account("bob", "example.com", "bob pw", submission_disabled=True)
    mail.create_account("carol", "example.org", "carol pw")
    mail.create_alias("office", "example.com", "alice@example.com,bob@example.com")
    mail.create_alias("*", "example.com", "alice@example.com")
    delivered = subject()
    assert mail_stack.send25("someone@outside.test", ["alice@example.com"],
                             subject=delivered).sent
    mail_stack.wait_for_mail("alice@example.com", "alice pw", delivered)

    token_file = tmp_path / "admin-token"
    token_file.write_text(ADMIN_TOKEN, encoding="utf-8")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "mailgate"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m gateway.cli "$@"\n', encoding="utf-8")
    shim.chmod(0o755)
    docs, server = httpsserver.start(tmp_path)
    try:
        # A source with one entry the sync must skip (a plain-text password): partial.
        source = docs.serve("/mail.json", {"example.net": {"account": [
            {"name": "dan", "password": CHEAP_HASH},
            {"name": "eve", "password": "plain text"}]}})
        values = {
            "MAILGATE_API_URL": gateway.url,
            "MAILGATE_API_TOKEN_FILE": str(token_file),
            "MAILGATE_API_CA_FILE": str(gateway.ca),
            "G": gateway.url, "T": ADMIN_TOKEN, "C": f"--cacert {gateway.ca}",
            "POSTFIX": str(mail_stack.postfix_dir),
            "MAPS": str(mail_stack.postfix_dir / "mailgate"),
            "DOVECOT": str(mail_stack.dovecot_conf), "MAILLOG": str(mail_stack.maillog),
            "LDAP": slapd.url, "BASE": BASE_DN,
            "GW_DN": slapd.service_dn("gateway"), "GW_PW": str(slapd.password_file("gateway")),
            "REPLICA": slapd.url,
        }
        server_settings = {   # what /etc/mailgate/mailgate.env holds for mailgate audit/sync
            "MAILGATE_LDAP_URL": slapd.url, "MAILGATE_LDAP_BASE_DN": BASE_DN,
            "MAILGATE_LDAP_PASSWORD_FILE": str(slapd.password_file("gateway")),
            "MAILGATE_ADMIN_TOKEN_FILE": str(token_file), "MAILGATE_DATA_DIR": str(tmp_path),
            "MAILGATE_JSON_URLS": source, "MAILGATE_JSON_CA_FILE": str(docs.ca_file),
            "MAILGATE_PASSWORD_ROUNDS": "1000",
        }
        setup = blocks()[0][1]
        assert ". /etc/mailgate/mailgate.env" in setup
        assert set(ASSIGNED.findall(setup)) == set(values), "the test must give every variable"
        env = {**_clean_env(), **values, **server_settings,
               "PATH": f"{bin_dir}:{os.environ['PATH']}",
               "PYTHONPATH": str(ROOT), "XDG_CONFIG_HOME": str(tmp_path / "no-config")}
        # The partial run the sync walkthrough reads (a real run of the real source).
        ran = subprocess.run(["mailgate", "sync", "--once"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=120, check=False)
        assert ran.returncode == 1 and "sync partial" in ran.stdout, ran.stdout + ran.stderr

        outputs = []
        for info, body in blocks():
            if info != "sh":
                continue
            done = subprocess.run(["bash", "-e", "-c", body], env=env, cwd=tmp_path,
                                  capture_output=True, text=True, timeout=120, check=False)
            assert done.returncode == 0, f"{body}\n--- failed:\n{done.stdout}{done.stderr}"
            assert done.stdout.strip(), f"{body}\n--- printed nothing"
            outputs.append(done.stdout)
    finally:
        server.shutdown()
        server.server_close()
    text = "\n".join(outputs)
    print(text)
    assert ADMIN_TOKEN not in text
    # 1. mail did not arrive
    assert "alice+news@example.com: subaddress" in text
    assert "nobody@example.org: unknown" in text
    assert "1: no account or alias" in text and "status=sent" in text
    # 2. cannot send as
    assert "MAIL FROM office@example.com: allowed" in text
    assert "MAIL FROM bob@example.com: refused" in text and "553 5.7.1" in text
    assert "REJECT sending is disabled for this account" in text
    # 3. login fails
    assert f"home\t{mail_stack.mail_root / 'example.com' / 'alice'}" in text or \
        str(mail_stack.mail_root / "example.com" / "alice") in text
    assert '{"status": "ready"}' in text.replace("\n", "") or '"ready"' in text
    # 4. the sync is partial
    assert '"result": "partial"' in text and "eve" in text
    assert 'mailgate_sync_last_result{result="partial"} 1.0' in text
    # 5. the replica (the provider itself: current)
    assert f'mailgate_replica_up{{replica="{slapd.url}"}} 1.0' in text
    assert f'mailgate_replica_lag_seconds{{replica="{slapd.url}"}} 0.0' in text
    assert len(re.findall(r"^contextCSN: \d{14}\.\d{6}Z#", text, re.MULTILINE)) >= 2
