"""``GET /mail/explain/`` and ``mailgate explain``: input, rights, and the answers' shape.

What the answers must be (the same as Postfix's maps and the milter) is tested
against the real maps in tests/mailpath/test_explain.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway import cli
from gateway.mail import MailDirectory
from gateway.tokens import TokenStore

from tests.support.api import Client, LiveGateway


def get(client: Client, **params: str) -> Any:
    return client.get("/mail/explain/", query_string=params)


@pytest.mark.parametrize(("params", "field"), [
    ({}, "address"),
    ({"address": "not an address"}, "address"),
    ({"address": "a@b"}, "address"),
    ({"address": "alice@example.com", "from": ""}, "from"),
    ({"address": "alice@example.com", "from": "a, b@example.com"}, "from"),
    ({"address": "alice@example.com", "to": "x"}, "to"),
])
def test_bad_input_is_a_400_naming_the_field(client: Client, params: dict[str, str],
                                             field: str) -> None:
    answer = get(client, **params)
    assert answer.status_code == 400, answer.get_json()
    assert field in answer.get_json()["errors"], answer.get_json()


def test_tokens_need_rights_on_the_address_domain_and_read_only_is_enough(
        client: Client, mail: MailDirectory, directory: object) -> None:
    mail.create_account("alice", "example.com", "pw")
    store = TokenStore(directory, None)  # type: ignore[arg-type]
    _info, other = store.create(["example.org"])
    _info, reader = store.create(["example.com"], read_only=True)
    assert get(client.with_token(other), address="alice@example.com").status_code == 403
    assert get(client.with_token(None), address="alice@example.com").status_code == 401
    answer = get(client.with_token(reader), address="alice@example.com",
                 **{"from": "boss@example.org"})
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["delivery"] == "mailbox" and body["submission"]["disabled"] is False
    # A sender outside the token's domains is only asked about, never read.
    assert body["sender"]["envelope"]["allowed"] is False
    assert body["sender"]["envelope"]["smtp"].startswith("553 5.7.1 <boss@example.org>")


def test_the_answer_is_in_the_openapi_document(client: Client) -> None:
    spec = client.get("/swagger.json").get_json()
    operation = spec["paths"]["/mail/explain/"]["get"]
    assert {p["name"] for p in operation["parameters"]} == {"address", "from"}
    schema = operation["responses"]["200"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert set(spec["definitions"][schema]["properties"]) == {
        "address", "hosted", "delivery", "smtp", "rule", "lookup", "recipients",
        "submission", "sender"}


def test_the_command_prints_the_rules(live_gateway: LiveGateway, mail: MailDirectory,
                                      capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    mail.create_account("alice", "example.com", "pw", spoofing_whitelist="example.net")
    token = tmp_path / "token"
    token.write_text(live_gateway.admin_token)
    for name in ("MAILGATE_API_URL", "MAILGATE_API_TOKEN", "MAILGATE_API_TOKEN_FILE",
                 "MAILGATE_API_CA_FILE", "MAILGATE_CLIENT_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    common = ["--url", live_gateway.url, "--ca-file", str(live_gateway.ca),
              "--token-file", str(token)]
    assert cli.main(["explain", "Alice@Example.com", "--from", "x@example.net",
                     *common]) == 0
    out = capsys.readouterr().out
    assert out.startswith("alice@example.com: mailbox\n")
    assert "ldap-accounts.cf maps it to itself" in out
    assert "MAIL FROM x@example.net: allowed" in out
    assert "holds the domain example.net" in out
    assert cli.main(["explain", "nobody@example.com", "--json", *common]) == 0
    assert '"delivery": "unknown"' in capsys.readouterr().out
    assert cli.main(["explain", "bad", *common]) == 1
    assert "address:" in capsys.readouterr().err
