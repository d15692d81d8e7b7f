"""``mailgate account usage`` and ``mailgate domain usage``: the terminal client
(the real console script, in a subprocess with no LDAP setting) against the
gateway with the mail stack's real Dovecot behind its usage routes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from . import test_usage_routes
from .mailstack import MailStack
from .test_quota import deliver, dovecot
from tests.support.api import LiveGateway
from tests.support.constants import ADMIN_TOKEN

pytestmark = pytest.mark.timeout(180)

gateway = test_usage_routes.gateway     # the gateway with Dovecot configured (a fixture)
MIB = 2**20


def test_usage_commands_show_what_dovecot_counts(gateway: LiveGateway, mail_stack: MailStack,
                                                 tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}
    token_file = tmp_path / "token"
    token_file.write_text(ADMIN_TOKEN)
    env.update(XDG_CONFIG_HOME=str(tmp_path / "no-config"), MAILGATE_API_URL=gateway.url,
               MAILGATE_API_TOKEN_FILE=str(token_file), MAILGATE_API_CA_FILE=str(gateway.ca))

    def mailgate(*argv: str, stdin: str = "") -> tuple[int, str]:
        done = subprocess.run([sys.executable, "-m", "gateway.cli", *argv], input=stdin,
                              env=env, capture_output=True, text=True, timeout=60)
        assert ADMIN_TOKEN not in done.stdout + done.stderr
        return done.returncode, done.stdout + done.stderr

    domain = f"c{uuid.uuid4().hex[:8]}.example"
    code, out = mailgate("domain", "create", domain, "--max-quota", "1000M",
                         "--default-quota", "100M")
    assert code == 0, out
    a, b = f"a@{domain}", f"b@{domain}"
    assert mailgate("account", "create", a, "--password-stdin", "--quota", "200M",
                    stdin="usage pw\n")[0] == 0
    assert mailgate("account", "create", b, "--password-stdin", stdin="usage pw\n")[0] == 0
    reader = dovecot(mail_stack)
    for address in (a, a, b):
        deliver(mail_stack, reader, address)
    truth = {address: reader.usage(address) for address in (a, b)}

    code, out = mailgate("account", "usage", a, "--json")
    assert code == 0, out
    assert json.loads(out) == {"quota": 200 * MIB, "used_bytes": truth[a].used_bytes,
                               "used_messages": 2,
                               "percent": round(100 * truth[a].used_bytes / (200 * MIB), 1)}
    code, out = mailgate("account", "usage", a)
    assert code == 0, out
    assert re.search(r"^quota: +200 MiB$", out, re.MULTILINE)
    assert re.search(rf"^used_bytes: +[\d.]+ KiB \({truth[a].used_bytes} bytes\)$", out,
                     re.MULTILINE)
    assert re.search(r"^used_messages: +2$", out, re.MULTILINE)
    assert re.search(r"^percent: +0.0%$", out, re.MULTILINE)

    used = truth[a].used_bytes + truth[b].used_bytes
    code, out = mailgate("domain", "usage", domain, "--json")
    assert code == 0, out
    assert json.loads(out) == {"name": domain, "accounts": 2, "quota_allocated": 300 * MIB,
                               "used_bytes": used, "used_messages": 3,
                               "percent": round(100 * used / (1000 * MIB), 1)}
    code, out = mailgate("domain", "usage", domain)
    assert code == 0, out
    assert re.search(r"^quota_allocated: +300 MiB$", out, re.MULTILINE)
    assert re.search(r"^used_messages: +3$", out, re.MULTILINE)
    code, out = mailgate("account", "usage", f"nobody@{domain}")
    assert code == 3 and out.startswith("mailgate: ")
