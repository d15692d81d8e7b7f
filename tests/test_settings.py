"""Settings come from MAILGATE_* once; every error names its variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.settings import ConfigError, Settings


def test_defaults_are_embedded_mode() -> None:
    settings = Settings.from_env({})
    assert settings.embedded and settings.ldap_url is None
    assert settings.listen == "127.0.0.1:8443"
    assert settings.embedded_ldap_url == "ldap://127.0.0.1:3389"
    assert settings.data_dir == Path("var")
    assert settings.json_urls == ()


def test_secrets_from_files(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t" * 30 + "\n")
    password = tmp_path / "pw"
    password.write_text("ldap-secret\n")
    settings = Settings.from_env({
        "MAILGATE_LDAP_URL": "ldaps://ldap.example.net", "MAILGATE_ADMIN_TOKEN_FILE": str(token),
        "MAILGATE_LDAP_PASSWORD_FILE": str(password),
        "MAILGATE_JSON_URLS": "https://a.example/x.json\n https://b.example/y.json",
    })
    assert settings.admin_token == "t" * 30
    assert settings.ldap_password == "ldap-secret"
    assert settings.json_urls == ("https://a.example/x.json", "https://b.example/y.json")
    assert "ldap-secret" not in repr(settings) and "t" * 30 not in repr(settings)


@pytest.mark.parametrize(("env", "variable"), [
    ({"MAILGATE_LDAP_URL": "http://x"}, "MAILGATE_LDAP_URL"),
    ({"MAILGATE_LDAP_URL": "ldap://a ftp://b"}, "MAILGATE_LDAP_URL"),
    ({"MAILGATE_LDAP_URL": "ldap://a:389 ldap://A:389"}, "MAILGATE_LDAP_URL"),
    ({"MAILGATE_LDAP_URL": "ldap://x"}, "MAILGATE_LDAP_PASSWORD"),
    ({"MAILGATE_LDAP_URL": "ldap://x", "MAILGATE_LDAP_PASSWORD": "p"}, "MAILGATE_ADMIN_TOKEN"),
    ({"MAILGATE_LDAP_BASE_DN": "not a dn"}, "MAILGATE_LDAP_BASE_DN"),
    ({"MAILGATE_LDAP_BASE_DN": "o=example"}, "MAILGATE_LDAP_BASE_DN"),
    ({"MAILGATE_LISTEN": "8443"}, "MAILGATE_LISTEN"),
    ({"MAILGATE_LISTEN": "127.0.0.1:99999"}, "MAILGATE_LISTEN"),
    ({"MAILGATE_TLS_CERT": "/nonexistent.pem"}, "MAILGATE_TLS_CERT"),
    ({"MAILGATE_ADMIN_TOKEN": "short"}, "MAILGATE_ADMIN_TOKEN"),
    ({"MAILGATE_ADMIN_TOKEN_FILE": "/nonexistent"}, "MAILGATE_ADMIN_TOKEN_FILE"),
    ({"MAILGATE_ADMIN_TOKEN": "x" * 30, "MAILGATE_ADMIN_TOKEN_FILE": "/etc/hostname"},
     "MAILGATE_ADMIN_TOKEN"),
    ({"MAILGATE_PASSWORD_ROUNDS": "ten"}, "MAILGATE_PASSWORD_ROUNDS"),
    ({"MAILGATE_PASSWORD_ROUNDS": "10"}, "MAILGATE_PASSWORD_ROUNDS"),
    ({"MAILGATE_JSON_URLS": "http://plain.example/x.json"}, "MAILGATE_JSON_URLS"),
    ({"MAILGATE_JSON_INTERVAL": "0"}, "MAILGATE_JSON_INTERVAL"),
    ({"MAILGATE_JSON_AUTH_HEADER": "no colon"}, "MAILGATE_JSON_AUTH_HEADER"),
    ({"MAILGATE_LDAP_STARTTLS": "perhaps"}, "MAILGATE_LDAP_STARTTLS"),
    ({"MAILGATE_LOG_LEVEL": "LOUD"}, "MAILGATE_LOG_LEVEL"),
    ({"MAILGATE_LDAP_REPLICA_URLS": "ldap://mx1 https://mx2"}, "MAILGATE_LDAP_REPLICA_URLS"),
    ({"MAILGATE_LDAP_REPLICA_URLS": "ldap://mx1 ldap://MX1"}, "MAILGATE_LDAP_REPLICA_URLS"),
])
def test_invalid_configuration_names_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert caught.value.variable == variable
    assert str(caught.value).startswith(variable)


def test_several_ldap_urls_in_order_and_the_first_pinned() -> None:
    settings = Settings.from_env({
        "MAILGATE_LDAP_URL": " ldap://ldap1.example:389   ldaps://ldap2.example ",
        "MAILGATE_LDAP_PASSWORD": "p", "MAILGATE_ADMIN_TOKEN": "t" * 30})
    assert settings.ldap_urls == ("ldap://ldap1.example:389", "ldaps://ldap2.example")
    assert settings.pinned().ldap_urls == ("ldap://ldap1.example:389",)


def test_replica_urls_in_order() -> None:
    assert Settings.from_env({}).ldap_replica_urls == ()
    settings = Settings.from_env({"MAILGATE_LDAP_REPLICA_URLS": " ldap://mx1:389\tldaps://mx2 "})
    assert settings.ldap_replica_urls == ("ldap://mx1:389", "ldaps://mx2")
