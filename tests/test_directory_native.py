"""LDAP is the only state: LDAP tools and the API see the same entries; the DIT
keeps one entry per address under concurrency; values cannot inject filters or
DNs; the gateway rides out a slapd restart."""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
from pathlib import Path

import ldap
import pytest
from ldap.controls import SimplePagedResultsControl

from gateway.app import create_app
from gateway.directory import Directory
from gateway.directory.views import collect
from gateway.services import current
from gateway.settings import Settings
from gateway.slapd import ManagedSlapd

from tests.support.api import Client, LiveGateway
from tests.support.constants import ADMIN_TOKEN, BASE_DN, TEST_ROUNDS
from tests.support.slapd import ldap_tool, running_slapd

HAND_MADE = f"""dn: dc=hand.example,ou=domains,{BASE_DN}
objectClass: mailgateDomain
dc: hand.example

dn: mail=carol@hand.example,dc=hand.example,ou=domains,{BASE_DN}
objectClass: mailgateAccount
mail: carol@hand.example
userPassword: {{CRYPT}}$1$9hW1N3SC$J6vfo890zc50GC1jYHP211
mailgateSenderAllowed: hand.example

dn: mail=team@hand.example,dc=hand.example,ou=domains,{BASE_DN}
objectClass: mailgateAlias
mail: team@hand.example
mailgateAliasTarget: carol@hand.example
mailgateAliasTarget: dave@elsewhere.example
"""


def test_entries_added_and_deleted_by_hand_show_in_the_api(client: Client,
                                                           slapd: ManagedSlapd) -> None:
    ldap_tool(slapd, "ldapadd", input=HAND_MADE)
    carol = client.get("/mail/account/carol@hand.example/")
    assert carol.status_code == 200
    assert carol.json["password"] == "$1$9hW1N3SC$J6vfo890zc50GC1jYHP211"
    assert carol.json["spoofing_whitelist"] == "hand.example"
    assert [a["id"] for a in client.get("/mail/account/").json["results"]] == [
        "carol@hand.example"]
    assert client.get("/mail/alias/team@hand.example/").json["to"] == (
        "carol@hand.example,dave@elsewhere.example")
    ldap_tool(slapd, "ldapmodify", input=(
        f"dn: mail=carol@hand.example,dc=hand.example,ou=domains,{BASE_DN}\n"
        "changetype: modify\nreplace: mailgateSubmissionDisabled\n"
        "mailgateSubmissionDisabled: TRUE\n"))
    assert client.get("/mail/account/carol@hand.example/").json["submission_disabled"] is True
    ldap_tool(slapd, "ldapdelete", f"mail=carol@hand.example,dc=hand.example,ou=domains,{BASE_DN}")
    assert client.get("/mail/account/carol@hand.example/").status_code == 404
    assert client.get("/mail/account/").json["count"] == 0
    # A domain entry made by hand is not removed by the API with its last address.
    assert client.delete("/mail/alias/team@hand.example/").status_code == 204
    kept = ldap_tool(slapd, "ldapsearch", "-LLL", "-s", "base", "-b",
                     f"dc=hand.example,ou=domains,{BASE_DN}")
    assert "dc: hand.example" in kept.stdout


def test_api_changes_are_visible_to_ldap_tools(client: Client, slapd: ManagedSlapd) -> None:
    assert client.post("/mail/account/", json={"name": "eve", "domain": "example.com",
                                               "password": "pw"}).status_code == 201
    found = ldap_tool(slapd, "ldapsearch", "-LLL", "-b", f"ou=domains,{BASE_DN}",
                      "(mail=eve@example.com)", "mail").stdout
    assert "mail: eve@example.com" in found


@pytest.mark.parametrize("kinds", [("account",) * 20, ("account", "alias") * 10])
def test_parallel_creates_of_one_address_make_exactly_one(live_gateway: LiveGateway,
                                                          slapd: ManagedSlapd,
                                                          kinds: tuple[str, ...]) -> None:
    def create(kind: str) -> int:
        if kind == "account":
            body = {"name": "race", "domain": "example.com", "password": "pw"}
        else:
            body = {"name": "race", "domain": "example.com", "to": "x@example.org"}
        return int(live_gateway("POST", f"/mail/{kind}/", json=body).status_code)  # type: ignore[attr-defined]

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(create, kinds))
    # One account and (SPEC.md section 7) one alias of the address at most: the
    # other attempts of each kind get 409, and LDAP holds ONE entry.
    roles = len(set(kinds))
    assert sorted(statuses) == [201] * roles + [409] * (len(kinds) - roles), statuses
    accounts = live_gateway("GET", "/mail/account/").json()  # type: ignore[attr-defined]
    aliases = live_gateway("GET", "/mail/alias/").json()  # type: ignore[attr-defined]
    assert accounts["count"] + aliases["count"] == roles
    found = ldap_tool(slapd, "ldapsearch", "-LLL", "-b", f"ou=domains,{BASE_DN}",
                      "(mail=race@example.com)", "1.1").stdout
    assert found.count("dn: ") == 1


