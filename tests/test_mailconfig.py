"""``mailgate render-config``: templates fully filled, safe modes, clear errors.

That the rendered files work is proven by tests/mailpath with real servers.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from gateway import cli
from gateway.mailconfig import LdapAccess, RenderError, dovecot_files, postfix_files

LDAP = LdapAccess("ldap://127.0.0.1:3389", "dc=mail,dc=test",
                  "cn=postfix,ou=services,dc=mail,dc=test", "s3cret-Pw_1")


def _password_file(tmp_path: Path) -> Path:
    path = tmp_path / "pw"
    path.write_text("s3cret-Pw_1\n")
    return path


def test_postfix_files_are_complete_and_private(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "pf"
    status = cli.main(["render-config", "postfix", "--out", str(out),
                       "--ldap-url", "ldap://ldap.example:389", "--base-dn", "dc=mail,dc=test",
                       "--password-file", str(_password_file(tmp_path)),
                       "--map-dir", "/etc/postfix/mailgate"])
    assert status == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["ldap-accounts.cf", "ldap-aliases.cf", "ldap-catchall.cf",
                     "ldap-domains.cf", "ldap-mailboxes.cf", "ldap-sender-login.cf",
                     "ldap-subaddress.cf", "ldap-submission-disabled.cf",
                     "main.cf.fragment", "master.cf.fragment", "subaddress.pcre"]
    for path in out.iterdir():
        text = path.read_text()
        assert "{{" not in text and "}}" not in text, path.name
        mode = stat.S_IMODE(path.stat().st_mode)
        if path.name.endswith(".cf"):
            assert mode == 0o640, path.name
            assert "bind_pw = s3cret-Pw_1" in text
            assert "bind_dn = cn=postfix,ou=services,dc=mail,dc=test" in text
            assert "server_host = ldap://ldap.example:389" in text
            assert "search_base = ou=domains,dc=mail,dc=test" in text
        else:
            assert mode == 0o644 and "s3cret" not in text, path.name
    main = (out / "main.cf.fragment").read_text()
    assert "proxy:ldap:/etc/postfix/mailgate/ldap-mailboxes.cf" in main
    assert "\nvirtual_alias_domains =\n" in main
    assert "$mailgate_sender_login_maps $mailgate_submission_access" in main
    sender = (out / "ldap-sender-login.cf").read_text()
    assert "(mailgateSenderAllowed=\\2a)" in sender
    master = (out / "master.cf.fragment").read_text()
    assert master.count("smtpd_sender_login_maps") == 1  # on submission only
    assert "submission inet n" in master
    assert "-o smtpd_tls_security_level=encrypt" in master
    assert str(out / "ldap-domains.cf") in capsys.readouterr().out


def test_dovecot_files(tmp_path: Path) -> None:
    files = {f.name: f for f in dovecot_files(
        LdapAccess("ldaps://ldap.example", "dc=x,dc=y", "cn=dovecot,ou=services,dc=x,dc=y",
                   "pw", ca_file=Path("/etc/ssl/ca.pem")),
        conf_dir="/etc/dovecot/mailgate", mail_user="root", mail_group="root")}
    assert {n: f.mode for n, f in files.items()} == {
        "dovecot-ldap-passdb.conf.ext": 0o600, "dovecot-ldap-userdb.conf.ext": 0o600,
        "mailgate.conf": 0o644}
    passdb = files["dovecot-ldap-passdb.conf.ext"].text
    assert "default_pass_scheme = CRYPT" in passdb
    assert "pass_filter = (&(objectClass=mailgateAccount)(mail=%u))" in passdb
    assert "tls_ca_cert_file = /etc/ssl/ca.pem" in passdb
    assert "iterate_filter = (objectClass=mailgateAccount)" in (
        files["dovecot-ldap-userdb.conf.ext"].text)
    conf = files["mailgate.conf"].text
    assert "args = /etc/dovecot/mailgate/dovecot-ldap-passdb.conf.ext" in conf
    assert "auth_cache_size = 0" in conf
    assert "unix_listener /var/spool/postfix/private/auth {" in conf
    assert "first_valid_uid = 0" in conf
    assert "{{" not in conf


@pytest.mark.parametrize("password", ["", "with space", "a#b", "line\nbreak"])
def test_passwords_that_config_files_cannot_hold_are_refused(password: str) -> None:
    with pytest.raises(RenderError):
        postfix_files(LdapAccess("ldap://h", "dc=x", "cn=p,dc=x", password), map_dir="/m",
                      proxy_read_maps="$x")


def test_relative_paths_and_bad_listeners_are_refused() -> None:
    with pytest.raises(RenderError, match="absolute"):
        postfix_files(LDAP, map_dir="maps", proxy_read_maps="$x")
    with pytest.raises(RenderError, match="listener"):
        dovecot_files(LDAP, conf_dir="/d", lmtp_listen="127.0.0.1")
    with pytest.raises(RenderError, match="absolute"):
        dovecot_files(LDAP, conf_dir="/d", mail_root="vmail")


def test_external_directory_needs_a_password_file(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    status = cli.main(["render-config", "dovecot", "--out", str(tmp_path / "d"),
                       "--ldap-url", "ldap://ldap.example"])
    assert status == 2
    assert "--password-file is required" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_embedded_mode_uses_the_managed_slapd_secrets(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILGATE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MAILGATE_LDAP_BASE_DN", "dc=mail,dc=test")
    monkeypatch.delenv("MAILGATE_LDAP_URL", raising=False)
    status = cli.main(["render-config", "postfix", "--out", str(tmp_path / "pf")])
    assert status == 0
    secret = (tmp_path / "data" / "secrets" / "ldap-postfix.password").read_text().strip()
    text = (tmp_path / "pf" / "ldap-mailboxes.cf").read_text()
    assert f"bind_pw = {secret}" in text
    assert "server_host = ldap://127.0.0.1:3389" in text
