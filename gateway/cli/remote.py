"""What ``mailgate account``, ``alias`` and ``domain`` share: options, output, errors.

These commands are clients of a running gateway (gateway/client.py); they
read no ``MAILGATE_*`` server setting and never talk to LDAP. Output is a
table or ``key: value`` lines for people, the API's JSON (unknown fields
included, as they came) with ``--json``. Exit codes: :data:`EXIT_CODES`.

Sizes (quotas) are bytes in the API and in ``--json``; on the command line
they may carry a binary unit (:func:`size_arg`: ``K``, ``M``, ``G``, ``T``,
``P`` are 1024, 1024², ... as for Dovecot, with or without ``iB``/``B``), and
tables show them in those units (:func:`size_text`).
"""

from __future__ import annotations

import argparse
import getpass
import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from ..client import EXIT_CODES, ApiClient, ClientError, ConfigError, load_config

Handler = Callable[[ApiClient, argparse.Namespace], int]
# How a field's value is shown to people (key: value lines), by field name.
Formats = Mapping[str, Callable[[Any], str]]
# A table column: a field's name, or how to make the cell from the whole item.
Column = str | Callable[[dict[str, Any]], str]

EPILOG = ("Configuration: MAILGATE_API_URL, MAILGATE_API_TOKEN or MAILGATE_API_TOKEN_FILE, "
          "MAILGATE_API_CA_FILE, or ~/.config/mailgate/client.toml (url, token_file, "
          "ca_file). Exit status: "
          + "; ".join(f"{code} {why}" for code, why in EXIT_CODES.items()) + ".")


def common_options() -> argparse.ArgumentParser:
    """Options every client command takes (after its action: ``account list --json``)."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection and output")
    group.add_argument("--json", action="store_true",
                       help="print the API's JSON (lists: one array of every item)")
    group.add_argument("--url", help="the gateway, https://host:port (MAILGATE_API_URL)")
    group.add_argument("--ca-file", type=Path,
                       help="CA certificate(s) to verify the gateway with "
                            "(MAILGATE_API_CA_FILE; default: the system CAs)")
    group.add_argument("--token-file", type=Path,
                       help="read the API token from this file (MAILGATE_API_TOKEN_FILE)")
    group.add_argument("--config", type=Path,
                       help="client configuration file (TOML; default "
                            "~/.config/mailgate/client.toml)")
    return common


def resource_commands(subparsers: Any, kind: str, plural: str, doc: str | None,
                      lister: Handler, shower: Handler, *, key: str = "address",
                      by_domain: bool = True) -> tuple[Any, argparse.ArgumentParser]:
    """``mailgate <kind>`` with its ``list`` and ``show`` actions: (the actions'
    subparsers, the common options) for the kind's other actions.

    ``key``: the name of the item's argument; ``by_domain``: whether its list
    takes ``--domain``."""
    group = subparsers.add_parser(
        kind, help=f"mail {plural}, through a running gateway's REST API",
        description=doc.split("\n\n")[0] if doc else None)
    sub = group.add_subparsers(dest="action", required=True)
    common = common_options()
    list_options(action(sub, "list", lister, f"list {plural} (every page)", common),
                 by_domain)
    action(sub, "show", shower, f"show one {kind}", common).add_argument(key)
    return sub, common


def action(sub: Any, name: str, handler: Handler, help: str,
           common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=help, description=help, parents=[common], epilog=EPILOG)
    parser.set_defaults(func=wrap(handler), needs_settings=False)
    return parser


def wrap(handler: Handler) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            config = load_config(config=args.config, url=args.url, ca_file=args.ca_file,
                                 token_file=args.token_file)
            with ApiClient(config) as api:
                return handler(api, args)
        except ClientError as exc:
            report(exc)
            return exc.exit_code
        except KeyboardInterrupt:
            print(file=sys.stderr)
            return 130

    return run


def report(exc: ClientError) -> None:
    print(f"mailgate: {exc.message}", file=sys.stderr)
    for name, why in exc.errors.items():
        print(f"  {name}: {why}", file=sys.stderr)


def split_address(address: str) -> tuple[str, str]:
    name, at, domain = address.strip().rpartition("@")
    if not at or not name or not domain:
        raise ConfigError(f"not an address (name@domain): {address!r}")
    return name, domain


def read_password(from_stdin: bool) -> str:
    """A new password: one line of standard input, or asked twice on the terminal."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise ConfigError("no password on standard input")
        return password
    if not sys.stdin.isatty():
        raise ConfigError("standard input is not a terminal: pass --password-stdin and "
                          "write the password to standard input")
    first = getpass.getpass("New password: ")
    if not first:
        raise ConfigError("empty password")
    if getpass.getpass("Again: ") != first:
        raise ConfigError("the two passwords differ")
    return first


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def print_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    rows = [list(headers), *(list(r) for r in rows)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(headers))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
              .rstrip())


