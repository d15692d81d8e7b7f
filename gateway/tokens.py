"""API tokens: the admin token from configuration, scoped tokens in LDAP.

A scoped token reads ``mgt_<id>_<secret>``. Its entry
``cn=<id>,ou=tokens,ou=gateway,<base>`` keeps the SHA-256 of the secret (the
secret is 256 random bits, so a fast hash is the right tool: there is nothing
to brute-force), its domains and a read-only flag. Every gateway process reads
the same entries, so a revoke is in force everywhere at the next request.
Comparisons are constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from .addresses import normalize_domain
from .directory import Directory, eq
from .entries import (
    A_CN,
    A_DESCRIPTION,
    A_TOKEN_DOMAIN,
    A_TOKEN_HASH,
    A_TOKEN_READ_ONLY,
    OC_TOKEN,
    Layout,
    decode_bool,
    encode_bool,
)
from .errors import Invalid, NotFound

_TOKEN = re.compile(r"mgt_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")


@dataclass(frozen=True)
class Scope:
    """What a request may do: everything (admin) or some domains, maybe read-only."""

    name: str
    admin: bool = False
    domains: frozenset[str] = frozenset()
    read_only: bool = False

    def may_read(self, domain: str) -> bool:
        return self.admin or domain in self.domains

    def may_write(self, domain: str) -> bool:
        return self.may_read(domain) and not self.read_only

    @property
    def visible_domains(self) -> frozenset[str] | None:
        """Domains a list may show; None means all."""
        return None if self.admin else self.domains


ADMIN = Scope(name="admin", admin=True)


@dataclass(frozen=True)
class TokenInfo:
    id: str
    domains: tuple[str, ...]
    read_only: bool
    description: str


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class TokenStore:
    def __init__(self, directory: Directory, admin_token: str | None) -> None:
        self.dir = directory
        self.layout = Layout(directory.base_dn)
        self.base = self.layout.tokens
        self._admin_digest = _digest(admin_token) if admin_token else None

    def _dn(self, token_id: str) -> str:
        return self.layout.token(token_id)

    def authenticate(self, presented: str) -> Scope | None:
        """The scope of a presented token, or None. May raise DirectoryUnavailable."""
        if self._admin_digest is not None and hmac.compare_digest(
                _digest(presented), self._admin_digest):
            return ADMIN
        match = _TOKEN.fullmatch(presented)
        if match is None:
            return None
        token_id, secret = match.groups()
        entry = self.dir.read(self._dn(token_id), eq("objectClass", OC_TOKEN),
                              [A_TOKEN_HASH, A_TOKEN_DOMAIN, A_TOKEN_READ_ONLY])
        if entry is None:
            return None
        if not hmac.compare_digest(_digest(secret), entry.first(A_TOKEN_HASH) or ""):
            return None
        return Scope(name=f"token {token_id}",
                     domains=frozenset(d.lower() for d in entry.all(A_TOKEN_DOMAIN)),
                     read_only=decode_bool(entry.attrs.get(A_TOKEN_READ_ONLY)))

    def create(self, domains: list[str], read_only: bool = False,
               description: str = "") -> tuple[TokenInfo, str]:
        """Store a new scoped token; return its info and the token (shown once)."""
        if not domains:
            raise Invalid("a scoped token needs at least one domain", {"domains": "empty"})
        try:
            normal = sorted({normalize_domain(d) for d in domains})
        except ValueError as exc:
            raise Invalid("invalid domain", {"domains": str(exc)}) from None
        token_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        self.dir.add(self._dn(token_id), OC_TOKEN, {
            A_CN: [token_id], A_TOKEN_HASH: [_digest(secret)], A_TOKEN_DOMAIN: normal,
            A_TOKEN_READ_ONLY: encode_bool(read_only),
            A_DESCRIPTION: [description] if description else [],
        })
        info = TokenInfo(token_id, tuple(normal), read_only, description)
        return info, f"mgt_{token_id}_{secret}"

    def list(self) -> list[TokenInfo]:
        entries = self.dir.find(self.base, eq("objectClass", OC_TOKEN),
                                [A_CN, A_TOKEN_DOMAIN, A_TOKEN_READ_ONLY, A_DESCRIPTION])
        return sorted((TokenInfo(e.first(A_CN) or "", tuple(sorted(e.all(A_TOKEN_DOMAIN))),
                                 decode_bool(e.attrs.get(A_TOKEN_READ_ONLY)),
                                 e.first(A_DESCRIPTION) or "") for e in entries),
                      key=lambda t: t.id)

    def revoke(self, token_id: str) -> None:
        if not re.fullmatch(r"[0-9a-f]{16}", token_id):
            raise NotFound(f"no token {token_id[:40]!r}")
        try:
            self.dir.delete(self._dn(token_id))
        except NotFound:
            raise NotFound(f"no token {token_id}") from None
