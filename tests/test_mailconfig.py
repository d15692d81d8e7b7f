"""``mailgate render-config``: templates fully filled, safe modes, clear errors.

That the rendered files work is proven by tests/mailpath with real servers.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from gateway import cli
from gateway.mailconfig import LdapAccess, RenderError, dovecot_files, postfix_files, write_files

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


def test_quota_plugin_quota_status_and_doveadm_api(tmp_path: Path) -> None:
    files = {f.name: f for f in dovecot_files(
        LDAP, conf_dir="/etc/dovecot/mailgate", mail_user="root", mail_group="root",
        quota_status_listen="127.0.0.1:12340", doveadm_listen="127.0.0.1:8080",
        doveadm_api_key="k3y-Secret_9")}
    userdb = files["dovecot-ldap-userdb.conf.ext"].text
    assert "user_attrs = mail=user,=quota_rule=*:bytes=%{ldap:mailgateQuota:0}\n" in userdb
    conf = files["mailgate.conf"].text
    for line in ("mail_plugins = $mail_plugins quota\n",
                 "  mail_plugins = $mail_plugins imap_quota\n",
                 "  quota = count:User quota\n", "  quota_vsizes = yes\n",
                 '  quota_status_overquota = "552 5.2.2 Mailbox is full"\n',
                 "  quota_status_success = DUNNO\n", "  quota_status_nouser = DUNNO\n",
                 "  executable = quota-status -p postfix\n",
                 "  inet_listener quota-status-mailgate {\n    address = 127.0.0.1\n"
                 "    port = 12340\n",
                 "!include /etc/dovecot/mailgate/doveadm-api.conf.ext\n",
                 "  inet_listener http {\n    address = 127.0.0.1\n    port = 8080\n"):
        assert line in conf, line
    # The key only in its own 0600 file, never in the world-readable include.
    assert "k3y-Secret_9" not in conf and files["mailgate.conf"].mode == 0o644
    key = files["doveadm-api.conf.ext"]
    assert key.mode == 0o600 and "doveadm_api_key = k3y-Secret_9\n" in key.text
    write_files(tmp_path, list(files.values()))
    assert stat.S_IMODE((tmp_path / "doveadm-api.conf.ext").stat().st_mode) == 0o600
    # Without a key: no HTTP API (nothing would protect it), the rest the same.
    plain = {f.name: f.text for f in dovecot_files(LDAP, conf_dir="/d", mail_user="root",
                                                    mail_group="root")}
    assert "doveadm-api.conf.ext" not in plain and "service doveadm" not in plain["mailgate.conf"]
    assert "unix_listener /var/spool/postfix/private/quota-status {" in plain["mailgate.conf"]


@pytest.mark.parametrize(("options", "match"), [
    ({"doveadm_api_key": "with space"}, "doveadm API key"),
    ({"doveadm_api_key": ""}, "doveadm API key"),
    ({"doveadm_api_key": "k", "doveadm_listen": "unix:/run/doveadm"}, "doveadm HTTP listener"),
    ({"quota_status_listen": "12340"}, "quota-status listener"),
])
def test_bad_quota_and_doveadm_options_are_refused(options: dict[str, str], match: str) -> None:
    with pytest.raises(RenderError, match=match):
        dovecot_files(LDAP, conf_dir="/d", mail_user="root", mail_group="root",
                      **options)  # type: ignore[arg-type]


def test_postfix_asks_quota_status_at_rcpt_and_defers_when_it_cannot(tmp_path: Path) -> None:
    main = {f.name: f.text for f in postfix_files(LDAP, map_dir="/m",
                                                  proxy_read_maps="$x")}["main.cf.fragment"]
    assert ("mailgate_quota_policy = check_policy_service { unix:private/quota-status, "
            "timeout=10s,\n    { default_action = 451 4.3.0 Mailbox quota check unavailable, "
            "try again later } }\n") in main
    assert ("mailgate_recipient_restrictions = reject_unlisted_recipient, "
            "$mailgate_quota_policy\n") in main
    assert "\nsmtpd_recipient_restrictions = $mailgate_recipient_restrictions\n" in main
    master = {f.name: f.text for f in postfix_files(LDAP, map_dir="/m",
                                                    proxy_read_maps="$x")}["master.cf.fragment"]
    assert "-o smtpd_recipient_restrictions=$mailgate_recipient_restrictions\n" in master
    status = cli.main(["render-config", "postfix", "--out", str(tmp_path / "pf"),
                       "--ldap-url", "ldap://h", "--base-dn", "dc=mail,dc=test",
                       "--password-file", str(_password_file(tmp_path)),
                       "--quota-status", "none"])
    assert status == 0
    assert "\nmailgate_quota_policy = \n" in (tmp_path / "pf" / "main.cf.fragment").read_text()
    with pytest.raises(RenderError, match="quota-status service"):
        postfix_files(LDAP, map_dir="/m", proxy_read_maps="$x", quota_status="private/qs")


def test_the_doveadm_key_file_is_read_by_render_config(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "doveadm.key"
    key.write_text("file-Key_1\n")
    common = ["render-config", "dovecot", "--ldap-url", "ldap://h", "--base-dn",
              "dc=mail,dc=test", "--password-file", str(_password_file(tmp_path)),
              "--mail-user", "root", "--mail-group", "root"]
    assert cli.main([*common, "--out", str(tmp_path / "d"), "--doveadm-api-key-file",
                     str(key)]) == 0
    assert (tmp_path / "d" / "doveadm-api.conf.ext").read_text().endswith(
        "doveadm_api_key = file-Key_1\n")
    assert cli.main([*common, "--out", str(tmp_path / "e"), "--doveadm-api-key-file",
                     str(tmp_path / "missing")]) == 2
    assert "cannot read the doveadm API key file" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()