def print_item(item: Any, hidden: Sequence[str] = (), formats: Formats | None = None) -> None:
    """``key: value`` lines, every field the API sent (new ones too) but ``hidden``;
    a field in ``formats`` shown as its function makes it."""
    if not isinstance(item, dict):
        print_json(item)
        return
    shown = {k: v for k, v in item.items() if k not in hidden}
    width = max((len(k) for k in shown), default=0)
    formats = formats or {}
    for key, value in shown.items():
        print(f"{key + ':':<{width + 1}} {formats.get(key, _text)(value)}")


def show(args: argparse.Namespace, item: Any, hidden: Sequence[str] = (),
         formats: Formats | None = None) -> int:
    if args.json:
        print_json(item)
    else:
        print_item(item, hidden, formats)
    return 0


def rows(items: Iterable[dict[str, Any]], columns: Sequence[Column]) -> Iterable[list[str]]:
    for item in items:
        yield [_text(item.get(column)) if isinstance(column, str) else column(item)
               for column in columns]


def show_list(args: argparse.Namespace, items: Iterable[dict[str, Any]],
              headers: Sequence[str], columns: Sequence[Column]) -> int:
    """A list as the API sent it (``--json``) or as a table of ``columns``."""
    items = list(items)
    if args.json:
        print_json(items)
    else:
        print_table(headers, rows(items, columns))
    return 0


def show_deleted(args: argparse.Namespace, kind: str, name: str) -> int:
    if args.json:
        print_json({"deleted": name})
    else:
        print(f"deleted {kind} {name}")
    return 0


def join_items(values: Sequence[str]) -> str:
    """Arguments that may each hold several comma-separated items, as one comma list."""
    return ",".join(v.strip() for value in values for v in value.split(",") if v.strip())


def list_options(parser: argparse.ArgumentParser, by_domain: bool = True) -> None:
    if by_domain:
        parser.add_argument("--domain", help="only this domain")
    parser.add_argument("--page", type=int, help="only this page (from 1); default: every "
                                                 "page, following the next links")
    parser.add_argument("--page-size", type=int, help="items per request (1 to 10000)")


# -- sizes ------------------------------------------------------------------------

UNITS = "KMGTP"
SIZE_HELP = ("bytes, or with a binary unit: K, M, G, T, P = 1024, 1024^2, ... "
             "(KiB/KB the same; 10G, 512M, 1.5GiB); 0: no limit")
_SIZE = re.compile(r"(\d{1,20}(?:\.\d{1,9})?) ?(?:([KMGTP])(?:i?B)?|B)?", re.IGNORECASE)


def size_arg(text: str) -> int:
    """A size from the command line in bytes (an argparse ``type``).

    Units are binary, as Dovecot reads its own sizes (``K`` = 1024): ``10G``,
    ``10GiB`` and ``10GB`` are all 10 * 1024^3 bytes. A fraction is allowed
    with a unit and rounded down to a whole byte.
    """
    match = _SIZE.fullmatch(text.strip())
    if match is None or ("." in match[1] and not match[2]):
        raise argparse.ArgumentTypeError(
            f"not a size: {text!r} (bytes, or a number with K, M, G, T or P: "
            "10G, 512M, 1.5GiB)")
    power = UNITS.index(match[2].upper()) + 1 if match[2] else 0
    return int(Decimal(match[1]) * 1024**power)


def count_arg(text: str) -> int:
    """A count limit from the command line: an integer, 0 or more (argparse ``type``)."""
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"not a count (0 or more; 0: no limit): {text!r}")
    return int(text)


def _number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def size_text(value: Any, exact: bool = False) -> str:
    """Bytes for people: ``512 B``, ``10 GiB``, ``1.5 MiB`` (one decimal).

    ``exact``: when that rounded, the bytes follow in parentheses. A value
    that is not an integer is shown as it came.
    """
    if not _number(value):
        return _text(value)
    if value < 1024:
        return f"{value} B"
    power = min((value.bit_length() - 1) // 10, len(UNITS))
    shown = f"{value / 1024**power:.1f}".removesuffix(".0")
    text = f"{shown} {UNITS[power - 1]}iB"
    if exact and Decimal(shown) * 1024**power != value:
        text += f" ({value} bytes)"
    return text


def limit_text(value: Any) -> str:
    """A limit or a quota: 0 is ``unlimited``."""
    return "unlimited" if value == 0 and _number(value) else _text(value)


def quota_text(value: Any, exact: bool = False) -> str:
    """A quota or size limit in bytes: 0 is ``unlimited``, else :func:`size_text`."""
    return "unlimited" if value == 0 and _number(value) else size_text(value, exact)


def exact_quota(value: Any) -> str:
    return quota_text(value, exact=True)


def exact_size(value: Any) -> str:
    return size_text(value, exact=True)


def percent_text(value: Any) -> str:
    """A usage percentage; null (no quota to measure against) is ``-``."""
    if value is None:
        return "-"
    return f"{value}%" if isinstance(value, int | float) and not isinstance(value, bool) \
        else _text(value)


# GET .../usage/ of an account or a domain: sizes for people, bytes in --json.
USAGE_FORMATS: Formats = {"quota": exact_quota, "quota_allocated": exact_size,
                          "used_bytes": exact_size, "percent": percent_text}
