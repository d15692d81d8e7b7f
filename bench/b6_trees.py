"""B6's listing served from several source trees, interleaved, with CPU per process.

    git worktree add /tmp/before <commit>
    python bench/b6_trees.py /tmp/before .  [--accounts 100000] [--rounds 4]

Loads one slapd (production settings, slapadd) with ``--accounts`` accounts,
then for each round and each tree in turn serves the gateway from that tree
(``mailgate serve``, one worker, its modules imported from the tree) and lists
every account through ``GET /mail/account/`` in pages of 10 000, as B6 does:
once to warm up, then twice measured. Each round ends with the baseline,
``ldapsearch -E pr=10000`` of the same attributes. For every listing it
records the wall time and the CPU seconds spent by slapd, the gateway's
processes and this client, so a change in how the gateway reads slapd shows
in slapd's column too. Prints the runs and, per tree, the medians and the
median ratio to the baseline's median.

What it is for: a before/after of a change to the list path measured in one
run on the same slapd (machines here are noisy; separate runs are not
comparable). Every loop is bounded: ``--rounds`` x trees x 3 listings.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import urllib3
from api_bench import LIST_ATTRS, list_all
from common import BASE_DN, children, gateway, ldap_tool_args, production_slapd, write_ldif


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` so far (0 for a process gone)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def measured(call: object, slapd_pid: int, served: list[int]) -> dict[str, float]:
    before = (cpu_seconds([slapd_pid]), cpu_seconds(served), time.process_time())
    wall = call()  # type: ignore[operator]
    return {"wall": wall, "slapd": cpu_seconds([slapd_pid]) - before[0],
            "gateway": cpu_seconds(served) - before[1],
            "client": time.process_time() - before[2]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trees", nargs="+", type=Path, help="source trees (checkouts)")
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    trees = [tree.resolve() for tree in args.trees]
    for tree in trees:
        if not (tree / "gateway" / "cli" / "__main__.py").is_file():
            parser.error(f"{tree} is not a mailgate source tree")
    urllib3.disable_warnings()  # the bench gateway's self-signed certificate
    runs: dict[Path, list[dict[str, float]]] = {tree: [] for tree in trees}
    baseline: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="mailgate-b6-trees-") as tmp:
        work = Path(tmp)
        data = write_ldif(work / "accounts.ldif", args.accounts)
        with production_slapd(work / "slapd", preload=data) as server:
            slapd_pid = server.pid
            assert slapd_pid is not None
            for rnd in range(args.rounds):
                for number, tree in enumerate(trees):
                    # The served process imports gateway/ from the tree: its
                    # directory is the working directory and first on the path.
                    os.chdir(tree)
                    os.environ["PYTHONPATH"] = str(tree)
                    with gateway(server, work / f"r{rnd}t{number}", workers=1) as (url, proc):
                        served = [proc.pid, *children(proc.pid)]
                        list_all(url, args.accounts)
                        for _ in range(2):
                            runs[tree].append(measured(
                                lambda url=url: list_all(url, args.accounts), slapd_pid, served))

                def search() -> float:
                    start = time.perf_counter()
                    subprocess.run(["ldapsearch", *ldap_tool_args(server), "-LLL", "-E",
                                    "pr=10000/noprompt", "-b", f"ou=domains,{BASE_DN}",
                                    "(objectClass=mailgateAccount)", *LIST_ATTRS],
                                   capture_output=True, check=True)
                    return time.perf_counter() - start

                baseline.append(measured(search, slapd_pid, []))
                walls = ["{} {} s".format(tree.name, ", ".join(
                    f"{r['wall']:.2f}" for r in runs[tree][-2:])) for tree in trees]
                print(f"round {rnd + 1}: {'; '.join(walls)}; "
                      f"ldapsearch {baseline[-1]['wall']:.2f} s", flush=True)
    base = statistics.median(r["wall"] for r in baseline)
    print(f"\n{args.accounts} accounts, {args.rounds} rounds; medians (s): wall, CPU of "
          "slapd / gateway / client")
    for tree in trees:
        med = {key: statistics.median(r[key] for r in runs[tree])
               for key in ("wall", "slapd", "gateway", "client")}
        print(f"{tree}: {med['wall']:.2f} ({med['wall'] / base:.2f} x ldapsearch); "
              f"CPU {med['slapd']:.2f} / {med['gateway']:.2f} / {med['client']:.2f}")
    print(f"ldapsearch: {base:.2f}; slapd CPU "
          f"{statistics.median(r['slapd'] for r in baseline):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
