"""Accounts and aliases: the rules of SPEC.md over the directory.

Pure domain code: no Flask here. The API and the JSON sync both call it.

How entries look in LDAP is :mod:`gateway.entries`' business. Accounts and
aliases share one RDN namespace per domain, so the directory itself refuses a
second entry for an address under any concurrency, with no lock. An address
may be both an account and an alias (SPEC.md section 7): still one entry, a
mailgateAccount with the auxiliary class mailgateForwarding. Adding or
removing one role of an address is one atomic modify of that entry, guarded
by an assertion on its object classes (and, where the structural class
changes between mailgateAccount and mailgateAlias, sent with the Relax Rules
control), so two concurrent requests cannot both add the same role.

Every create, delete and quota change goes through its domain's counters
(:mod:`gateway.tenants`): the claim is taken before the write and given back
if the write does not happen, so the domain's limits hold under any
concurrency.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

from . import passwords
from .addresses import (
    CATCH_ALL,
    Address,
    normalize_domain,
    normalize_local,
    parse_address,
    parse_recipients,
    parse_whitelist,
)
from .audit import AuditLog
from .directory import (
    Directory,
    Entry,
    Filter,
    all_of,
    any_of,
    ends_with,
    eq,
    not_,
    present,
)
from .entries import (
    A_DC,
    A_DISABLED,
    A_MAIL,
    A_ORIGIN,
    A_PASSWORD,
    A_QUOTA,
    A_SENDER,
    A_SUBADDRESS,
    A_TARGET,
    ACCOUNT_ATTRS,
    ACCOUNT_LIST_ATTRS,
    ACCOUNT_ROLE,
    ALIAS_ATTRS,
    ALIAS_LIST_ATTRS,
    ALIAS_ROLE,
    DOMAIN_ATTRS,
    KIND_ACCOUNT,
    KIND_ALIAS,
    OC_ACCOUNT,
    OC_ALIAS,
    OC_DOMAIN,
    OC_FORWARDING,
    ORIGIN_API,
    Account,
    Alias,
    Layout,
    account_attrs,
    alias_attrs,
    decode_account,
    decode_alias,
    decode_domain,
    decode_int,
    encode_bool,
    encode_int,
    role_changes,
)
from .errors import Conflict, Invalid, NotFound
from .tenants import MAX_QUOTA, Domain, Tenants, parse_size

__all__ = ["Account", "Alias", "Domain", "MailDirectory", "Page"]

log = logging.getLogger(__name__)

MAX_PAGE_SIZE = 10_000
# The virtual list view's offset is an LDAP INTEGER (0 .. maxInt, RFC 4511):
# slapd answers a larger one with protocolError. No directory holds that many
# entries, so a page starting past it is beyond the last page, known without
# asking LDAP.
MAX_VLV_OFFSET = 2**31 - 1
LAST_PAGE = "last"   # ``page=last`` of the lists: the page number it stands for
_CREATE_ATTEMPTS = 4

T = TypeVar("T")
ItemT = TypeVar("ItemT")


@dataclass(frozen=True)
class Page(Generic[ItemT]):
    """One page of a list: ``results`` are accounts or aliases, or what the
    caller's ``shape`` made of each (``list_accounts_as``)."""

    count: int
    page: int
    page_size: int
    results: list[ItemT]

    @property
    def has_next(self) -> bool:
        return self.page * self.page_size < self.count


class _Fields:
    """Collects per-field validation errors so one 400 names every bad field.

    Values returned by :meth:`take` may be used only after :meth:`done`.
    """

    def __init__(self) -> None:
        self.errors: dict[str, str] = {}

    def take(self, field: str, parse: Callable[[str], T], value: object,
             default: str | None = None) -> T:
        if value is None:
            value = default
        if value is None:
            self.errors[field] = "this field is required"
        elif not isinstance(value, str):
            self.errors[field] = "must be a string"
        else:
            try:
                return parse(value)
            except ValueError as exc:
                self.errors[field] = str(exc)
        return cast(T, None)

    def size(self, field: str, value: object, most: int) -> int:
        """A non-negative integer (a quota, a limit) from JSON or a form."""
        if value is None:
            self.errors[field] = "this field is required"
            return 0
        try:
            return parse_size(value, most)
        except ValueError as exc:
            self.errors[field] = str(exc)
            return 0

    def done(self) -> None:
        if self.errors:
            raise Invalid("invalid input", self.errors)


