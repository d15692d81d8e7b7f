"""``mailgate account ...``: mail accounts through a running gateway's REST API.

    mailgate account list [--domain D] [--page N] [--page-size N]
    mailgate account show ADDRESS
    mailgate account create ADDRESS [--password-stdin] [--submission-disabled]
                                    [--whitelist LIST]
    mailgate account passwd ADDRESS [--password-stdin]
    mailgate account delete ADDRESS
    mailgate account disable-submission|enable-submission ADDRESS
    mailgate account whitelist ADDRESS [ENTRY ...] [--clear]

A password is asked twice on the terminal, or read as one line of standard
input with ``--password-stdin``; never from the command line. Every command
takes ``--json`` and the connection options (gateway/cli/remote.py).
"""

from __future__ import annotations

import argparse
from typing import Any

from ..client import ApiClient, ConfigError
from .remote import (
    action,
    join_items,
    print_json,
    read_password,
    resource_commands,
    show,
    show_deleted,
    show_list,
    split_address,
)

COLUMNS = ("id", "submission_disabled", "spoofing_whitelist")
HEADERS = ("ACCOUNT", "SUBMISSION DISABLED", "SPOOFING WHITELIST")
# The crypt hash is no business of a terminal; --json passes it on as the API sent it.
HIDDEN = ("password",)


def add_commands(subparsers: Any) -> None:
    sub, common = resource_commands(subparsers, "account", "accounts", __doc__, _list, _show)

    create = action(sub, "create", _create, "create an account", common)
    create.add_argument("address", help="name@domain")
    create.add_argument("--password-stdin", action="store_true",
                        help="read the password as one line of standard input "
                             "(default: ask twice on the terminal)")
    create.add_argument("--submission-disabled", action="store_true",
                        help="the account may not send through submission")
    create.add_argument("--whitelist", metavar="LIST",
                        help="comma-separated addresses and domains it may send as, or *")

    passwd = action(sub, "passwd", _passwd, "set an account's password", common)
    passwd.add_argument("address")
    passwd.add_argument("--password-stdin", action="store_true",
                        help="read the password as one line of standard input")

    action(sub, "delete", _delete, "delete an account (its maildir stays on disk)",
           common).add_argument("address")
    action(sub, "disable-submission", _disable, "stop the account sending (mail still "
           "arrives)", common).add_argument("address")
    action(sub, "enable-submission", _enable, "let the account send again",
           common).add_argument("address")

    whitelist = action(sub, "whitelist", _whitelist,
                       "show or set the addresses and domains an account may send as",
                       common)
    whitelist.add_argument("address")
    whitelist.add_argument("entries", nargs="*", metavar="ENTRY",
                           help="an address, a domain or *; the list becomes exactly these "
                                "(none: show the list)")
    whitelist.add_argument("--clear", action="store_true", help="empty the list")


def _list(api: ApiClient, args: argparse.Namespace) -> int:
    return show_list(args, api.accounts(args.domain, args.page, args.page_size), HEADERS,
                     COLUMNS)


def _show(api: ApiClient, args: argparse.Namespace) -> int:
    return show(args, api.account(args.address), HIDDEN)


def _create(api: ApiClient, args: argparse.Namespace) -> int:
    name, domain = split_address(args.address)
    password = read_password(args.password_stdin)
    created = api.create_account(name, domain, password,
                                 True if args.submission_disabled else None, args.whitelist)
    return show(args, created, HIDDEN)


def _passwd(api: ApiClient, args: argparse.Namespace) -> int:
    password = read_password(args.password_stdin)
    return show(args, api.account_action(args.address, "set_password",
                                         {"password": password}), HIDDEN)


def _delete(api: ApiClient, args: argparse.Namespace) -> int:
    api.delete_account(args.address)
    return show_deleted(args, "account")


def _disable(api: ApiClient, args: argparse.Namespace) -> int:
    return show(args, api.account_action(args.address, "disable_submission"), HIDDEN)


def _enable(api: ApiClient, args: argparse.Namespace) -> int:
    return show(args, api.account_action(args.address, "enable_submission"), HIDDEN)


def _whitelist(api: ApiClient, args: argparse.Namespace) -> int:
    if args.clear and args.entries:
        raise ConfigError("--clear takes no entries")
    if not args.clear and not args.entries:
        account = api.account(args.address)
        if args.json:
            print_json({"id": account.get("id"),
                        "spoofing_whitelist": account.get("spoofing_whitelist")})
        else:
            for entry in (account.get("spoofing_whitelist") or "").split(","):
                if entry.strip():
                    print(entry.strip())
        return 0
    return show(args, api.account_action(args.address, "set_spoofing_whitelist",
                                         {"spoofing_whitelist": join_items(args.entries)}),
                HIDDEN)
