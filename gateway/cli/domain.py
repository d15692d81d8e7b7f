"""``mailgate domain ...``: domains with their limits, counts and usage.

    mailgate domain list [--page N] [--page-size N]
    mailgate domain show NAME
    mailgate domain create NAME [--max-accounts N] [--max-aliases N]
                                [--default-quota SIZE] [--max-quota SIZE]
    mailgate domain set-limits NAME [the same options]   those given change; 0 removes one
    mailgate domain delete NAME [--cascade]              --cascade: its entries too
    mailgate domain usage NAME                           what its mailboxes hold (Dovecot)
    mailgate domain recount [NAME]                       repair drifted counters (LDAP)

All but ``recount`` are clients of a running gateway's REST API (``--json`` and
the connection options of gateway/cli/remote.py); create, set-limits and
delete need the admin token. A SIZE is bytes or a number with a binary unit:
K, M, G, T, P = 1024, 1024^2, ... (10G, 512M, 1.5GiB).

``recount`` is a tool of the directory's operator, like ``mailgate token``: it
reads the server's ``MAILGATE_*`` settings and talks to LDAP itself. It counts
the entries of each domain (or of NAME) and rewrites the counters that
drifted (a crash between a claim and its write, entries added or removed with
LDAP tools), through :meth:`gateway.tenants.Tenants.recount_all`, and prints
what it repaired.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from ..access import reachable
from ..addresses import normalize_domain
from ..client import EXIT_NOT_FOUND, EXIT_USAGE, ApiClient, ApiError, ConfigError
from ..directory import Directory, eq
from ..entries import DOMAIN_ATTRS, OC_DOMAIN, Domain, decode_domain
from ..errors import NotFound
from ..mail import MailDirectory
from ..settings import Settings
from .remote import (
    SIZE_HELP,
    USAGE_FORMATS,
    Column,
    action,
    count_arg,
    exact_quota,
    exact_size,
    limit_text,
    print_json,
    quota_text,
    resource_commands,
    show,
    show_deleted,
    show_list,
    size_arg,
    size_text,
)

LIMITS = (("max_accounts", count_arg, "N", "the most accounts the domain may hold"),
          ("max_aliases", count_arg, "N", "the most aliases the domain may hold"),
          ("default_quota", size_arg, "SIZE", "the quota of a new account created "
                                              "without one"),
          ("max_quota", size_arg, "SIZE", "the most its accounts' quotas may add up to"))
FORMATS = {"max_accounts": limit_text, "max_aliases": limit_text,
           "default_quota": exact_quota, "max_quota": exact_quota,
           "quota_allocated": exact_size}
COUNTERS = ("accounts", "aliases", "quota_allocated")


def _used(field: str, limit: str, text: Callable[[Any], str] = str) -> Column:
    """``used/limit`` (``used`` alone when there is no limit)."""
    def cell(domain: dict[str, Any]) -> str:
        used, most = text(domain.get(field)), domain.get(limit)
        return f"{used}/{text(most)}" if most else used
    return cell


COLUMNS: tuple[Column, ...] = (
    "name", _used("accounts", "max_accounts"), _used("aliases", "max_aliases"),
    _used("quota_allocated", "max_quota", size_text),
    lambda domain: quota_text(domain.get("default_quota")), "over_limit")
HEADERS = ("DOMAIN", "ACCOUNTS", "ALIASES", "QUOTA ALLOCATED", "DEFAULT QUOTA", "OVER LIMIT")


def add_commands(subparsers: Any) -> None:
    sub, common = resource_commands(subparsers, "domain", "domains", __doc__, _list, _show,
                                    key="name", by_domain=False)
    _limit_options(action(sub, "create", _create, "create an empty domain with its limits "
                          "(admin)", common))
    _limit_options(action(sub, "set-limits", _set_limits, "change a domain's limits: those "
                          "given change, the others stay (admin)", common))
    delete = action(sub, "delete", _delete, "delete a domain (admin); refused while it holds "
                    "accounts or aliases, unless --cascade", common)
    delete.add_argument("name")
    delete.add_argument("--cascade", action="store_true",
                        help="delete its accounts and aliases too (their maildirs stay on "
                             "disk); an interrupted cascade is finished by running it again")
    action(sub, "usage", _usage, "what the domain's mailboxes hold, as Dovecot counts it",
           common).add_argument("name")

    help = ("count the entries of every domain (or of NAME) and repair the counters that "
            "drifted; talks to LDAP with the server's MAILGATE_* settings, like mailgate "
            "token")
    recount = sub.add_parser("recount", help=help, description=help)
    recount.add_argument("name", nargs="?", help="only this domain")
    recount.add_argument("--json", action="store_true",
                         help="print {checked, repaired: [{name, before, after}]}")
    recount.set_defaults(func=_recount)


def _limit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the domain (IDN allowed)")
    for field, kind, metavar, help in LIMITS:
        unit = SIZE_HELP if kind is size_arg else "0: no limit"
        parser.add_argument("--" + field.replace("_", "-"), type=kind, metavar=metavar,
                            dest=field, help=f"{help}; {unit}")


def _limits(args: argparse.Namespace) -> dict[str, int]:
    return {field: getattr(args, field) for field, *_ in LIMITS
            if getattr(args, field) is not None}


def _shown(args: argparse.Namespace, domain: Any) -> int:
    return show(args, domain, (), FORMATS)


def _list(api: ApiClient, args: argparse.Namespace) -> int:
    return show_list(args, api.domains(args.page, args.page_size), HEADERS, COLUMNS)


def _show(api: ApiClient, args: argparse.Namespace) -> int:
    return _shown(args, api.domain(args.name))


def _create(api: ApiClient, args: argparse.Namespace) -> int:
    return _shown(args, api.create_domain(args.name, _limits(args)))


def _set_limits(api: ApiClient, args: argparse.Namespace) -> int:
    limits = _limits(args)
    if not limits:
        raise ConfigError("no limit given: pass one or more of "
                          + ", ".join("--" + f.replace("_", "-") for f, *_ in LIMITS))
    return _shown(args, api.set_domain_limits(args.name, limits))


def _delete(api: ApiClient, args: argparse.Namespace) -> int:
    try:
        api.delete_domain(args.name, args.cascade)
    except ApiError as exc:
        if exc.status == 409 and "cascade" in exc.errors:
            # The API's hint names its query parameter; this command's is an option.
            raise ApiError(exc.message.replace("?cascade=true", "--cascade"), exc.errors,
                           exc.status) from None
        raise
    return show_deleted(args, "domain", args.name)


def _usage(api: ApiClient, args: argparse.Namespace) -> int:
    return show(args, api.domain_usage(args.name), (), USAGE_FORMATS)


# -- recount: the directory itself ------------------------------------------------------


def _counters(domain: Domain) -> dict[str, int] | None:
    """What a domain's counters said (None: it had none)."""
    return {c: getattr(domain, c) for c in COUNTERS} if domain.counted else None


