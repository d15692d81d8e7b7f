"""What the sync tests share: the SPEC.md document, its hashes, write counting."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from passlib.hash import md5_crypt, sha512_crypt

from gateway.slapd import ManagedSlapd
from gateway.sync.runner import SyncRunner

from .slapd import ldap_tool

SEED_HASH = "$1$9hW1N3SC$J6vfo890zc50GC1jYHP211"   # SPEC.md section 2 (password unknown)
BOB_PASSWORD = "bob-secret-100000"
BOB_HASH = sha512_crypt.using(rounds=100_000).hash(BOB_PASSWORD)
CAROL_PASSWORD = "carol-md5"
CAROL_HASH = md5_crypt.hash(CAROL_PASSWORD)
CHEAP_HASH = sha512_crypt.using(rounds=1000).hash("cheap")


def spec_document() -> dict[str, object]:
    """The document of SPEC.md section 2 (bob's hash made here, rounds=100000)."""
    return {
        "example.com": {
            "account": [
                {"name": "alice", "password": SEED_HASH},
                {"name": "bob", "password": BOB_HASH},
            ],
            "alias": [
                {"name": "office", "to": "alice@example.com,bob@example.com"},
            ],
        },
    }


@dataclass
class Writes:
    """Every LDAP write request a Directory sends: (operation, dn)."""

    ops: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, operation: str, dn: str) -> None:
        self.ops.append((operation, dn))

    def mail(self) -> list[tuple[str, str]]:
        """Only writes to the mail subtree (not the lock and status entries)."""
        return [(op, dn) for op, dn in self.ops if ",ou=domains," in dn]

    def clear(self) -> None:
        self.ops.clear()


# The type of the ``make_runner`` fixture (tests/sync/conftest.py).
MakeRunner = Callable[..., SyncRunner]


def adds_by_hand_while_applying(slapd: ManagedSlapd,
                                address: str) -> Callable[[str, int, int], None]:
    """A run's ``progress`` callback that adds an alias ``address`` by hand (as the
    directory admin, no origin) when the run starts applying: after its plan,
    before its entries are written (its domains exist by then)."""
    domain = address.rpartition("@")[2]
    added: list[str] = []

    def meanwhile(stage: str, _done: int, _total: int) -> None:
        if stage == "applying" and not added:
            added.append(ldap_tool(slapd, "ldapadd", input=(
                f"dn: mail={address},dc={domain},ou=domains,{slapd.base_dn}\n"
                f"objectClass: mailgateAlias\nmail: {address}\n"
                "mailgateAliasTarget: someone@example.net\n")).stdout)
    return meanwhile
