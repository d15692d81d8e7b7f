"""``mailgate account ...``: mail accounts through a running gateway's REST API.

    mailgate account list [--domain D] [--page N] [--page-size N]
    mailgate account show ADDRESS
    mailgate account create ADDRESS [--password-stdin] [--submission-disabled]
                                    [--whitelist LIST] [--quota SIZE]
    mailgate account passwd ADDRESS [--password-stdin]
    mailgate account delete ADDRESS
    mailgate account disable-submission|enable-submission ADDRESS
    mailgate account whitelist ADDRESS [ENTRY ...] [--clear]
    mailgate account set-quota ADDRESS SIZE        bytes or 10G, 512M (K = 1024)
    mailgate account usage ADDRESS                 what the mailbox holds (Dovecot)

A password is asked twice on the terminal, or read as one line of standard
input with ``--password-stdin``; never from the command line. Every command
takes ``--json`` and the connection options (gateway/cli/remote.py).
"""

from __future__ import annotations

import argparse
from typing import Any

from ..client import ApiClient, ConfigError
from .remote import (
    SIZE_HELP,
    USAGE_FORMATS,
    Column,
    action,
    exact_quota,
    join_items,
    print_json,
    quota_text,
    read_password,
    resource_commands,
    show,
    show_deleted,
    show_list,
    size_arg,
    split_address,
)

COLUMNS: tuple[Column, ...] = ("id", lambda account: quota_text(account.get("quota")),
                               "submission_disabled", "spoofing_whitelist")
HEADERS = ("ACCOUNT", "QUOTA", "SUBMISSION DISABLED", "SPOOFING WHITELIST")
# The crypt hash is no business of a terminal; --json passes it on as the API sent it.
HIDDEN = ("password",)
FORMATS = {"quota": exact_quota}


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
    create.add_argument("--quota", type=size_arg, metavar="SIZE",
                        help=f"the mailbox quota: {SIZE_HELP} (default: the domain's "
                             "default_quota)")

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

    set_quota = action(sub, "set-quota", _set_quota, "set the mailbox quota (within the "
                       "domain's max_quota)", common)
    set_quota.add_argument("address")
    set_quota.add_argument("size", type=size_arg, metavar="SIZE", help=SIZE_HELP)
    action(sub, "usage", _usage, "what the mailbox holds against its quota, as Dovecot "
           "counts it", common).add_argument("address")


def _shown(args: argparse.Namespace, account: Any) -> int:
    return show(args, account, HIDDEN, FORMATS)


def _list(api: ApiClient, args: argparse.Namespace) -> int:
    return show_list(args, api.accounts(args.domain, args.page, args.page_size), HEADERS,
                     COLUMNS)


def _show(api: ApiClient, args: argparse.Namespace) -> int:
    return _shown(args, api.account(args.address))


def _create(api: ApiClient, args: argparse.Namespace) -> int:
    name, domain = split_address(args.address)
    password = read_password(args.password_stdin)
    created = api.create_account(name, domain, password,
                                 True if args.submission_disabled else None, args.whitelist,
                                 args.quota)
    return _shown(args, created)


def _passwd(api: ApiClient, args: argparse.Namespace) -> int:
    password = read_password(args.password_stdin)
    return _shown(args, api.account_action(args.address, "set_password",
                                           {"password": password}))


def _delete(api: ApiClient, args: argparse.Namespace) -> int:
    api.delete_account(args.address)
    return show_deleted(args, "account", args.address)


def _disable(api: ApiClient, args: argparse.Namespace) -> int:
    return _shown(args, api.account_action(args.address, "disable_submission"))


def _enable(api: ApiClient, args: argparse.Namespace) -> int:
    return _shown(args, api.account_action(args.address, "enable_submission"))


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
    return _shown(args, api.account_action(args.address, "set_spoofing_whitelist",
                                           {"spoofing_whitelist": join_items(args.entries)}))


def _set_quota(api: ApiClient, args: argparse.Namespace) -> int:
    return _shown(args, api.account_action(args.address, "set_quota", {"quota": args.size}))


def _usage(api: ApiClient, args: argparse.Namespace) -> int:
    return show(args, api.account_usage(args.address), (), USAGE_FORMATS)