INJECTIONS = ["*", "(", ")", "\\", "\x00", ",", "=", "+"]


@pytest.mark.parametrize("char", INJECTIONS)
def test_injection_attempts_in_every_field(client: Client, directory: Directory,
                                           slapd: ManagedSlapd, char: str) -> None:
    assert client.post("/mail/account/", json={"name": "victim", "domain": "example.com",
                                               "password": "pw"}).status_code == 201
    assert client.post("/mail/alias/", json={"name": "list", "domain": "example.com",
                                             "to": "victim@example.com"}).status_code == 201
    name = f"a{char}b"
    created = client.post("/mail/account/", json={"name": name, "domain": "example.com",
                                                  "password": f"p{char}w"})
    if char in "*=+":  # RFC 5321 atext: a valid local part, stored literally
        assert created.status_code == 201, created.json
        assert created.json["id"] == f"a{char}b@example.com"
        entry_id = f"a{char}b@example.com"
        assert client.get(f"/mail/account/{entry_id}/").json["name"] == name
        assert directory.compare_password(
            f"mail=a\\{char}b@example.com,dc=example.com,ou=domains,{BASE_DN}"
            if char in "=+" else f"mail={entry_id},dc=example.com,ou=domains,{BASE_DN}",
            f"p{char}w")
        # A wildcard in an id is a literal character, never a filter wildcard.
        assert client.get(f"/mail/account/a{char}@example.com/").status_code == 404
        assert client.delete(f"/mail/account/{entry_id}/").status_code == 204
    else:
        assert created.status_code == 400 and "name" in created.json["errors"]
    # Other fields: nothing malformed reaches LDAP, and no 500 anywhere.
    probes = [
        client.post("/mail/account/", json={"name": "x", "domain": f"ex{char}ample.com",
                                            "password": "pw"}),
        client.post("/mail/alias/", json={"name": "y", "domain": "example.com",
                                          "to": f"victim@exa{char}mple.com"}),
        client.post("/mail/alias/", json={"name": "z", "domain": "example.com",
                                          "to": f"v{char})(mail=*@example.com"}),
        client.put("/mail/alias/list@example.com/", json={"to": f"*{char}@example.com)"}),
        client.post("/mail/account/victim@example.com/set_spoofing_whitelist/",
                    json={"spoofing_whitelist": f"example.com{char}(mail=*)"}),
        client.get(f"/mail/account/?domain=example.com{char}"),
        client.get(f"/mail/account/?page={char}"),
        client.get(f"/mail/account/v{char}ictim@example.com/"),
        client.get(f"/mail/alias/*{char}@example.com/"),
        client.delete(f"/mail/account/*{char}/"),
    ]
    for response in probes:
        assert response.status_code in (400, 404), (response.status_code, response.json)
        assert "message" in response.json
    password = client.post("/mail/account/victim@example.com/set_password/",
                           json={"password": f"pa{char}ss" if char != "\x00" else "pa)(ss"})
    assert password.status_code == 200
    assert client.get("/mail/alias/list@example.com/").json["to"] == "victim@example.com"
    victim = client.get("/mail/account/victim@example.com/").json
    assert victim["spoofing_whitelist"] == ""
    listed = ldap_tool(slapd, "ldapsearch", "-LLL", "-b", f"ou=domains,{BASE_DN}",
                       "(|(objectClass=mailgateAccount)(objectClass=mailgateAlias))", "mail")
    assert sorted(line for line in listed.stdout.splitlines() if line.startswith("mail:")) == [
        "mail: list@example.com", "mail: victim@example.com"]


def test_gateway_answers_503_while_slapd_is_down_and_reconnects(tmp_path: Path) -> None:
    with running_slapd(tmp_path / "restart") as server:
        settings = Settings(ldap_url=server.url, ldap_base_dn=BASE_DN,
                            ldap_password=server.password("gateway"), admin_token=ADMIN_TOKEN,
                            password_rounds=TEST_ROUNDS, ldap_timeout=2.0)
        app = create_app(settings)
        client = Client(app)
        try:
            assert client.post("/mail/account/", json={"name": "alice", "domain": "example.com",
                                                       "password": "pw"}).status_code == 201
            assert client.get("/mail/account/alice@example.com/").status_code == 200
            with server.stopped():
                for path in ("/mail/account/alice@example.com/", "/mail/account/", "/readyz"):
                    down = client.get(path)
                    assert down.status_code == 503, path
                    assert down.headers["Retry-After"]
                    assert "LDAP" in down.json["message"]
                    assert "Traceback" not in down.get_data(as_text=True)
                created = client.post("/mail/account/", json={
                    "name": "bob", "domain": "example.com", "password": "pw"})
                assert created.status_code == 503
                assert client.get("/healthz").status_code == 200
            assert client.get("/mail/account/alice@example.com/").status_code == 200
            assert client.get("/readyz").status_code == 200
            assert client.post("/mail/account/", json={"name": "bob", "domain": "example.com",
                                                       "password": "pw"}).status_code == 201
        finally:
            current(app).directory.close()


