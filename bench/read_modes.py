"""Reading a big search result with python-ldap: all at once, or one message at a time.

    python bench/read_modes.py [--accounts 40000] [--rounds 3]

Loads one slapd (production settings, slapadd) with ``--accounts`` accounts and
reads them all with simple paged searches of 2 500, 5 000, 10 000 and 20 000
entries a page, three ways, interleaved:

* ``all``: ``result3(msgid)``, libldap collects the whole page, then python-ldap
  converts it (what the gateway did before);
* ``one``: ``result3(msgid, all=0)`` in a loop, one entry per call;
* ``c``: the same loop on python-ldap's C call (``conn._l.result4``), as
  ``gateway.directory.views.collect`` does.

Prints, per mode and page size, the wall time and the CPU time of the client
and of slapd, in microseconds per entry (medians of the rounds).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import ldap
from api_bench import LIST_ATTRS
from b6_trees import cpu_seconds
from common import BASE_DN, production_slapd, write_ldif
from ldap.controls import SimplePagedResultsControl

SIZES = (2_500, 5_000, 10_000, 20_000)


def read_all(conn: ldap.ldapobject.SimpleLDAPObject, mode: str, size: int) -> int:
    paging = SimplePagedResultsControl(True, size=size, cookie="")
    seen = 0
    while True:
        msgid = conn.search_ext(f"ou=domains,{BASE_DN}", ldap.SCOPE_SUBTREE,
                                "(objectClass=mailgateAccount)", LIST_ATTRS,
                                serverctrls=[paging])
        if mode == "all":
            _kind, data, _msgid, controls = conn.result3(msgid)
            seen += len(data)
        else:
            for _ in range(size + 2):   # the page's entries and its final result
                if mode == "one":
                    kind, data, _msgid, controls = conn.result3(msgid, 0, 60)
                else:
                    kind, data, _msgid, raw = conn._l.result4(msgid, 0, 60, 0, 0, 0)
                    controls = ldap.controls.DecodeControlTuples(raw)
                seen += len(data)
                if kind == ldap.RES_SEARCH_RESULT:
                    break
        cookies = [c.cookie for c in controls if isinstance(c, SimplePagedResultsControl)]
        if not cookies or not cookies[0]:
            return seen
        paging.cookie = cookies[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=40_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    found: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="mailgate-read-modes-") as tmp:
        work = Path(tmp)
        data = write_ldif(work / "accounts.ldif", args.accounts)
        with production_slapd(work / "slapd", preload=data) as server:
            assert server.pid is not None
            conn = ldap.initialize(server.url)
            conn.simple_bind_s(server.service_dn("gateway"),
                               server.password_file("gateway").read_text().strip())
            for _ in range(args.rounds):
                for size in SIZES:
                    for mode in ("all", "one", "c"):
                        slapd_before = cpu_seconds([server.pid])
                        client_before, start = time.process_time(), time.perf_counter()
                        seen = read_all(conn, mode, size)
                        if seen != args.accounts:
                            raise RuntimeError(f"read {seen} of {args.accounts}")
                        found.setdefault((mode, size), []).append((
                            time.perf_counter() - start, time.process_time() - client_before,
                            cpu_seconds([server.pid]) - slapd_before))
            conn.unbind_s()
    print(f"{args.accounts} accounts, {args.rounds} rounds; microseconds per entry "
          "(medians): wall / client CPU / slapd CPU")
    print("| page size | " + " | ".join(("all", "one", "c")) + " |")
    print("|---|---|---|---|")
    for size in SIZES:
        cells = []
        for mode in ("all", "one", "c"):
            runs = found[(mode, size)]
            cells.append(" / ".join(
                f"{statistics.median(run[i] for run in runs) / args.accounts * 1e6:.1f}"
                for i in range(3)))
        print(f"| {size} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