class MailDirectory:
    """Accounts and aliases stored in LDAP; every method may raise DirectoryUnavailable."""

    def __init__(self, directory: Directory, password_rounds: int,
                 audit: AuditLog | None = None) -> None:
        self.dir = directory
        self.audit = audit
        self.layout = Layout(directory.base_dn)
        self.base = self.layout.domains
        self.password_rounds = password_rounds
        self.domains = Tenants(directory, audit)

    def _changed(self, operation: str, address: str,
                 fields: dict[str, object] | None = None) -> None:
        if self.audit is not None:
            self.audit.record(operation, address.lower(), fields)

    # -- names --------------------------------------------------------------

    def domain_dn(self, domain: str) -> str:
        return self.layout.domain(domain)

    def entry_dn(self, address: Address) -> str:
        return self.layout.address(str(address))

    @staticmethod
    def parse_id(entry_id: str) -> Address:
        """The normal address for an id from a URL; NotFound if it cannot be one."""
        try:
            return parse_address(entry_id)
        except ValueError:
            raise NotFound(f"no such address: {entry_id[:300]!r}") from None

    # -- shared entry mechanics ------------------------------------------------

    def _find(self, address: Address, object_class: str, attrs: Iterable[str]) -> Entry:
        """The entry with the role ``object_class`` (OC_ACCOUNT: an account; OC_ALIAS:
        an alias or an account's forwarding) for ``address``; NotFound."""
        found = self.dir.find(self.base, all_of(_role(object_class),
                                                eq(A_MAIL, str(address))), list(attrs), limit=2)
        if not found:
            kind = "account" if object_class == OC_ACCOUNT else "alias"
            raise NotFound(f"no {kind} {address}")
        return found[0]

    def _create(self, address: Address, object_class: str,
                attrs: dict[str, list[str]]) -> str:
        """Add the entry (and its domain if needed); Conflict if the address is taken."""
        dn = self.entry_dn(address)
        for _attempt in range(_CREATE_ATTEMPTS):
            self.domains.ensure(address.domain)
            try:
                self.dir.add(dn, object_class, attrs)
                return dn
            except NotFound:
                continue  # the domain entry was removed meanwhile: make it again
            except Conflict:
                raise Conflict(f"{address} already exists as {self._kind_of(address)}",
                               {"name": "address already in use"}) from None
        raise Conflict(f"{address}: its domain entry keeps disappearing; try again")

    def _add_role(self, address: Address, role: str, changes: dict[str, list[str]]) -> str:
        """Give the existing entry of ``address`` the other role; Conflict if it has it.

        ``role`` is OC_ACCOUNT (an alias gets a mailbox) or OC_ALIAS (an
        account gets a forwarding); ``changes`` are the role's attributes.
        """
        dn = self.entry_dn(address)
        entry = self.dir.read(dn, present("objectClass"), ["objectClass"])
        if entry is not None:
            classes = [c for c in entry.all("objectClass")
                       if c.lower() not in (OC_ALIAS.lower(), OC_FORWARDING.lower())]
            if role == OC_ACCOUNT:
                # The structural class changes: an alias becomes an account with
                # a forwarding, atomically, only while it is a plain alias.
                classes = [c for c in classes if c.lower() != OC_ACCOUNT.lower()]
                changes = {**changes, "objectClass": [*classes, OC_ACCOUNT, OC_FORWARDING]}
                guard = all_of(eq("objectClass", OC_ALIAS), not_(ACCOUNT_ROLE))
            else:
                changes = {**changes, "objectClass": [*classes, OC_FORWARDING]}
                guard = all_of(ACCOUNT_ROLE, not_(eq("objectClass", OC_FORWARDING)))
            if self.dir.modify_if(dn, changes, guard, relax=role == OC_ACCOUNT):
                return dn
        kind = "an account" if role == OC_ACCOUNT else "an alias"
        raise Conflict(f"{address} already is {kind}", {"name": "address already in use"})

    def _remove_role(self, entry: Entry, role: str) -> bool:
        """Take ``role`` away from an entry that has both; False if it has one only."""
        classes = entry.all("objectClass")
        lowered = {c.lower() for c in classes}
        if OC_FORWARDING.lower() not in lowered or OC_ACCOUNT.lower() not in lowered:
            return False
        drop = {OC_FORWARDING.lower()}
        if role == OC_ACCOUNT:
            drop.add(OC_ACCOUNT.lower())
        kept = [c for c in classes if c.lower() not in drop]
        changes = role_changes(KIND_ALIAS if role == OC_ACCOUNT else KIND_ACCOUNT)
        changes["objectClass"] = kept + ([OC_ALIAS] if role == OC_ACCOUNT else [])
        both = all_of(ACCOUNT_ROLE, eq("objectClass", OC_FORWARDING))
        if not self.dir.modify_if(entry.dn, changes, both, relax=role == OC_ACCOUNT):
            raise Conflict(f"{entry.first(A_MAIL)} changed meanwhile; try again")
        return True

    def _kind_of(self, address: Address) -> str:
        found = self.dir.find(self.base, eq(A_MAIL, str(address)), ["objectClass"], limit=1)
        if found and OC_ALIAS.lower() in (c.lower() for c in found[0].all("objectClass")):
            return "an alias"
        return "an account" if found else "an entry"

    def _remove_parent(self, address: str) -> None:
        self.domains.remove_if_unused(address.rpartition("@")[2])

    def _page(self, object_class: str, attrs: Iterable[str], domains: Iterable[str] | None,
              page: int | str, page_size: int, convert: Callable[[Entry], T]) -> Page[T]:
        """The page, each entry through ``convert`` as it arrives (LAST_PAGE
        resolved to its number)."""
        _check_page(page, page_size)
        flt = _role(object_class)
        base = self.base
        if domains is not None:
            names = sorted(set(domains))
            if not names:
                return Page(0, 1, page_size, [])
            if len(names) == 1:
                base = self.domain_dn(names[0])
            else:
                flt = all_of(flt, any_of(*(ends_with(A_MAIL, "@" + d) for d in names)))
        return self._sorted(base, flt, attrs, A_MAIL, page, page_size, convert)

    def _sorted(self, base: str, flt: Filter, attrs: Iterable[str], sort_attr: str,
                page: int | str, page_size: int, convert: Callable[[Entry], T]) -> Page[T]:
        last = page == LAST_PAGE
        number = page if isinstance(page, int) else 1
        if last:
            # The first page says how many there are; the last one then
            # continues slapd's sorted snapshot of that same search.
            result = self.dir.sorted_page(base, flt, list(attrs), sort_attr, 1, page_size,
                                          convert)
            number = max(1, -(-result.total // page_size))
            if number == 1:
                return Page(result.total, 1, page_size, result.entries)
        result = self.dir.sorted_page(base, flt, list(attrs), sort_attr,
                                      (number - 1) * page_size + 1, page_size, convert,
                                      continuation=number > 1)
        if number > 1 and (number - 1) * page_size >= result.total:
            raise NotFound("Invalid page.", {"page": "beyond the last page"})
        return Page(result.total, number, page_size, result.entries)

    # -- domains ------------------------------------------------------------

    def list_domains(self, names: Iterable[str] | None, page: int | str = 1,
                     page_size: int = 100) -> Page[Domain]:
        """A page of the domains (None: all; else those named), ordered by name."""
        _check_page(page, page_size)
        flt = eq("objectClass", OC_DOMAIN)
        if names is not None:
            wanted = sorted(set(names))
            if not wanted:
                return Page(0, 1, page_size, [])
            flt = all_of(flt, any_of(*(eq(A_DC, n) for n in wanted)))
        found = self._sorted(self.base, flt, DOMAIN_ATTRS, A_DC, page, page_size,
                             decode_domain)
        # A domain entry without counters (made by hand, or before they
        # existed) is counted once, here.
        results = [d if d.counted else self.domains.recount(d.name) for d in found.results]
        return Page(found.count, found.page, found.page_size, results)

    def mailboxes(self, domain: str) -> Iterator[tuple[str, int]]:
        """(address, quota) of every account of ``domain`` (a paged read)."""
        for entry in self.dir.iterate(self.domain_dn(domain), ACCOUNT_ROLE, [A_MAIL, A_QUOTA]):
            address = entry.first(A_MAIL)
            if address:
                yield address.lower(), decode_int(entry.attrs.get(A_QUOTA))

    # -- accounts -----------------------------------------------------------

    def create_account(self, name: object, domain: object, password: object,
                       submission_disabled: bool = False, spoofing_whitelist: object = "",
                       origin: str = ORIGIN_API, subaddress_extension: bool = False,
                       quota: object = None) -> Account:
        """A new account (or an alias's address gets a mailbox); ``quota`` in
        bytes, None: the domain's default_quota. LimitExceeded past a limit."""
        fields = _Fields()
        local = fields.take("name", normalize_local, name)
        if local == CATCH_ALL:
            fields.errors["name"] = "'*' is reserved for the catch-all alias"
        dom = fields.take("domain", normalize_domain, domain)
        plain = fields.take("password", passwords.check_plain, password)
        whitelist = fields.take("spoofing_whitelist", parse_whitelist, spoofing_whitelist, "")
        wanted = fields.size("quota", quota, MAX_QUOTA) if quota is not None else None
        fields.done()
        address = Address(local, dom)
        if len(str(address)) > 254:
            raise Invalid("invalid address", {"name": "the address is longer than 254 octets"})
        crypt_hash = passwords.hash_password(plain, self.password_rounds)
        given = self.domains.claim(dom, accounts=1, quota=wanted, mailbox=True)
        attrs = account_attrs(str(address), crypt_hash, whitelist, submission_disabled, origin,
                              subaddress_extension, given)
        try:
            try:
                dn = self._create(address, OC_ACCOUNT, attrs)
            except Conflict:
                # An alias of that address gets the mailbox (it keeps forwarding).
                del attrs[A_MAIL]
                dn = self._add_role(address, OC_ACCOUNT, attrs)
        except BaseException:
            self.domains.release(dom, accounts=1, quota=given)
            raise
        log.info("account created: %s (origin %s)", address, origin)
        self._changed("account.create", str(address), {
            "password": None, "spoofing_whitelist": ",".join(whitelist),
            "submission_disabled": submission_disabled, "quota": given})
        return Account(str(address), local, dom, crypt_hash, ",".join(whitelist),
                       submission_disabled, subaddress_extension, origin, dn, given)

    def get_account(self, entry_id: str) -> Account:
        return decode_account(self._find(self.parse_id(entry_id), OC_ACCOUNT, ACCOUNT_ATTRS))

    def list_accounts(self, domains: Iterable[str] | None, page: int | str = 1,
                      page_size: int = 100) -> Page[Account]:
        """A page of the accounts of ``domains`` (None: all), ordered by id."""
        return self._page(OC_ACCOUNT, ACCOUNT_LIST_ATTRS, domains, page, page_size,
                          decode_account)

    def list_accounts_as(self, shape: Callable[[Account], T], domains: Iterable[str] | None,
                         page: int | str = 1, page_size: int = 100) -> Page[T]:
        """As list_accounts, each account as ``shape`` makes it (the API: its
        JSON object), made while the next entries arrive from slapd."""
        return self._page(OC_ACCOUNT, ACCOUNT_LIST_ATTRS, domains, page, page_size,
                          lambda entry: shape(decode_account(entry)))

    def set_password(self, entry_id: str, password: object) -> Account:
        fields = _Fields()
        plain = fields.take("password", passwords.check_plain, password)
        fields.done()
        entry = self._find(self.parse_id(entry_id), OC_ACCOUNT, ["1.1"])
        crypt_hash = passwords.hash_password(plain, self.password_rounds)
        self.dir.modify(entry.dn, {A_PASSWORD: [passwords.to_ldap(crypt_hash)]})
        log.info("password set: %s", entry_id.lower())
        self._changed("account.set_password", entry_id, {"password": None})
        return self.get_account(entry_id)

    def set_submission_disabled(self, entry_id: str, disabled: bool) -> Account:
        entry = self._find(self.parse_id(entry_id), OC_ACCOUNT, ["1.1"])
        self.dir.modify(entry.dn, {A_DISABLED: encode_bool(disabled)})
        log.info("submission %s: %s", "disabled" if disabled else "enabled", entry_id.lower())
        self._changed("account.set_submission", entry_id, {"submission_disabled": disabled})
        return self.get_account(entry_id)

    def set_subaddress_extension(self, entry_id: str, enabled: bool) -> Account:
        entry = self._find(self.parse_id(entry_id), OC_ACCOUNT, ["1.1"])
        self.dir.modify(entry.dn, {A_SUBADDRESS: encode_bool(enabled)})
        log.info("sub-addressing %s: %s", "enabled" if enabled else "disabled",
                 entry_id.lower())
        self._changed("account.set_subaddress", entry_id, {"subaddress_extension": enabled})
        return self.get_account(entry_id)

    def set_quota(self, entry_id: str, quota: object) -> Account:
        """The account's quota in bytes (0: none), within its domain's max_quota."""
        fields = _Fields()
        wanted = fields.size("quota", quota, MAX_QUOTA)
        fields.done()
        address = self.parse_id(entry_id)
        for _attempt in range(_CREATE_ATTEMPTS):
            entry = self._find(address, OC_ACCOUNT, [A_QUOTA])
            old = decode_int(entry.attrs.get(A_QUOTA))
            if old == wanted:
                return self.get_account(entry_id)
            unchanged = eq(A_QUOTA, str(old)) if old else not_(present(A_QUOTA))
            raised = wanted > old or not wanted
            if raised:
                self.domains.claim(address.domain, quota=wanted, old_quota=old, mailbox=True)
            try:
                done = self.dir.modify_if(entry.dn, {A_QUOTA: encode_int(wanted)}, unchanged)
            except BaseException:
                if raised:
                    self.domains.release(address.domain, quota=wanted - old)
                raise
            if not done:
                # Changed meanwhile: give the claim back and look again.
                if raised:
                    self.domains.release(address.domain, quota=wanted - old)
                continue
            if not raised:
                self.domains.release(address.domain, quota=old - wanted)
            log.info("quota set: %s %d", address, wanted)
            self._changed("account.set_quota", str(address), {"quota": wanted})
            return self.get_account(entry_id)
        raise Conflict(f"{address} changed during the request; try again")

    def set_spoofing_whitelist(self, entry_id: str, value: object) -> Account:
        fields = _Fields()
        # No value (or null) clears the list, as the original service did.
        whitelist = fields.take("spoofing_whitelist", parse_whitelist, value, "")
        fields.done()
        entry = self._find(self.parse_id(entry_id), OC_ACCOUNT, ["1.1"])
        self.dir.modify(entry.dn, {A_SENDER: whitelist})
        log.info("spoofing whitelist set: %s", entry_id.lower())
        self._changed("account.set_spoofing_whitelist", entry_id,
                      {"spoofing_whitelist": ",".join(whitelist)})
        return self.get_account(entry_id)

    def delete_account(self, entry_id: str) -> None:
        address = self.parse_id(entry_id)
        entry = self._find(address, OC_ACCOUNT, ["objectClass", A_MAIL, A_QUOTA])
        quota = decode_int(entry.attrs.get(A_QUOTA))
        if self._remove_role(entry, OC_ACCOUNT):
            self.domains.release(address.domain, accounts=1, quota=quota)
            log.info("account deleted: %s (its alias stays)", entry_id.lower())
            self._changed("account.delete", entry_id)
            return
        if not self.dir.delete_if(entry.dn, not_(eq("objectClass", OC_FORWARDING))):
            raise Conflict(f"{entry_id.lower()} changed meanwhile; try again")
        self.domains.release(address.domain, accounts=1, quota=quota)
        self._remove_parent(str(address))
        log.info("account deleted: %s", entry_id.lower())
        self._changed("account.delete", entry_id)

    # -- aliases ------------------------------------------------------------

    def create_alias(self, name: object, domain: object, to: object,
                     origin: str = ORIGIN_API) -> Alias:
        fields = _Fields()
        local = fields.take("name", normalize_local, name)
        dom = fields.take("domain", normalize_domain, domain)
        targets = fields.take("to", parse_recipients, to)
        fields.done()
        address = Address(local, dom)
        _check_not_self(address, targets)
        self.domains.claim(dom, aliases=1)
        try:
            try:
                dn = self._create(address, OC_ALIAS, alias_attrs(str(address), targets, origin))
            except Conflict:
                # An account of that address also forwards from now on.
                dn = self._add_role(address, OC_ALIAS, {A_TARGET: targets, A_ORIGIN: [origin]})
        except BaseException:
            self.domains.release(dom, aliases=1)
            raise
        log.info("alias created: %s (origin %s)", address, origin)
        self._changed("alias.create", str(address), {"to": ",".join(targets)})
        return Alias(str(address), local, dom, ",".join(targets), origin, dn)

    def get_alias(self, entry_id: str) -> Alias:
        return decode_alias(self._find(self.parse_id(entry_id), OC_ALIAS, ALIAS_ATTRS))

    def list_aliases(self, domains: Iterable[str] | None, page: int | str = 1,
                     page_size: int = 100) -> Page[Alias]:
        """A page of the aliases of ``domains`` (None: all), ordered by id."""
        return self._page(OC_ALIAS, ALIAS_LIST_ATTRS, domains, page, page_size, decode_alias)

    def list_aliases_as(self, shape: Callable[[Alias], T], domains: Iterable[str] | None,
                        page: int | str = 1, page_size: int = 100) -> Page[T]:
        """As list_aliases, each alias as ``shape`` makes it."""
        return self._page(OC_ALIAS, ALIAS_LIST_ATTRS, domains, page, page_size,
                          lambda entry: shape(decode_alias(entry)))

    def set_alias_targets(self, entry_id: str, to: object) -> Alias:
        fields = _Fields()
        targets = fields.take("to", parse_recipients, to)
        fields.done()
        address = self.parse_id(entry_id)
        _check_not_self(address, targets)
        entry = self._find(address, OC_ALIAS, ["1.1"])
        self.dir.modify(entry.dn, {A_TARGET: targets})
        log.info("alias updated: %s", address)
        self._changed("alias.set_to", str(address), {"to": ",".join(targets)})
        return self.get_alias(entry_id)

    def delete_alias(self, entry_id: str) -> None:
        address = self.parse_id(entry_id)
        entry = self._find(address, OC_ALIAS, ["objectClass", A_MAIL])
        if self._remove_role(entry, OC_ALIAS):
            self.domains.release(address.domain, aliases=1)
            log.info("alias deleted: %s (its account stays)", entry_id.lower())
            self._changed("alias.delete", entry_id)
            return
        if not self.dir.delete_if(entry.dn, not_(ACCOUNT_ROLE)):
            raise Conflict(f"{entry_id.lower()} changed meanwhile; try again")
        self.domains.release(address.domain, aliases=1)
        self._remove_parent(str(address))
        log.info("alias deleted: %s", entry_id.lower())
        self._changed("alias.delete", entry_id)


def _check_page(page: int | str, page_size: int) -> None:
    if page != LAST_PAGE and (not isinstance(page, int) or page < 1):
        raise Invalid("invalid page", {"page": "must be 1 or more, or last"})
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise Invalid("invalid page size", {"page_size": f"must be 1 to {MAX_PAGE_SIZE}"})
    if isinstance(page, int) and (page - 1) * page_size + 1 > MAX_VLV_OFFSET:
        raise NotFound("Invalid page.", {"page": "beyond the last page"})


def _role(object_class: str) -> Filter:
    return ALIAS_ROLE if object_class == OC_ALIAS else eq("objectClass", object_class)


def _check_not_self(address: Address, targets: list[str]) -> None:
    if str(address) in targets:
        raise Invalid("invalid input", {"to": "an alias cannot deliver to itself"})
