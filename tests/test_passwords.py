"""The password policy: hashing new passwords, accepting only crypt hashes on import."""

from __future__ import annotations

import pytest
from passlib.hash import md5_crypt, sha256_crypt, sha512_crypt

from gateway import passwords
from gateway.settings import Settings


def test_new_passwords_are_sha512_crypt_with_the_configured_rounds() -> None:
    hashed = passwords.hash_password("correct horse", 5000)
    assert hashed.startswith("$6$")
    assert sha512_crypt.verify("correct horse", hashed)
    assert not sha512_crypt.verify("wrong", hashed)
    assert passwords.hash_password("x", 12345).startswith("$6$rounds=12345$")


def test_default_rounds_are_at_least_100000() -> None:
    assert Settings().password_rounds >= 100_000
    assert Settings.from_env({}).password_rounds >= 100_000


@pytest.mark.parametrize("value", [None, 7, "", "a\x00b", "x" * (passwords.MAX_PLAIN + 1)])
def test_unfit_plain_passwords(value: object) -> None:
    with pytest.raises(ValueError):
        passwords.check_plain(value)


def test_supported_crypt_hashes_are_accepted() -> None:
    samples = [
        "$1$9hW1N3SC$J6vfo890zc50GC1jYHP211",
        md5_crypt.hash("pw"),
        sha256_crypt.using(rounds=5000).hash("pw"),
        sha256_crypt.using(rounds=10000).hash("pw"),
        sha512_crypt.using(rounds=5000).hash("pw"),
        sha512_crypt.using(rounds=100000).hash("pw"),
        "$2b$10$" + "a" * 53,
        "$2y$12$" + "B" * 53,
        "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7",
    ]
    for sample in samples:
        assert passwords.check_crypt_hash(sample) == sample


@pytest.mark.parametrize("value", [
    "secret", "plain text password", "{CRYPT}$1$9hW1N3SC$J6vfo890zc50GC1jYHP211",
    "{SSHA}abcdefgh", "$1$9hW1N3SC$tooshort", "$6$rounds=12$salt$" + "a" * 86,
    "$3$abc", "$argon2id$v=19$m=65536,t=2,p=1$c2FsdA$aGFzaA", "$1$9hW1N3SC$J6vfo890zc50GC1jYHP21!",
    "$6$salt$" + "a" * 86 + "\n", None, 42,
])
def test_everything_else_is_refused(value: object) -> None:
    with pytest.raises(ValueError):
        passwords.check_crypt_hash(value)


def test_ldap_form_round_trip() -> None:
    crypt_hash = "$1$9hW1N3SC$J6vfo890zc50GC1jYHP211"
    assert passwords.to_ldap(crypt_hash) == "{CRYPT}" + crypt_hash
    assert passwords.from_ldap("{crypt}" + crypt_hash) == crypt_hash
    assert passwords.from_ldap("{SSHA}xyz") == "{SSHA}xyz"
