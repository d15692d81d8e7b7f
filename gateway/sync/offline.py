"""The first import, offline: the documents as LDIF, loaded with ``slapadd -q``.

slapd commits (and fsyncs) every write on its own, as ``ldapadd`` does, so a
first import through LDAP costs about what ``ldapadd -c`` costs; slapadd
writes the database files directly in large transactions (the way S8 seeds a
consumer: 1.2 M entries in 41 s). LDAP transactions would close most of the
gap online, but slapd 2.5.13 segfaults under them (docs/benchmarks.md), so
this is the route to the import targets (B1o, docs/scaling.md).

``mailgate sync --offline-import`` (embedded directory only, its slapd
stopped, its mail tree empty):

1. fetches and validates every source as a sync does (the same size limits
   and rules; skipped entries are reported the same way);
2. checks with ``slapcat`` that the directory holds no account or alias
   (a domain entry made through the API is kept, not written again);
3. writes the domains (with their entry counters counted) and entries, in
   the attributes the sync would write (``mailgateOrigin: sync``), to an
   LDIF file of mode 0600 in the data directory (it holds password hashes),
   loads it with ``slapadd -q -w``
   (``-w``: the contextCSN, so consumers replicate from it) and removes it;
4. then (the caller) starts slapd and runs an ordinary *full* sync of the
   same sources: it reads and compares every entry, writes nothing if the
   load was exact (it would write the difference otherwise), records the run
   and the validators, so the next scheduled run is a conditional request.

A load that fails part-way (slapadd's quick mode does not undo) leaves the
entries before the failure: run the same command on a fresh data directory,
or restore a backup; never ``mailgate serve`` a half-loaded directory (the
refusal of step 2 keeps a second attempt from loading twice).
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..entries import (
    A_ACCOUNT_COUNT,
    A_ALIAS_COUNT,
    A_DC,
    A_ORIGIN,
    A_QUOTA,
    A_QUOTA_ALLOCATED,
    OC_ACCOUNT,
    OC_ALIAS,
    OC_DOMAIN,
    ORIGIN_API,
    Layout,
)
from ..errors import SlapdError
from ..slapd import ManagedSlapd
from ..slapd.tools import run, tool
from .apply import entry_attrs
from .document import build_desired
from .fetch import SourceFetcher
from .records import Desired, Skip

# RFC 2849 SAFE-STRING: no NUL, LF, CR; not starting with space, colon or "<";
# only ASCII. Anything else (and a trailing space) is written in base64.
_SAFE = re.compile(r"[\x01-\x09\x0b\x0c\x0e-\x1f\x21-\x39\x3b\x3d-\x7f]"
                   r"[\x01-\x09\x0b\x0c\x0e-\x7f]*")


@dataclass
class OfflineImport:
    """What the load wrote, and what the documents skipped."""

    domains: int = 0
    entries: int = 0
    kept_domains: list[str] = field(default_factory=list)   # their counters: recount
    skipped: list[Skip] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def _line(name: str, value: str) -> str:
    if not value or (_SAFE.fullmatch(value) and not value.endswith(" ")):
        return f"{name}: {value}\n"
    return f"{name}:: {base64.b64encode(value.encode('utf-8')).decode('ascii')}\n"


def ldif_record(dn: str, object_classes: Sequence[str],
                attrs: dict[str, list[str]]) -> str:
    """One LDIF record (empty values lists are left out, as the sync's add does)."""
    lines = [_line("dn", dn), *(_line("objectClass", oc) for oc in object_classes)]
    for name, values in attrs.items():
        if name != "objectClass":
            lines += [_line(name, v) for v in values]
    return "".join(lines) + "\n"


def ldif_of(desired: Desired, layout: Layout, existing_domains: Iterable[str]) -> Iterator[str]:
    """The records of ``desired``: its domains first (those not in the directory
    yet, as the API's first account would make them, with their counters
    already counted), then every entry."""
    existing = set(existing_domains)
    counts: dict[str, list[int]] = {}
    records = []
    for want in desired.entries.values():
        object_class, attrs = entry_attrs(want)
        counted = counts.setdefault(want.domain, [0, 0, 0])
        counted[0] += want.kind in ("account", "both")
        counted[1] += want.kind in ("alias", "both")
        counted[2] += sum(int(v) for v in attrs.get(A_QUOTA, ()))
        records.append((want.address, object_class, attrs))
    for domain in sorted(desired.domains - existing):
        accounts, aliases, allocated = counts.get(domain, [0, 0, 0])
        yield ldif_record(layout.domain(domain), [OC_DOMAIN], {
            A_DC: [domain], A_ORIGIN: [ORIGIN_API], A_ACCOUNT_COUNT: [str(accounts)],
            A_ALIAS_COUNT: [str(aliases)], A_QUOTA_ALLOCATED: [str(allocated)]})
    for address, object_class, attrs in records:
        yield ldif_record(layout.address(address),
                          [object_class, *attrs.get("objectClass", ())], attrs)


def _slapcat_dns(slapd: ManagedSlapd, flt: str) -> list[str]:
    done = subprocess.run([tool("slapcat"), "-n1", "-F", str(slapd.config_dir), "-a", flt,
                           "-o", "ldif-wrap=no"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SlapdError(f"slapcat failed ({done.returncode}): {done.stderr.strip()}")
    return [line[4:] for line in done.stdout.splitlines() if line.startswith("dn: ")]


def load(slapd: ManagedSlapd, fetcher: SourceFetcher, sources: Sequence[str]) -> OfflineImport:
    """Steps 1 to 3 of the module docstring. SlapdError if slapd runs, the mail
    tree is not empty or slapadd fails; FetchError, DocumentError as a sync."""
    if slapd.running_pid() is not None:
        raise SlapdError(f"the slapd of {slapd.data_dir} is running: stop it (mailgate serve, "
                         "mailgate directory) before an offline import")
    slapd.ensure_initialised()
    result = OfflineImport()
    start = time.monotonic()
    fetched = [fetcher.fetch(url) for url in dict.fromkeys(sources)]
    desired = build_desired([(f.url, f.chunks or []) for f in fetched], consume=True)
    result.skipped = desired.skipped
    result.seconds["validate"] = round(time.monotonic() - start, 3)
    start = time.monotonic()
    taken = _slapcat_dns(slapd, f"(|(objectClass={OC_ACCOUNT})(objectClass={OC_ALIAS}))")
    if taken:
        raise SlapdError(f"the directory of {slapd.data_dir} already holds {len(taken)} "
                         "accounts or aliases: an offline import is for an empty one "
                         "(use mailgate sync --once)")
    layout = Layout(slapd.base_dn)
    domains = {dn.split(",", 1)[0].partition("=")[2].lower()
               for dn in _slapcat_dns(slapd, f"(objectClass={OC_DOMAIN})")}
    result.kept_domains = sorted(domains & desired.domains)
    path = slapd.data_dir / "offline-import.ldif"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            for record in ldif_of(desired, layout, domains):
                out.write(record)
        result.domains = len(desired.domains - domains)
        result.entries = len(desired.entries)
        result.seconds["ldif"] = round(time.monotonic() - start, 3)
        del desired
        start = time.monotonic()
        run([tool("slapadd"), "-q", "-w", "-n1", "-F", str(slapd.config_dir),
             "-l", str(path)])
        result.seconds["slapadd"] = round(time.monotonic() - start, 3)
    finally:
        Path(path).unlink(missing_ok=True)
    return result
