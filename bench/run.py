"""`make bench`: run every scenario with its baseline and write docs/benchmarks.md.

    python bench/run.py                 full sizes (100 000 accounts, B8 up to 1 000 000)
    python bench/run.py --quick         10 000 accounts (B8 up to 100 000), shorter runs
    python bench/run.py --only B5,B6    some scenarios
    python bench/run.py --runs 5        more runs of each (at least 3 for the table)

Every scenario runs its baseline in the same command against the same kind of
slapd (production settings: fsync on, the shipped indexes), interleaved with
the gateway's runs; the table shows the median, min and max of the runs.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import ROOT, Samples, machine

KEEP = "<!-- kept by bench/run.py: written by hand below -->"


def _max(result: dict[str, Any], key: str) -> float:
    return max(result[key].values)


# name -> (what is measured, "figure" column label, target, check)
TARGETS: dict[str, tuple[str, str, str, Callable[[dict[str, Any]], bool]]] = {
    "B1": ("first JSON import into an empty directory (SyncRunner.run) / `ldapadd -c` of "
           "the same entries as LDIF into an identical fresh slapd",
           "time ratio", "<= 1.5", lambda r: r["ratio"].median <= 1.5),
    "B1o": ("the same first import by the offline route (`mailgate sync --offline-import`: "
            "validate, LDIF, `slapadd -q -w`, start, the full sync that checks it) / the same "
            "run's `ldapadd -c`", "time ratio", "<= 0.25, the checking run writes nothing",
            lambda r: r["ratio"].median <= 0.25 and _max(r, "checking_run_writes") == 0),
    "B2": ("re-sync of the same content with a new ETag, full reconcile (every entry read "
           "and compared) / `ldapsearch -E pr=2000` of the compared attributes",
           "time ratio", "<= 2.0, 0 writes",
           lambda r: r["ratio"].median <= 2.0 and _max(r, "mail_writes") == 0),
    "B3": ("unchanged document (304 Not Modified) / B1 import time",
           "time ratio", "< 0.01, no mail entry read",
           lambda r: r["ratio"].median < 0.01 and _max(r, "mail_entry_operations") == 0),
    "B4": ("one account's hash changed among all: LDAP writes to mail entries",
           "writes", "exactly 1", lambda r: set(r["ratio"].values) == {1}),
    "B5": ("GET /mail/account/{id}/ rate, 8 keep-alive HTTPS clients (wrk) / 8 processes "
           "reading the same entries with python-ldap, the project's LDAP client",
           "rate ratio", ">= 0.25, p99 < 10 ms, >= 0.5 of /healthz (vs_healthz)",
           lambda r: r["ratio"].median >= 0.25 and r["p99"].median < 10
           and r["vs_healthz"].median >= 0.5),
    "B5b": ("GET /mail/account/{id}/ rate with 64 keep-alive clients / the 8-client rate of "
            "B5 in the same round, measured next to it (in turns before and after)",
            "rate ratio", ">= 1.0, no error, p99 < 50 ms",
            lambda r: r["ratio"].median >= 1.0 and _max(r, "errors") == 0
            and r["p99"].median < 50),
    "B6": ("list all accounts through GET /mail/account/ in pages of 10 000 / "
           "`ldapsearch -E pr=10000`", "time ratio", "<= 2.0, peak < 200 MB",
           lambda r: r["ratio"].median <= 2.0 and _max(r, "peak_mb") < 200),
    "B7": ("POST /mail/account/ rate (4 clients) / rate of the hash alone "
           "(SHA512-crypt, 100 000 rounds, 2 processes)",
           "rate ratio", ">= 0.80", lambda r: r["ratio"].median >= 0.80),
    "B8": ("dry run (fetch, validate, read, plan) of a 10x bigger document against the "
           "B1 directory, in a fresh process: peak RSS / document size; time per entry "
           "at both sizes", "memory ratio", "< 4.0, linear (per-entry time ratio <= 1.25)",
           lambda r: _max(r, "ratio") < 4.0 and r["linearity"].median <= 1.25),
    "B9": ("a partial source (one invalid entry among all), second run / B1 import time",
           "time ratio", "< 0.01, 304, no mail entry read, skip still listed",
           lambda r: r["ratio"].median < 0.01 and _max(r, "mail_entry_operations") == 0
           and set(r["answered_304"].values) == {1} and set(r["skip_listed"].values) == {1}),
}


def _details(result: dict[str, Any]) -> str:
    parts = [f"{key}: {value.fmt()}" for key, value in result.items()
             if isinstance(value, Samples) and key != "ratio"]
    if result.get("note"):
        parts.append(str(result["note"]))
    return "; ".join(parts)


def _notes(results: dict[str, dict[str, Any]]) -> list[str]:
    """What the figures say where a target is not met (computed from this run)."""
    notes: list[str] = []
    b2 = results.get("B2")
    if b2 is not None:
        notes += [
            "",
            f"B2: served with a new ETag but the same bytes, a scheduled run recognises the "
            f"document by its SHA-256 and reads no entry "
            f"({b2['new_etag_same_bytes_s'].median:.3f} s); the figure is the run that "
            f"compares everything anyway, as the daily full reconcile (or `--full`) does.",
        ]
    b5 = results.get("B5")
    if b5 is not None and not TARGETS["B5"][3](b5):
        notes += [
            "",
            f"B5: the same HTTPS stack (granian, TLS, Flask-RESTX) answering `/healthz`, "
            f"with no token and no LDAP, served {b5['healthz_rate'].median:.0f} requests/s, "
            f"{b5['healthz_ratio'].median:.2f} of the python-ldap readers' rate, and the "
            f"account lookup {b5['vs_healthz'].median:.2f} of that: the rest is the Python "
            f"work of a request (docs/servers.md, and the profile below), on a machine whose "
            f"two cores also run slapd and wrk. Against ldap3 readers (the "
            f"pure-Python client the gateway used before) the ratio is "
            f"{b5['ratio_vs_ldap3'].median:.2f}.",
        ]
    return notes


def render(results: dict[str, dict[str, Any]], args: argparse.Namespace,
           minutes: float) -> str:
    command = "make bench" if not args.argv else f"bench/run.py {shlex.join(args.argv)}"
    lines = [
        "# Benchmarks",
        "",
        f"Written by `{command}` on {datetime.date.today().isoformat()} "
        f"({minutes:.0f} min).",
        "",
        f"Machine: {machine()}.",
        "",
        f"Sizes: {args.accounts} accounts and {args.accounts // 5} aliases "
        f"({args.accounts // 1000 or 1} domains; B8: {args.b8[0]} and {args.b8[1]} "
        f"accounts); {args.runs} runs of each scenario. The gateway and its baseline run in "
        "the same command against slapd with production settings (fsync on, the shipped "
        "indexes), interleaved run by run. Figures: median (min, max) of the runs; ratios "
        "are gateway / baseline, computed run by run.",
        "",
        "| scenario | what (gateway / baseline) | figure | target | median (min, max) | "
        "met | details |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, result in sorted(results.items()):
        what, figure, target, check = TARGETS[name]
        lines.append(f"| {name} | {what} | {figure} | {target} | {result['ratio'].fmt()} | "
                     f"{'yes' if check(result) else '**no**'} | {_details(result)} |")
    lines += _notes(results)
    lines += [
        "",
        "Units: `_s` seconds, `_rate` requests per second, `p50`/`p99` latencies in "
        "milliseconds, `_mb` MiB (peak resident set, VmHWM), `us_per_entry_N` "
        "microseconds per document entry at N accounts (the whole dry run; "
        "`validate_us_per_entry_N` its validation alone), `linearity` the per-entry time "
        "at the bigger size over the smaller (below 1: reading the same directory is a "
        "fixed cost).",
        "",
        "Reproduce one scenario: `make bench` runs all; "
        "`.venv/bin/python bench/run.py --only B2 [--quick] [--runs N] [--out FILE]` runs "
        "some (B2-B4 and B8 import their directory first, as B1 does).",
        "",
        "Scale-out (replication, disk and index sizes, Postfix lookup rate, a fresh "
        "consumer, the million): `bench/scale_bench.py [--accounts N]` and `make "
        "bench-scale`, written to `docs/benchmarks-scale-<N>.md`; read with "
        "`docs/scaling.md`.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="10 000 accounts, B8 up to 100 000, short runs")
    parser.add_argument("--only", default="", help="comma-separated scenarios, e.g. B5,B6 "
                        "(B5 and B5b are measured together)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    args.argv = sys.argv[1:]
    args.accounts = 10_000 if args.quick else 100_000
    args.b8 = (args.accounts, 10 * args.accounts)
    seconds = 5 if args.quick else 10
    creates = 30 if args.quick else 120
    known = {name.upper() for name in TARGETS}
    wanted = {s.strip().upper() for s in args.only.split(",") if s.strip()} or known
    if wanted & {"B5", "B5B"}:
        wanted |= {"B5", "B5B"}
    unknown = wanted - known
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    import api_bench
    import sync_bench

    started = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="mailgate-bench-") as tmp:
        if wanted & {"B1", "B1O", "B2", "B3", "B4", "B8", "B9"}:
            (Path(tmp) / "sync").mkdir()
            results.update(sync_bench.run_all(Path(tmp) / "sync", args.accounts, args.runs,
                                              args.b8, wanted))
        if wanted & {"B5", "B5B", "B6", "B7"}:
            (Path(tmp) / "api").mkdir()
            results.update(api_bench.run_all(Path(tmp) / "api", args.accounts, args.runs,
                                             seconds, creates, wanted))
    text = render(results, args, (time.monotonic() - started) / 60)
    # What follows KEEP in the file it replaces (the profiles) is written by hand.
    if args.out.is_file() and KEEP in (old := args.out.read_text(encoding="utf-8")):
        text += "\n" + old[old.index(KEEP):]
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
