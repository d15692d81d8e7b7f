"""The directory as a Basic JSON document (``mailgate export``).

The output is what a sync needs to reproduce the directory: every domain
(A-label keys) with all its accounts (name, password hash without the
``{CRYPT}`` tag, spoofing_whitelist, submission_disabled, subaddress_extension,
quota in bytes, 0: none) and aliases (name, to), sorted. Syncing it onto an
empty directory gives the same entries, now owned by the sync. A domain's
limits are not part of the format (``mailgate domain`` sets them).

A stored password that is not a crypt hash the sync accepts (an ``{SSHA}``
made by hand, say) is left out of its account and reported: a sync of the
document then skips that account rather than importing something Dovecot
cannot verify, and nothing that might be plain text is copied into a file.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from .. import passwords
from ..directory import Directory
from .current import Progress, read_current


def export_document(directory: Directory, domains: Collection[str] | None = None,
                    progress: Progress | None = None) -> tuple[dict[str, Any], list[str]]:
    """(document, warnings) for ``domains`` (None: every domain)."""
    current = read_current(directory, domains, progress)
    document: dict[str, dict[str, list[dict[str, Any]]]] = {
        d: {"account": [], "alias": []} for d in current.domains}
    warnings: list[str] = []
    for entry in sorted(current.entries, key=lambda e: e.address):
        name, _, domain = entry.address.rpartition("@")
        lists = document.setdefault(domain, {"account": [], "alias": []})
        if entry.kind != "account":   # an alias, or an account that also forwards
            lists["alias"].append({"name": name, "to": ",".join(entry.targets)})
        if entry.kind == "alias":
            continue
        item: dict[str, Any] = {"name": name}
        try:
            item["password"] = passwords.check_crypt_hash(entry.password)
        except ValueError:
            warnings.append(f"{entry.address}: the stored password is not a crypt hash the "
                            "sync accepts; exported without it (a sync skips the account)")
        item["spoofing_whitelist"] = ",".join(entry.whitelist)
        item["submission_disabled"] = entry.submission_disabled
        item["subaddress_extension"] = entry.subaddress_extension
        item["quota"] = entry.quota
        lists["account"].append(item)
    return dict(sorted(document.items())), warnings
