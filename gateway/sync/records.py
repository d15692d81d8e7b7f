"""The sync's records: what documents want, what a run skips, the desired state.

Pure data, shared by the document rules (:mod:`.document`), the plan and the
apply step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


class DocumentError(Exception):
    """A document as a whole cannot be used; the run must change nothing."""


@dataclass(frozen=True)
class Skip:
    """An entry (or a whole domain, name '') left as it is, and why."""

    domain: str
    name: str
    reason: str
    source: str = ""

    def as_json(self) -> dict[str, str]:
        return {"domain": self.domain, "name": self.name, "reason": self.reason,
                "source": self.source}


# Wanted entries are tuples: a million of them are held at once for a big
# document (B8), and a tuple costs a third of a dataclass in memory and time.
# Only the address is stored; the local part and the domain are read from it.

class _AccountFields(NamedTuple):
    address: str
    password: str                        # crypt hash, no {CRYPT} tag
    whitelist: tuple[str, ...] | None    # None: the document does not say
    submission_disabled: bool | None     # None: the document does not say
    subaddress_extension: bool | None = None   # None: the document does not say
    quota: int | None = None             # bytes; None: the document does not say


class _AddressParts:
    """``name`` and ``domain`` derived from the stored ``address``."""

    __slots__ = ()
    address: str

    @property
    def name(self) -> str:
        return self.address.rpartition("@")[0]

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]


class WantAccount(_AccountFields, _AddressParts):
    __slots__ = ()
    kind = "account"

    def __new__(cls, address: str, name: str, domain: str, password: str,
                whitelist: tuple[str, ...] | None,
                submission_disabled: bool | None,
                subaddress_extension: bool | None = None,
                quota: int | None = None) -> WantAccount:
        return tuple.__new__(cls, (address, password, whitelist, submission_disabled,
                                   subaddress_extension, quota))


class _AliasFields(NamedTuple):
    address: str
    targets: tuple[str, ...]


class WantAlias(_AliasFields, _AddressParts):
    __slots__ = ()
    kind = "alias"

    def __new__(cls, address: str, name: str, domain: str,
                targets: tuple[str, ...]) -> WantAlias:
        return tuple.__new__(cls, (address, targets))


class _BothFields(NamedTuple):
    address: str
    account: WantAccount
    alias: WantAlias


class WantBoth(_BothFields, _AddressParts):
    """An address one document lists as an account and as an alias (SPEC.md
    section 7): one entry, the mailbox and the forwarding."""

    __slots__ = ()
    kind = "both"


Want = WantAccount | WantAlias | WantBoth
_new = tuple.__new__   # builds a Want from its stored fields, skipping __new__ (hot path)


@dataclass
class UnknownKey:
    """A key of account or alias entries that mailgate does not know.

    The entries carrying it are applied from the keys mailgate knows; the key
    is reported once per run with how many entries carried it and the first.
    """

    kind: str          # "account" or "alias"
    key: str
    count: int
    domain: str        # the first entry that carried it
    name: str
    source: str = ""

    def as_json(self) -> dict[str, object]:
        return {"key": self.key, "kind": self.kind, "count": self.count,
                "example": {"domain": self.domain, "name": self.name, "source": self.source}}


@dataclass
class Desired:
    """What the documents ask for, after validation."""

    domains: set[str] = field(default_factory=set)            # listed, usable domains
    entries: dict[str, Want] = field(default_factory=dict)    # address -> wanted entry
    protected: set[str] = field(default_factory=set)          # addresses left as they are
    skipped: list[Skip] = field(default_factory=list)
    unknown_keys: list[UnknownKey] = field(default_factory=list)  # ignored entry keys
