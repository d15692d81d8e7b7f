"""What the directory hands out and takes in: entries, pages, writes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, NamedTuple, TypeVar

from .filters import Filter

Attrs = dict[str, list[bytes]]
# Modifications: attribute -> list of new values (empty list deletes it).
Changes = Mapping[str, Sequence[str | bytes]]


class Entry(NamedTuple):
    # A NamedTuple, not a dataclass: a list page makes 10 000 of them per request
    # (a frozen dataclass's __init__ costs twice as much).
    dn: str
    attrs: Attrs

    def first(self, name: str) -> str | None:
        values = self.attrs.get(name)
        return values[0].decode("utf-8", "replace") if values else None

    def all(self, name: str) -> list[str]:
        return [v.decode("utf-8", "replace") for v in self.attrs.get(name, ())]


T = TypeVar("T")


@dataclass(frozen=True)
class SortedPage(Generic[T]):
    """Part of a sorted result: how many entries it has in all, and the
    page's entries as the caller converted them."""

    total: int
    entries: list[T]


@dataclass(frozen=True)
class Write:
    """One change for :meth:`Directory.write_many`.

    ``add``: a new entry of ``object_class`` with ``attrs`` (empty lists are
    left out); ``modify``: each attribute of ``attrs`` is replaced (an empty
    list deletes it); ``add_values`` / ``delete_values``: the values are added
    to or removed from each attribute; ``increment``: each attribute's one
    integer value is increased by the (signed) value given (RFC 4525);
    ``delete``: ``attrs`` is unused. ``assertion`` (modify, increment,
    delete): change the entry only while it matches (RFC 4528), atomically.
    ``relax`` (modify): send OpenLDAP's Relax Rules control, which lets a
    modify change the entry's structural object class (an account becoming
    an alias and back, in one atomic operation). An ``objectClass`` key in
    an add's ``attrs`` adds auxiliary classes to ``object_class``.
    """

    op: str
    dn: str
    attrs: Mapping[str, Sequence[str | bytes]] = field(default_factory=dict)
    object_class: str = ""
    assertion: Filter | None = None
    relax: bool = False
