"""``mailgate account|alias|domain``: the terminal client against a real gateway over HTTPS.

The gateway is ``live_gateway`` (the real app, real TLS, a real slapd); the
client is the real console script, run in-process through ``main()`` or as a
subprocess with an environment that holds no LDAP setting at all.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pty
import re
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from passlib.hash import sha512_crypt

from gateway.cli import build_parser, main
from gateway.cli.remote import print_item, rows
from gateway.client import EXIT_CODES, load_config
from gateway.directory import Directory
from gateway.slapd import ManagedSlapd, free_port
from gateway.tokens import TokenStore

from tests.support.api import LiveGateway
from tests.support.constants import ADMIN_TOKEN, BASE_DN
from tests.support.slapd import ldap_tool
from tests.test_serve import Served

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(live_gateway: LiveGateway, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Run:
    """``cli("account", "list", stdin="...")`` -> (exit code, stdout, stderr)."""
    for name in list(os.environ):
        if name.startswith("MAILGATE_") or name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-config"))
    monkeypatch.chdir(tmp_path)   # no ./var of a development gateway (tested below)
    monkeypatch.setenv("MAILGATE_API_URL", live_gateway.url)
    monkeypatch.setenv("MAILGATE_API_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("MAILGATE_API_CA_FILE", str(live_gateway.ca))
    # The gateway serves from a thread of this process: log handlers an earlier
    # test's main() installed (on a stream since closed) must not write into
    # what the client's stderr is checked for. pytest's own handlers stay.
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [h for h in root.handlers
                                           if type(h).__module__.startswith("_pytest")])

    def run(*argv: str, stdin: str = "") -> tuple[int, str, str]:
        import io

        capsys.readouterr()
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main(list(argv))
        out, err = capsys.readouterr()
        assert ADMIN_TOKEN not in out + err
        return code, out, err

    return run


def test_account_commands(cli: Run, live_gateway: LiveGateway) -> None:
    code, out, err = cli("account", "create", "Alice@Example.com", "--password-stdin",
                         "--whitelist", "office@example.com", stdin="first-secret\n")
    assert (code, err) == (0, "")
    assert re.search(r"^id: +alice@example.com$", out, re.MULTILINE)
    assert re.search(r"^spoofing_whitelist: +office@example.com$", out, re.MULTILINE)
    assert "first-secret" not in out and "$6$" not in out     # no hash on a terminal

    code, out, _ = cli("account", "show", "alice@example.com", "--json")
    shown = json.loads(out)
    assert code == 0 and shown["id"] == "alice@example.com"
    assert sha512_crypt.verify("first-secret", shown["password"])

    cli("account", "create", "bob@example.com", "--password-stdin", "--submission-disabled",
        stdin="bob-secret\n")
    code, out, _ = cli("account", "list")
    assert code == 0
    assert out.splitlines() == [
        "ACCOUNT            QUOTA      SUBMISSION DISABLED  SPOOFING WHITELIST",
        "alice@example.com  unlimited  no                   office@example.com",
        "bob@example.com    unlimited  yes"]
    code, out, _ = cli("account", "list", "--json", "--domain", "example.com")
    assert [a["id"] for a in json.loads(out)] == ["alice@example.com", "bob@example.com"]

    code, out, _ = cli("account", "passwd", "alice@example.com", "--password-stdin", "--json",
                       stdin="second-secret\n")
    assert code == 0 and sha512_crypt.verify("second-secret", json.loads(out)["password"])

    code, out, _ = cli("account", "enable-submission", "bob@example.com", "--json")
    assert code == 0 and json.loads(out)["submission_disabled"] is False
    code, out, _ = cli("account", "disable-submission", "bob@example.com")
    assert code == 0 and re.search(r"^submission_disabled: +yes$", out, re.MULTILINE)

    code, out, _ = cli("account", "whitelist", "bob@example.com", "example.org",
                       "x@example.net", "--json")
    assert code == 0 and json.loads(out)["spoofing_whitelist"] == "example.org,x@example.net"
    code, out, _ = cli("account", "whitelist", "bob@example.com")
    assert (code, out) == (0, "example.org\nx@example.net\n")
    code, out, _ = cli("account", "whitelist", "bob@example.com", "--clear", "--json")
    assert code == 0 and json.loads(out)["spoofing_whitelist"] == ""

    code, out, _ = cli("account", "delete", "BOB@example.com")
    assert (code, out) == (0, "deleted account BOB@example.com\n")
    code, out, err = cli("account", "show", "bob@example.com")
    assert (code, out) == (3, "")
    assert err.startswith("mailgate: ")
    assert live_gateway("GET", "/mail/account/bob@example.com/").status_code == 404  # type: ignore[attr-defined]
    code, out, _ = cli("account", "delete", "bob@example.com", "--json")
    assert code == 3


def test_alias_commands(cli: Run) -> None:
    code, out, _ = cli("alias", "create", "office@example.com", "alice@example.com",
                       "bob@example.com,carol@example.net", "--json")
    assert code == 0
    assert json.loads(out) == {"id": "office@example.com", "name": "office",
                               "domain": "example.com",
                               "to": "alice@example.com,bob@example.com,carol@example.net"}
    code, out, _ = cli("alias", "show", "office@example.com")
    assert code == 0 and re.search(r"^to: +alice@example.com,bob@example.com,carol@example.net$",
                                   out, re.MULTILINE)
    code, out, _ = cli("alias", "set", "office@example.com", "dave@example.com")
    assert code == 0 and re.search(r"^to: +dave@example.com$", out, re.MULTILINE)
    code, out, _ = cli("alias", "list")
    assert out.splitlines() == ["ALIAS               TO",
                                "office@example.com  dave@example.com"]
    assert cli("alias", "delete", "office@example.com")[0] == 0
    assert cli("alias", "show", "office@example.com")[0] == 3
    assert cli("alias", "set", "office@example.com", "x@example.com")[0] == 3
    code, out, _ = cli("alias", "list", "--json")
    assert (code, json.loads(out)) == (0, [])


def test_lists_follow_the_next_links(cli: Run) -> None:
    for n in range(5):
        assert cli("alias", "create", f"a{n}@example.com", "x@example.net")[0] == 0
    code, out, _ = cli("alias", "list", "--json", "--page-size", "2")
    assert code == 0
    assert [a["id"] for a in json.loads(out)] == [f"a{n}@example.com" for n in range(5)]
    code, out, _ = cli("alias", "list", "--json", "--page-size", "2", "--page", "2")
    assert [a["id"] for a in json.loads(out)] == ["a2@example.com", "a3@example.com"]
    code, out, err = cli("alias", "list", "--page-size", "2", "--page", "9")
    assert code == 3 and err.startswith("mailgate: ")


def test_api_errors_print_the_message_and_every_field(cli: Run) -> None:
    assert cli("account", "create", "alice@example.com", "--password-stdin",
               stdin="pw\n")[0] == 0
    code, out, err = cli("account", "create", "alice@example.com", "--password-stdin",
                         stdin="pw\n")
    assert (code, out) == (1, "")
    assert err.startswith("mailgate: ") and "already" in err and "\n  name: " in err
    code, _, err = cli("account", "create", "b..d@example.com", "--password-stdin",
                       "--whitelist", "not an address", stdin="pw\n")
    assert code == 1
    assert "\n  name: " in err and "\n  spoofing_whitelist: " in err
    code, _, err = cli("alias", "create", "x@example.com", "not-an-address")
    assert code == 1 and "\n  to: " in err


def test_exit_codes_for_auth_unreachable_and_configuration(
        cli: Run, live_gateway: LiveGateway, directory: Directory,
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MAILGATE_API_TOKEN", "wrong-token-0123456789abcdef")
    code, _, err = cli("account", "list")
    assert code == 4 and err.startswith("mailgate: ")

    _info, read_only = TokenStore(directory, None).create(["example.com"], read_only=True)
    monkeypatch.setenv("MAILGATE_API_TOKEN", read_only)
    assert cli("account", "list")[0] == 0
    code, _, err = cli("alias", "create", "x@example.com", "y@example.com")
    assert code == 4 and read_only not in err
    monkeypatch.setenv("MAILGATE_API_TOKEN", ADMIN_TOKEN)

    # Nothing listens: 5. A certificate the system CAs do not know: 5, with a hint.
    code, _, err = cli("account", "list", "--url", f"https://127.0.0.1:{free_port()}")
    assert code == 5 and "cannot connect" in err
    monkeypatch.delenv("MAILGATE_API_CA_FILE")
    code, _, err = cli("account", "list")
    assert code == 5 and "certificate verification failed" in err and "--ca-file" in err
    assert cli("account", "list", "--ca-file", str(live_gateway.ca))[0] == 0

    # Configuration: 2, before any request.
    assert cli("account", "list", "--url", live_gateway.url.replace("https", "http"))[0] == 2
    assert cli("account", "list", "--ca-file", str(tmp_path / "missing.pem"))[0] == 2
    monkeypatch.setenv("MAILGATE_API_TOKEN_FILE", str(tmp_path / "token"))
    code, _, err = cli("account", "list")
    assert code == 2 and "either MAILGATE_API_TOKEN or MAILGATE_API_TOKEN_FILE" in err
    monkeypatch.delenv("MAILGATE_API_TOKEN")
    monkeypatch.delenv("MAILGATE_API_TOKEN_FILE")
    code, _, err = cli("account", "list")
    assert code == 2 and "no API token" in err
    monkeypatch.delenv("MAILGATE_API_URL")
    assert cli("account", "list")[0] == 2
    assert cli("account", "create", "no-at-sign", "--password-stdin", stdin="pw\n")[0] == 2
    with pytest.raises(SystemExit) as usage:
        main(["account", "frobnicate"])
    assert usage.value.code == 2


def test_the_password_comes_from_stdin_or_a_terminal_never_from_argv(cli: Run) -> None:
    code, _, err = cli("account", "create", "a@example.com", "--password-stdin", stdin="")
    assert code == 2 and "no password on standard input" in err
    code, _, err = cli("account", "create", "a@example.com")   # stdin is no terminal
    assert code == 2 and "--password-stdin" in err
    with pytest.raises(SystemExit) as usage:
        main(["account", "create", "a@example.com", "--password", "secret"])
    assert usage.value.code == 2

    # No client option anywhere takes a value that could be a password or a token.
    parser = build_parser()
    checked = 0
    for group in ("account", "alias", "domain"):
        group_parser = _subparser(parser, group)
        for name in _subparser_names(group_parser):
            for option in _subparser(group_parser, name)._actions:
                words = " ".join([*option.option_strings, option.dest]).lower()
                if "password" in words or ("token" in words and "file" not in words):
                    assert option.nargs == 0, (group, name, option.option_strings)
                    checked += 1
    assert checked >= 2


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]  # type: ignore[no-any-return]
    raise KeyError(name)


def _subparser_names(parser: argparse.ArgumentParser) -> list[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []


def _client_env(live_gateway: LiveGateway, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MAILGATE_") and k not in ("REQUESTS_CA_BUNDLE",
                                                          "CURL_CA_BUNDLE")}
    token_file = tmp_path / "api-token"
    token_file.write_text(ADMIN_TOKEN + "\n")
    token_file.chmod(0o600)
    env.update(XDG_CONFIG_HOME=str(tmp_path / "no-config"), MAILGATE_API_URL=live_gateway.url,
               MAILGATE_API_TOKEN_FILE=str(token_file),
               MAILGATE_API_CA_FILE=str(live_gateway.ca),
               # A server setting that would stop `mailgate serve`: the client never reads it.
               MAILGATE_LDAP_URL="not-a-url", MAILGATE_LISTEN="nonsense")
    return env


def test_the_console_script_needs_no_ldap_configuration(
        live_gateway: LiveGateway, tmp_path: Path) -> None:
    env = _client_env(live_gateway, tmp_path)
    password = "stdin-secret-Ü 1"
    created = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "account", "create", "carol@example.com",
         "--password-stdin", "--json"], input=password + "\n", env=env,
        capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    assert sha512_crypt.verify(password, json.loads(created.stdout)["password"])
    assert password not in created.stdout + created.stderr

    listed = subprocess.run([sys.executable, "-m", "gateway.cli", "account", "list"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and "carol@example.com" in listed.stdout
    # The server side still refuses that configuration, naming the variable.
    served = subprocess.run([sys.executable, "-m", "gateway.cli", "token", "list"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert served.returncode == 2 and "MAILGATE_LDAP_URL" in served.stderr


def test_password_prompt_on_a_terminal(live_gateway: LiveGateway, tmp_path: Path) -> None:
    env = _client_env(live_gateway, tmp_path)

    def prompted(answers: list[str]) -> tuple[int, str]:
        master, slave = pty.openpty()
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "account", "create", "dave@example.com"],
            stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
        os.close(slave)
        seen = b""
        try:
            for prompt, answer in zip((b"New password: ", b"Again: "), answers, strict=True):
                deadline = time.monotonic() + 30
                while prompt not in seen:
                    assert time.monotonic() < deadline, seen
                    if select.select([master], [], [], 0.5)[0]:
                        seen += os.read(master, 1024)
                seen = seen.split(prompt, 1)[1]
                os.write(master, answer.encode() + b"\n")
            code = proc.wait(60)
            while select.select([master], [], [], 0.2)[0]:
                try:
                    chunk = os.read(master, 1024)
                except OSError:
                    break
                if not chunk:
                    break
                seen += chunk
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            os.close(master)
        return code, seen.decode(errors="replace")

    code, output = prompted(["tty-secret", "typo-secret"])
    assert code == 2 and "differ" in output
    code, output = prompted(["tty-secret", "tty-secret"])
    assert code == 0, output
    assert "tty-secret" not in output      # echo off
    account = live_gateway("GET", "/mail/account/dave@example.com/").json()  # type: ignore[attr-defined]
    assert sha512_crypt.verify("tty-secret", account["password"])


def test_config_file(live_gateway: LiveGateway, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(ADMIN_TOKEN)
    config = tmp_path / "client.toml"
    config.write_text(f'url = "{live_gateway.url}"\ntoken_file = "{token_file}"\n'
                      f'ca_file = "{live_gateway.ca}"\ntimeout = 12\n')
    loaded = load_config({}, config=config)
    assert (loaded.url, loaded.token, loaded.ca_file, loaded.timeout) == (
        live_gateway.url, ADMIN_TOKEN, live_gateway.ca, 12.0)
    assert ADMIN_TOKEN not in repr(loaded)
    # The default place, and the environment before the file.
    (tmp_path / "xdg" / "mailgate").mkdir(parents=True)
    (tmp_path / "xdg" / "mailgate" / "client.toml").write_text(config.read_text())
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "MAILGATE_API_URL": "https://other:9"}
    assert load_config(env).url == "https://other:9"
    assert load_config(env).token == ADMIN_TOKEN

    env = _client_env(live_gateway, tmp_path)
    for name in ("MAILGATE_API_URL", "MAILGATE_API_TOKEN_FILE", "MAILGATE_API_CA_FILE"):
        del env[name]
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "alias", "list", "--config",
                           str(config)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    config.write_text('url = "https://x"\npassword = "no"\n')
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "alias", "list", "--config",
                           str(config)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "unknown key(s) password" in done.stderr


def test_unknown_fields_of_the_api_pass_through(capsys: pytest.CaptureFixture[str]) -> None:
    """New account fields (sub-addressing and the like) show up without a client change."""
    item = {"id": "a@example.com", "password": "$6$x", "subaddress_extension": True,
            "quota": {"bytes": 10}}
    print_item(item, hidden=("password",))
    out = capsys.readouterr().out
    assert "subaddress_extension: yes" in out and 'quota:                {"bytes": 10}' in out
    assert "$6$" not in out
    assert list(rows([item], ("id", "missing"))) == [["a@example.com", ""]]


def test_exit_codes_are_documented() -> None:
    assert set(EXIT_CODES) == {0, 1, 2, 3, 4, 5}
    text = (Path(__file__).resolve().parents[1] / "docs" / "client.md").read_text()
    for code in EXIT_CODES:
        assert f"| {code} |" in text


# -- tenants: domains, limits, quotas (SPEC.md section 8) -------------------------------

GIB = 2**30


def test_domain_commands(cli: Run, live_gateway: LiveGateway) -> None:
    code, out, err = cli("domain", "create", "example.com", "--max-accounts", "10",
                         "--max-aliases", "5", "--default-quota", "512M",
                         "--max-quota", "1.5GiB")
    assert (code, err) == (0, "")
    assert re.search(r"^max_accounts: +10$", out, re.MULTILINE)
    assert re.search(r"^default_quota: +512 MiB$", out, re.MULTILINE)
    assert re.search(r"^max_quota: +1.5 GiB$", out, re.MULTILINE)
    assert re.search(r"^quota_allocated: +0 B$", out, re.MULTILINE)
    code, out, _ = cli("domain", "create", "example.org", "--json")
    assert code == 0 and json.loads(out) == {
        "name": "example.org", "accounts": 0, "aliases": 0, "max_accounts": 0,
        "max_aliases": 0, "default_quota": 0, "max_quota": 0, "quota_allocated": 0,
        "over_limit": False}
    assert cli("account", "create", "a@example.com", "--password-stdin", stdin="pw\n")[0] == 0
    assert cli("alias", "create", "x@example.com", "a@example.com")[0] == 0

    code, out, _ = cli("domain", "show", "EXAMPLE.com", "--json")
    assert code == 0 and json.loads(out) == {
        "name": "example.com", "accounts": 1, "aliases": 1, "max_accounts": 10,
        "max_aliases": 5, "default_quota": 512 * 2**20, "max_quota": 3 * GIB // 2,
        "quota_allocated": 512 * 2**20, "over_limit": False}
    code, out, _ = cli("domain", "show", "example.org")
    assert code == 0 and re.search(r"^max_quota: +unlimited$", out, re.MULTILINE)
    code, out, _ = cli("domain", "list")
    assert (code, out.splitlines()) == (0, [
        "DOMAIN       ACCOUNTS  ALIASES  QUOTA ALLOCATED  DEFAULT QUOTA  OVER LIMIT",
        "example.com  1/10      1/5      512 MiB/1.5 GiB  512 MiB        no",
        "example.org  0         0        0 B              unlimited      no"])
    code, out, _ = cli("domain", "list", "--json", "--page-size", "1")
    assert code == 0 and [d["name"] for d in json.loads(out)] == ["example.com", "example.org"]
    # An IDN as typed, in the path of each route: stored and shown as its A-label.
    code, out, _ = cli("domain", "create", "Bücher.Example", "--max-accounts", "1", "--json")
    assert code == 0 and json.loads(out)["name"] == "xn--bcher-kva.example"
    code, out, _ = cli("domain", "set-limits", "bücher.example", "--max-aliases", "2")
    assert code == 0 and re.search(r"^name: +xn--bcher-kva.example$", out, re.MULTILINE)
    assert cli("domain", "delete", "BÜCHER.example")[0] == 0

    # set-limits: the limits given change, the others stay; 0 removes one.
    code, out, _ = cli("domain", "set-limits", "example.com", "--max-accounts", "0",
                       "--max-quota", "2G", "--json")
    changed = json.loads(out)
    assert code == 0 and (changed["max_accounts"], changed["max_aliases"],
                          changed["max_quota"]) == (0, 5, 2 * GIB)
    # Lowered below what exists: allowed and shown.
    code, out, _ = cli("domain", "set-limits", "example.com", "--max-aliases", "0",
                       "--max-accounts", "1")
    assert code == 0 and re.search(r"^over_limit: +no$", out, re.MULTILINE)
    assert cli("alias", "create", "y@example.com", "a@example.com")[0] == 0
    assert cli("domain", "set-limits", "example.com", "--max-aliases", "1")[0] == 0
    code, out, _ = cli("domain", "list")
    assert out.splitlines()[1].split() == ["example.com", "1/1", "2/1", "512", "MiB/2",
                                           "GiB", "512", "MiB", "yes"]

    # Bad command lines: 2, before any request.
    code, _, err = cli("domain", "set-limits", "example.com")
    assert code == 2 and "--max-accounts" in err
    for bad in (["--max-quota", "lots"], ["--max-quota", "1.5"], ["--max-accounts", "-1"]):
        with pytest.raises(SystemExit) as usage:
            main(["domain", "set-limits", "example.com", *bad])
        assert usage.value.code == 2
    # What the API refuses names the field: 1.
    code, out, err = cli("domain", "set-limits", "example.com", "--max-quota", "2P")
    assert (code, out) == (1, "") and "\n  max_quota: must be at most" in err
    code, _, err = cli("domain", "create", "example.org")
    assert code == 1 and "exists" in err

    # delete: refused while it holds entries (the hint is the option), then --cascade.
    code, out, err = cli("domain", "delete", "example.com")
    assert (code, out) == (1, "")
    assert err.startswith("mailgate: the domain example.com holds 1 accounts and 2 aliases")
    assert "--cascade" in err and "?cascade" not in err
    assert live_gateway("GET", "/mail/account/a@example.com/").status_code == 200  # type: ignore[attr-defined]
    code, out, _ = cli("domain", "delete", "example.com", "--cascade")
    assert (code, out) == (0, "deleted domain example.com\n")
    assert live_gateway("GET", "/mail/account/a@example.com/").status_code == 404  # type: ignore[attr-defined]
    code, out, _ = cli("domain", "delete", "example.org", "--json")
    assert (code, json.loads(out)) == (0, {"deleted": "example.org"})
    code, out, err = cli("domain", "show", "example.com")
    assert (code, out) == (3, "") and err.startswith("mailgate: ")
    assert cli("domain", "delete", "example.com")[0] == 3
    code, out, _ = cli("domain", "list", "--json")
    assert (code, json.loads(out)) == (0, [])


def test_account_quota_commands(cli: Run) -> None:
    assert cli("domain", "create", "example.com", "--default-quota", "100M")[0] == 0
    code, out, _ = cli("account", "create", "a@example.com", "--password-stdin",
                       "--quota", "1.5G", stdin="pw\n")
    assert code == 0 and re.search(r"^quota: +1.5 GiB$", out, re.MULTILINE)
    code, out, _ = cli("account", "create", "b@example.com", "--password-stdin", "--json",
                       stdin="pw\n")
    assert code == 0 and json.loads(out)["quota"] == 100 * 2**20    # the domain's default
    code, out, _ = cli("account", "create", "c@example.org", "--password-stdin",
                       "--quota", "1000000000", stdin="pw\n")
    assert code == 0 and re.search(r"^quota: +953.7 MiB \(1000000000 bytes\)$", out,
                                   re.MULTILINE)
    code, out, _ = cli("account", "list", "--domain", "example.com")
    assert [line.split()[:3] for line in out.splitlines()] == [
        ["ACCOUNT", "QUOTA", "SUBMISSION"], ["a@example.com", "1.5", "GiB"],
        ["b@example.com", "100", "MiB"]]

    code, out, _ = cli("account", "set-quota", "b@example.com", "2G", "--json")
    assert code == 0 and json.loads(out)["quota"] == 2 * GIB
    assert "password" in json.loads(out)            # --json: the account as the API sent it
    code, out, _ = cli("account", "set-quota", "b@example.com", "0")
    assert code == 0 and re.search(r"^quota: +unlimited$", out, re.MULTILINE)
    assert "$6$" not in out
    code, out, _ = cli("account", "show", "a@example.com")
    assert code == 0 and re.search(r"^quota: +1.5 GiB$", out, re.MULTILINE)
    code, out, _ = cli("domain", "show", "example.com", "--json")
    assert json.loads(out)["quota_allocated"] == 3 * GIB // 2

    code, out, err = cli("account", "set-quota", "b@example.com", "2048P")
    assert (code, out) == (1, "") and "\n  quota: must be at most" in err
    code, _, err = cli("account", "set-quota", "nobody@example.com", "1G")
    assert code == 3 and err.startswith("mailgate: ")
    with pytest.raises(SystemExit) as usage:
        main(["account", "set-quota", "b@example.com", "-1G"])
    assert usage.value.code == 2


def test_limit_refusals_are_one_message_and_exit_1(cli: Run) -> None:
    assert cli("domain", "create", "example.com", "--max-accounts", "1", "--max-aliases", "1",
               "--max-quota", "1G", "--default-quota", "600M")[0] == 0
    assert cli("account", "create", "a@example.com", "--password-stdin", stdin="pw\n")[0] == 0
    code, out, err = cli("account", "create", "b@example.com", "--password-stdin",
                         stdin="pw\n")
    assert (code, out) == (1, "")
    assert err.splitlines() == ["mailgate: example.com holds 1 accounts, its max_accounts is 1",
                                "  max_accounts: the domain's limit is 1"]
    assert cli("alias", "create", "x@example.com", "a@example.com")[0] == 0
    code, _, err = cli("alias", "create", "y@example.com", "a@example.com")
    assert code == 1 and err.splitlines()[1] == "  max_aliases: the domain's limit is 1"
    code, out, err = cli("account", "set-quota", "a@example.com", "2G")
    assert (code, out) == (1, "")
    assert "max_quota" in err.splitlines()[0]
    assert err.splitlines()[1] == f"  max_quota: the domain's limit is {GIB}"
    code, out, _ = cli("account", "show", "a@example.com", "--json")
    assert json.loads(out)["quota"] == 600 * 2**20         # nothing changed
    code, out, _ = cli("domain", "show", "example.com", "--json")
    assert (json.loads(out)["accounts"], json.loads(out)["quota_allocated"]) == (
        1, 600 * 2**20)


def test_scoped_tokens_read_their_domains_and_change_no_limit(
        cli: Run, directory: Directory, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("example.com", "example.org"):
        assert cli("domain", "create", name, "--max-accounts", "3")[0] == 0
    _info, scoped = TokenStore(directory, None).create(["example.com"])
    monkeypatch.setenv("MAILGATE_API_TOKEN", scoped)
    code, out, _ = cli("domain", "list", "--json")
    assert code == 0 and [d["name"] for d in json.loads(out)] == ["example.com"]
    assert cli("domain", "show", "example.com")[0] == 0
    code, _, err = cli("domain", "show", "example.org")
    assert code == 4 and err.startswith("mailgate: ") and scoped not in err
    for argv in (["set-limits", "example.com", "--max-accounts", "9"],
                 ["create", "example.net"], ["delete", "example.com", "--cascade"]):
        code, out, err = cli("domain", *argv)
        assert (code, out) == (4, "") and len(err.splitlines()) == 1, argv
    monkeypatch.setenv("MAILGATE_API_TOKEN", ADMIN_TOKEN)
    code, out, _ = cli("domain", "show", "example.com", "--json")
    assert json.loads(out)["max_accounts"] == 3


def test_usage_without_dovecot_is_exit_5_naming_dovecot(cli: Run) -> None:
    assert cli("account", "create", "a@example.com", "--password-stdin", stdin="pw\n")[0] == 0
    for argv in (["account", "usage", "a@example.com"], ["domain", "usage", "example.com"]):
        code, out, err = cli(*argv)
        assert (code, out) == (5, "") and "Dovecot" in err.splitlines()[0], argv
    assert cli("account", "usage", "nobody@example.com")[0] == 3
    assert cli("domain", "usage", "nothing.example")[0] == 3


def _set_counters(slapd: ManagedSlapd, domain: str, accounts: int, allocated: int) -> None:
    """A counter gone wrong, as a crash between a claim and its write leaves it."""
    ldap_tool(slapd, "ldapmodify", input=(
        f"dn: dc={domain},ou=domains,{BASE_DN}\nchangetype: modify\n"
        f"replace: mailgateAccountCount\nmailgateAccountCount: {accounts}\n-\n"
        f"replace: mailgateQuotaAllocated\nmailgateQuotaAllocated: {allocated}\n"))


def test_recount_repairs_a_drifted_counter(cli: Run, slapd: ManagedSlapd,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli("domain", "create", "example.com", "--max-accounts", "2")[0] == 0
    assert cli("domain", "create", "example.org")[0] == 0
    assert cli("account", "create", "a@example.com", "--password-stdin", "--quota", "100",
               stdin="pw\n")[0] == 0
    _set_counters(slapd, "example.com", 2, 5000)
    code, _, err = cli("account", "create", "b@example.com", "--password-stdin",
                       stdin="pw\n")
    assert code == 1 and "max_accounts" in err               # refuses early, never over

    # recount talks to LDAP with the server's settings, as mailgate token does.
    for name, value in (("MAILGATE_LDAP_URL", slapd.url), ("MAILGATE_LDAP_BASE_DN", BASE_DN),
                        ("MAILGATE_LDAP_PASSWORD", slapd.password("gateway")),
                        ("MAILGATE_ADMIN_TOKEN", ADMIN_TOKEN)):
        monkeypatch.setenv(name, value)
    code, out, _ = cli("domain", "recount")
    assert (code, out.splitlines()) == (0, [
        "example.com: accounts 2 -> 1, quota_allocated 4.9 KiB (5000 bytes) -> 100 B",
        "checked 2 domains, repaired 1"])
    code, out, _ = cli("domain", "show", "example.com", "--json")
    assert (json.loads(out)["accounts"], json.loads(out)["quota_allocated"]) == (1, 100)
    assert cli("account", "create", "b@example.com", "--password-stdin", stdin="pw\n")[0] == 0
    code, out, _ = cli("domain", "recount")
    assert (code, out) == (0, "checked 2 domains: every counter was right\n")

    _set_counters(slapd, "example.com", 0, 0)
    code, out, _ = cli("domain", "recount", "EXAMPLE.com", "--json")
    assert (code, json.loads(out)) == (0, {"checked": 1, "repaired": [{
        "name": "example.com",
        "before": {"accounts": 0, "aliases": 0, "quota_allocated": 0},
        "after": {"accounts": 2, "aliases": 0, "quota_allocated": 100}}]})
    code, out, _ = cli("domain", "recount", "example.org", "--json")
    assert (code, json.loads(out)) == (0, {"checked": 1, "repaired": []})
    code, out, err = cli("domain", "recount", "nothing.example")
    assert (code, out) == (3, "") and err == "mailgate: no domain nothing.example\n"
    code, _, err = cli("domain", "recount", "not a domain!")
    assert code == 2 and err.startswith("mailgate: not a domain")


def test_sizes_on_the_command_line_are_binary() -> None:
    from gateway.cli.remote import size_arg, size_text
    assert [size_arg(t) for t in ("0", "1073741824", "10G", "10GiB", "10gb", "512M",
                                  "1.5GiB", "2 T", "1k", "5B", "1.3K")] == [
        0, GIB, 10 * GIB, 10 * GIB, 10 * GIB, 512 * 2**20, 3 * GIB // 2, 2 * 2**40, 1024, 5,
        1331]
    for bad in ("", "-1", "1.5", "10X", "G", "1e9", "0x10", "10 GiBs"):
        with pytest.raises(argparse.ArgumentTypeError):
            size_arg(bad)
    assert [size_text(n) for n in (0, 1023, 1024, 3 * GIB // 2, 10**9, 2**50)] == [
        "0 B", "1023 B", "1 KiB", "1.5 GiB", "953.7 MiB", "1 PiB"]
    assert size_text(10**9, exact=True) == "953.7 MiB (1000000000 bytes)"


# -- the development gateway of `make run`, found without configuration ------------------


def test_the_client_finds_the_development_gateway_in_the_checkout(tmp_path: Path) -> None:
    """As a new user: `make run` in a checkout, then `mailgate account list` there."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    served = Served(checkout / "var")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MAILGATE_") and k not in ("REQUESTS_CA_BUNDLE",
                                                          "CURL_CA_BUNDLE")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "no-config")

    def client(*argv: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway.cli", *argv],
                              env={**env, **extra}, cwd=checkout, capture_output=True,
                              text=True, timeout=60)

    try:
        served.start_ready()
        assert (checkout / "var" / "api-url").read_text().strip() == served.url
        created = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "account", "create", "new@example.com",
             "--password-stdin"], input="new pw\n", env=env, cwd=checkout,
            capture_output=True, text=True, timeout=60)
        assert created.returncode == 0, created.stderr
        listed = client("account", "list")
        assert listed.returncode == 0, listed.stderr
        assert "new@example.com" in listed.stdout
        assert f"using the local one at {served.url}" in listed.stderr
        assert "var/tls/cert.pem" in listed.stderr and "var/admin-token" in listed.stderr
        token = (checkout / "var" / "admin-token").read_text().strip()
        assert token not in listed.stdout + listed.stderr
        # Anything configured wins: a URL (then nothing local is used) ...
        elsewhere = client("account", "list",
                           MAILGATE_API_URL=f"https://127.0.0.1:{free_port()}")
        assert elsewhere.returncode == 2 and "no API token" in elsewhere.stderr
        # ... a token, and a CA.
        wrong = tmp_path / "wrong-token"
        wrong.write_text("wrong-token-0123456789abcdef")
        refused = client("account", "list", "--token-file", str(wrong))
        assert refused.returncode == 4 and "token as configured" in refused.stderr
        other_ca = client("account", "list",
                          MAILGATE_API_CA_FILE="/etc/ssl/certs/ca-certificates.crt")
        assert other_ca.returncode == 5 and "certificate verification failed" in other_ca.stderr
        # Elsewhere (no ./var here), the message says what to configure.
        away = subprocess.run([sys.executable, "-m", "gateway.cli", "account", "list"],
                              env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=60)
        assert away.returncode == 2 and away.stderr.startswith("mailgate: no gateway URL")
        # A data directory named by MAILGATE_DATA_DIR, from before serve wrote api-url:
        # MAILGATE_LISTEN says where it listens.
        (checkout / "var" / "api-url").unlink()
        listen = client("account", "list", MAILGATE_DATA_DIR=str(checkout / "var"),
                        MAILGATE_LISTEN=f"127.0.0.1:{served.port}")
        assert listen.returncode == 0, listen.stderr
    finally:
        served.stop()
