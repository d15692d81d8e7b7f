"""``mailgate explain ADDRESS [--from SENDER]``: why mail to an address goes where it goes.

Asks a running gateway (``GET /mail/explain/``, gateway/explain.py): what
Postfix does with mail to ADDRESS (mailbox, forwarding targets, sub-address,
catch-all, unknown 550, not hosted), whether ADDRESS may log in to send, and
with ``--from``, whether it may use SENDER as envelope sender and in From:,
each with the rule that decided it. ``--json`` prints the API's answer.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..client import ApiClient
from .remote import EPILOG, common_options, print_json, wrap


def add_commands(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "explain", help="why mail to an address goes where it goes (and may it send as)",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        parents=[common_options()], epilog=EPILOG)
    parser.add_argument("address", help="the recipient, and the login for --from")
    parser.add_argument("--from", dest="sender", metavar="SENDER",
                        help="may ADDRESS send as SENDER (envelope and From:)?")
    parser.set_defaults(func=wrap(_explain), needs_settings=False)


def _explain(api: ApiClient, args: argparse.Namespace) -> int:
    answer = api.explain(args.address, args.sender)
    if args.json:
        print_json(answer)
        return 0
    print(render(answer))
    return 0


def render(answer: dict[str, Any]) -> str:
    """The answer for people: one block for delivery, one for sending."""
    lines = [f"{answer.get('address')}: {answer.get('delivery')}",
             f"  port 25:   {answer.get('smtp')}",
             f"  rule:      {answer.get('rule')}"]
    lookup = answer.get("lookup") or {}
    if lookup.get("map"):
        lines.append(f"  map:       {lookup['map']} -> {', '.join(lookup.get('result') or [])}")
    for recipient in answer.get("recipients") or []:
        lines.append(f"  delivers:  {recipient.get('address')} ({recipient.get('delivery')})")
    submission = answer.get("submission") or {}
    lines.append("submission: " + ("may log in and send" if submission.get("account")
                                   and not submission.get("disabled") else "refused"))
    if submission.get("smtp"):
        lines.append(f"  answer:    {submission['smtp']}")
    lines.append(f"  rule:      {submission.get('rule')}")
    sender = answer.get("sender")
    if sender:
        for key, label in (("envelope", "MAIL FROM"), ("from_header", "From:")):
            check = sender.get(key) or {}
            verdict = "allowed" if check.get("allowed") else "refused"
            lines.append(f"{label} {sender.get('address')}: {verdict}")
            if check.get("smtp"):
                lines.append(f"  answer:    {check['smtp']}")
            lines.append(f"  rule:      {check.get('rule')}")
    return "\n".join(lines)
