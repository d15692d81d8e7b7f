"""``mailgate alias ...``: mail aliases through a running gateway's REST API.

    mailgate alias list [--domain D] [--page N] [--page-size N]
    mailgate alias show ADDRESS
    mailgate alias create ADDRESS TARGET [TARGET ...]
    mailgate alias set ADDRESS TARGET [TARGET ...]     the recipients become these
    mailgate alias delete ADDRESS

A TARGET may itself be a comma-separated list. Every command takes ``--json``
and the connection options (gateway/cli/remote.py).
"""

from __future__ import annotations

import argparse
from typing import Any

from ..client import ApiClient
from .remote import (
    action,
    join_items,
    resource_commands,
    show,
    show_deleted,
    show_list,
    split_address,
)

COLUMNS = ("id", "to")
HEADERS = ("ALIAS", "TO")


def add_commands(subparsers: Any) -> None:
    sub, common = resource_commands(subparsers, "alias", "aliases", __doc__, _list, _show)
    for name, handler, help in (("create", _create, "create an alias"),
                                ("set", _set, "replace an alias's recipients")):
        parser = action(sub, name, handler, help, common)
        parser.add_argument("address", help="name@domain")
        parser.add_argument("targets", nargs="+", metavar="TARGET",
                            help="a recipient address (or several, comma-separated)")
    action(sub, "delete", _delete, "delete an alias", common).add_argument("address")


def _list(api: ApiClient, args: argparse.Namespace) -> int:
    return show_list(args, api.aliases(args.domain, args.page, args.page_size), HEADERS,
                     COLUMNS)


def _show(api: ApiClient, args: argparse.Namespace) -> int:
    return show(args, api.alias(args.address))


def _create(api: ApiClient, args: argparse.Namespace) -> int:
    name, domain = split_address(args.address)
    return show(args, api.create_alias(name, domain, join_items(args.targets)))


def _set(api: ApiClient, args: argparse.Namespace) -> int:
    return show(args, api.set_alias(args.address, join_items(args.targets)))


def _delete(api: ApiClient, args: argparse.Namespace) -> int:
    api.delete_alias(args.address)
    return show_deleted(args, "alias", args.address)