def test_after_a_restart_no_request_fails_on_a_dead_pooled_connection(tmp_path: Path) -> None:
    with running_slapd(tmp_path / "pool") as server:
        directory = Directory(Settings(ldap_url=server.url, ldap_base_dn=BASE_DN,
                                       ldap_password=server.password("gateway"),
                                       ldap_timeout=2.0))
        try:
            # Four connections in the pool, all idle.
            with contextlib.ExitStack() as stack:
                for _ in range(4):
                    stack.enter_context(directory.pool.borrow())
            assert directory.pool.idle_count() == 4
            server.restart()
            for attempt in range(4):
                directory.ping()   # each would have met a dead connection
                assert directory.pool.idle_count() == 1, attempt
        finally:
            directory.close()


def test_a_big_search_read_one_message_at_a_time_is_complete(directory: Directory,
                                                             slapd: ManagedSlapd) -> None:
    """views.collect (every list page and the sync's read) gets what ldapsearch
    gets, through python-ldap's C call and, should a python-ldap release drop
    it, through the public wrapper; the final result's controls decoded both
    ways; and it keeps to the connection's timeout for the whole answer."""
    count = 1200
    ldif = [f"dn: dc=bulk.example,ou=domains,{BASE_DN}\nobjectClass: mailgateDomain\n"
            "dc: bulk.example\n"]
    for i in range(count):
        ldif.append(f"dn: mail=u{i:04d}@bulk.example,dc=bulk.example,ou=domains,{BASE_DN}\n"
                    f"objectClass: mailgateAccount\nmail: u{i:04d}@bulk.example\n"
                    f"userPassword: {{CRYPT}}$1$salt{i}$hash\n")
    ldap_tool(slapd, "ldapadd", input="\n".join(ldif))
    listed = ldap_tool(slapd, "ldapsearch", "-LLL", "-o", "ldif-wrap=no", "-b",
                       f"dc=bulk.example,ou=domains,{BASE_DN}",
                       "(objectClass=mailgateAccount)", "mail", "userPassword").stdout
    expected = {block.splitlines()[0][4:]: sorted(ldif_value(line)
                                                  for line in block.splitlines()[1:])
                for block in listed.strip().split("\n\n")}
    assert len(expected) == count

    class Wrapped:
        """The connection as python-ldap's public methods show it (no ``_l``)."""

        def __init__(self, conn: object) -> None:
            self.timeout = conn.timeout  # type: ignore[attr-defined]
            self.result3 = conn.result3  # type: ignore[attr-defined]

    paging = SimplePagedResultsControl(True, size=count + 10, cookie="")
    with directory.pool.borrow() as (conn, _reused):
        assert hasattr(conn, "_l"), "python-ldap's C connection moved: lists take the slow path"
        for reader in (conn, Wrapped(conn)):
            msgid = conn.search_ext(f"dc=bulk.example,ou=domains,{BASE_DN}",
                                    ldap.SCOPE_SUBTREE, "(objectClass=mailgateAccount)",
                                    ["mail", "userPassword"], serverctrls=[paging])
            found, controls = collect(reader, msgid, lambda e: (e.dn, sorted(
                f"{name}: {value.decode()}" for name, values in e.attrs.items()
                for value in values)))
            assert dict(found) == expected and len(found) == count
            # All in one page: slapd's paged results control says no more.
            assert [c.cookie for c in controls
                    if isinstance(c, SimplePagedResultsControl)] == [b""]
    # The timeout bounds the whole answer, not each message: with none left,
    # the read stops with TIMEOUT however fast the entries come.
    conn = directory.pool.connect()
    try:
        conn.timeout = 0
        msgid = conn.search_ext(f"dc=bulk.example,ou=domains,{BASE_DN}", ldap.SCOPE_SUBTREE,
                                "(objectClass=mailgateAccount)", ["mail"])
        with pytest.raises(ldap.TIMEOUT):
            collect(conn, msgid, lambda e: e.dn)
    finally:
        conn.unbind_s()


def ldif_value(line: str) -> str:
    """``name: value`` of an LDIF line, a base64 value (``name:: ...``) decoded."""
    name, _, value = line.partition(": ")
    if name.endswith(":"):
        return f"{name[:-1]}: {base64.b64decode(value).decode()}"
    return line