def _recount(args: argparse.Namespace, settings: Settings) -> int:
    if args.name is not None:
        try:
            name = normalize_domain(args.name)
        except ValueError as exc:
            print(f"mailgate: not a domain: {args.name!r} ({exc})", file=sys.stderr)
            return EXIT_USAGE
    with reachable(settings) as (resolved, _slapd):
        directory = Directory(resolved)
        try:
            mail = MailDirectory(directory, settings.password_rounds)
            if args.name is None:
                before = {d.name: d for d in map(decode_domain, directory.iterate(
                    mail.layout.domains, eq("objectClass", OC_DOMAIN), DOMAIN_ATTRS))}
            else:
                found = mail.domains.find(name)
                if found is None:
                    print(f"mailgate: no domain {name}", file=sys.stderr)
                    return EXIT_NOT_FOUND
                before = {name: found}
            try:
                repaired = mail.domains.recount_all(sorted(before))
            except NotFound as exc:     # deleted while it was being counted
                print(f"mailgate: {exc}", file=sys.stderr)
                return EXIT_NOT_FOUND
        finally:
            directory.close()
    pairs = [(before[d.name], d) for d in repaired]
    if args.json:
        print_json({"checked": len(before), "repaired": [
            {"name": now.name, "before": _counters(was), "after": _counters(now)}
            for was, now in pairs]})
        return 0
    for was, now in pairs:
        print(f"{now.name}: " + ", ".join(
            f"{c} {_counter_text(c, getattr(was, c)) if was.counted else 'missing'} -> "
            f"{_counter_text(c, getattr(now, c))}"
            for c in COUNTERS if not was.counted or getattr(was, c) != getattr(now, c)))
    checked = f"checked {len(before)} domain{'s' * (len(before) != 1)}"
    print(f"{checked}, repaired {len(pairs)}" if pairs else f"{checked}: every counter was "
                                                            "right")
    return 0


def _counter_text(counter: str, value: int) -> str:
    return exact_size(value) if counter == "quota_allocated" else str(value)
