"""One password policy for the API, the sync and the directory.

New passwords are hashed with SHA512-crypt (``$6$rounds=N$``) through libpass,
the maintained fork of passlib (same ``passlib`` import; it does not depend on
the ``crypt`` module that Python 3.13 removed, and on this machine it hashes
as fast as libc). Imported hashes are accepted only in crypt(3) forms that
both slapd (libxcrypt) and Dovecot verify. In LDAP every hash is stored as
``{CRYPT}<hash>``; the API and the JSON show it without the tag.
"""

from __future__ import annotations

import re

from passlib.hash import sha512_crypt

CRYPT_TAG = "{CRYPT}"
# SHA512-crypt costs CPU in proportion to the password's length in octets:
# at 100 000 rounds 16 characters took 0.06 s, 256 0.15 s, 1024 0.44 s and
# 4096 1.0 s on this machine. 256 characters is far beyond any passphrase a
# person types; the octet bound keeps 4-byte characters at the same cost.
MAX_PLAIN = 256
MAX_PLAIN_OCTETS = 512
# Imported hashes: the longest supported form (sha512-crypt with rounds) is
# 123 characters; yescrypt's parameters have no fixed length.
MAX_HASH = 512

_B64 = r"[./A-Za-z0-9]"
_ROUNDS = r"(?:rounds=[1-9][0-9]{3,8}\$)?"
_CRYPT_FORMS = {
    "md5-crypt": re.compile(rf"\$1\${_B64}{{1,8}}\${_B64}{{22}}"),
    "sha256-crypt": re.compile(rf"\$5\${_ROUNDS}{_B64}{{1,16}}\${_B64}{{43}}"),
    "sha512-crypt": re.compile(rf"\$6\${_ROUNDS}{_B64}{{1,16}}\${_B64}{{86}}"),
    "bcrypt": re.compile(rf"\$2[aby]\$(?:0[4-9]|[12][0-9]|3[01])\${_B64}{{53}}"),
    "yescrypt": re.compile(rf"\$y\${_B64}+\${_B64}+\${_B64}{{43}}"),
}
SCHEMES = tuple(_CRYPT_FORMS)
# The form a hash can be, by its first three characters: one match per hash
# (a sync checks every hash of its documents).
_FORM_BY_PREFIX = {"$1$": _CRYPT_FORMS["md5-crypt"], "$5$": _CRYPT_FORMS["sha256-crypt"],
                   "$6$": _CRYPT_FORMS["sha512-crypt"], "$2a": _CRYPT_FORMS["bcrypt"],
                   "$2b": _CRYPT_FORMS["bcrypt"], "$2y": _CRYPT_FORMS["bcrypt"],
                   "$y$": _CRYPT_FORMS["yescrypt"]}


def check_plain(password: object) -> str:
    """Return a password fit for hashing, or raise ValueError saying why."""
    if not isinstance(password, str):
        raise ValueError("must be a string")
    if password == "":
        raise ValueError("must not be empty")
    if "\x00" in password:
        raise ValueError("must not contain NUL characters")
    if len(password) > MAX_PLAIN:
        raise ValueError(f"longer than {MAX_PLAIN} characters (at most {MAX_PLAIN})")
    try:
        octets = len(password.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode text (lone surrogate)") from None
    if octets > MAX_PLAIN_OCTETS:
        raise ValueError(f"longer than {MAX_PLAIN_OCTETS} bytes in UTF-8 "
                         f"(at most {MAX_PLAIN_OCTETS})")
    return password


# passlib builds its base64 engine's tables on first use, and that lazy step is
# not thread-safe: two requests hashing at once in a fresh worker could fail
# with AttributeError ('_lazy_opts', found by the tenancy test's 16 clients).
# One hash at import does it before any thread can race (about a millisecond).
sha512_crypt.using(rounds=1000).hash("warm-up")


def hash_password(password: str, rounds: int) -> str:
    """SHA512-crypt hash (no ``{CRYPT}`` tag) of a checked plain password."""
    return str(sha512_crypt.using(rounds=rounds).hash(password))


def check_crypt_hash(value: object) -> str:
    """Return ``value`` if it is a supported crypt(3) hash; otherwise ValueError.

    Plain text is refused above all: it must never reach the directory.
    """
    if not isinstance(value, str) or not value:
        raise ValueError("must be a crypt(3) hash string")
    if len(value) > MAX_HASH:
        raise ValueError(f"longer than {MAX_HASH} characters: not a supported crypt hash")
    form = _FORM_BY_PREFIX.get(value[:3])
    if form is not None and form.fullmatch(value):
        return value
    if value.startswith("{"):
        raise ValueError("give the crypt hash without a {SCHEME} tag")
    raise ValueError("not a supported crypt hash ($1$, $5$, $6$, $2a$/$2b$/$2y$, $y$); "
                     "plain-text passwords are never accepted here")


def to_ldap(crypt_hash: str) -> str:
    return CRYPT_TAG + crypt_hash


def from_ldap(value: str) -> str:
    """The stored value as the API shows it: ``{CRYPT}`` (any case) stripped."""
    if value.startswith(CRYPT_TAG) or value[: len(CRYPT_TAG)].upper() == CRYPT_TAG:
        return value[len(CRYPT_TAG):]
    return value
