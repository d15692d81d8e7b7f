"""Issue 20 (SPEC section 9): clients that follow ``next`` as it is page through
100 000 accounts served by ``mailgate serve``.

The accounts are loaded offline (slapadd, a few seconds) into a slapd of this
module's own; the gateway is reached at its MAILGATE_LISTEN address, so the
links are absolute URLs to it. Two clients follow them:

* the original service's client: ``curl -u admin:TOKEN`` asking for pages of
  10 000, then fetching each ``next`` URL with curl as it is;
* a generic Django REST framework pager, ``while url: page = get(url).json();
  url = page["next"]`` (requests), in pages of 1000.

Both loops are bounded in pages; each request has a timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from passlib.hash import sha512_crypt

from gateway.slapd import ManagedSlapd, free_port

from tests.support.constants import ADMIN_TOKEN, BASE_DN
from tests.support.process import terminate
from tests.support.slapd import running_slapd
from tests.support.wait import wait_until

ACCOUNTS = 100_000
PER_DOMAIN = 1000


def _ldif(path: Path) -> Path:
    crypt = sha512_crypt.using(rounds=1000).hash("pw")
    with path.open("w", encoding="utf-8") as out:
        for d in range(ACCOUNTS // PER_DOMAIN):
            domain = f"d{d:03d}.example"
            out.write(f"dn: dc={domain},ou=domains,{BASE_DN}\nobjectClass: mailgateDomain\n"
                      f"dc: {domain}\n\n")
            for i in range(PER_DOMAIN):
                address = f"u{i:04d}@{domain}"
                out.write(f"dn: mail={address},dc={domain},ou=domains,{BASE_DN}\n"
                          f"objectClass: mailgateAccount\nmail: {address}\n"
                          f"userPassword: {{CRYPT}}{crypt}\n\n")
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(URL, CA file) of ``mailgate serve`` on a directory of 100 000 accounts."""
    root = tmp_path_factory.mktemp("pages100k")
    loaded = ManagedSlapd(root / "ldap", BASE_DN)
    loaded.ensure_initialised()
    subprocess.run(["slapadd", "-q", "-n1", "-F", str(loaded.config_dir), "-l",
                    str(_ldif(root / "accounts.ldif"))], check=True, capture_output=True,
                   timeout=600)
    with running_slapd(root / "ldap") as slapd:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}
        env.update(MAILGATE_LDAP_URL=slapd.url, MAILGATE_LDAP_BASE_DN=BASE_DN,
                   MAILGATE_LDAP_PASSWORD_FILE=str(slapd.password_file("gateway")),
                   MAILGATE_ADMIN_TOKEN=ADMIN_TOKEN, MAILGATE_DATA_DIR=str(root / "gw"),
                   MAILGATE_LISTEN=f"127.0.0.1:{port}", MAILGATE_WORKERS="2",
                   MAILGATE_LOG_LEVEL="WARNING")
        with (root / "serve.log").open("w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve"], env=env,
                                    stdout=log, stderr=subprocess.STDOUT)
            try:
                url, ca = f"https://127.0.0.1:{port}", root / "gw" / "tls" / "cert.pem"

                def ready() -> bool:
                    assert proc.poll() is None, (root / "serve.log").read_text()
                    try:
                        return requests.get(url + "/readyz", verify=str(ca),
                                            timeout=5).status_code == 200
                    except (requests.ConnectionError, OSError):
                        return False

                wait_until(ready, "the gateway to be ready", timeout=90, interval=0.5)
                yield url, ca
            finally:
                terminate(proc)


def _check_all(ids: list[str]) -> None:
    assert len(ids) == ACCOUNTS and len(set(ids)) == ACCOUNTS
    assert ids[0] == "u0000@d000.example" and ids[-1] == "u0999@d099.example"


def test_the_original_client_follows_next_with_curl(served: tuple[str, Path]) -> None:
    url, ca = served

    def curl(link: str) -> dict[str, Any]:
        done = subprocess.run(["curl", "-sS", "--fail", "--cacert", str(ca), "-u",
                               f"admin:{ADMIN_TOKEN}", link], capture_output=True, text=True,
                              timeout=300, check=True)
        return dict(json.loads(done.stdout))

    ids: list[str] = []
    link: str | None = f"{url}/mail/account/?page_size=10000"
    for _ in range(ACCOUNTS // 10_000 + 1):   # bounded: one page more than needed
        if link is None:
            break
        page = curl(link)
        assert page["count"] == ACCOUNTS
        ids.extend(a["id"] for a in page["results"])
        link = page["next"]
        assert link is None or link.startswith(f"{url}/mail/account/?"), link
    assert link is None
    _check_all(ids)


def test_a_generic_drf_pager_pages_through_everything(served: tuple[str, Path]) -> None:
    url, ca = served
    session = requests.Session()
    session.auth = ("admin", ADMIN_TOKEN)
    ids: list[str] = []
    next_url: str | None = f"{url}/mail/account/?page_size=1000"
    pages = 0
    while next_url and pages <= ACCOUNTS // 1000:   # bounded
        page = session.get(next_url, verify=str(ca), timeout=120).json()
        ids.extend(a["id"] for a in page["results"])
        next_url = page["next"]
        pages += 1
    assert next_url is None and pages == ACCOUNTS // 1000
    _check_all(ids)
    # Walking back with previous works the same way.
    last = session.get(f"{url}/mail/account/?page_size=1000&page=last", verify=str(ca),
                       timeout=120).json()
    back = session.get(last["previous"], verify=str(ca), timeout=120).json()
    assert back["results"][0]["id"] == ids[-2000]
