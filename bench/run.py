"""`make bench`: run every scenario with its baseline and write docs/benchmarks.md.

    python bench/run.py                 full sizes (100 000 accounts)
    python bench/run.py --quick         10 000 accounts, shorter runs
    python bench/run.py --only B5,B6    some scenarios
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import ROOT, Samples, machine

TARGETS = {
    "B5": ("GET /mail/account/{id}/ rate, 8 keep-alive HTTPS clients / 8 ldap3 readers",
           ">= 0.40", lambda r: r["ratio"].median >= 0.40),
    "B6": ("list all accounts in pages of 10 000 / ldapsearch -E pr=10000",
           "<= 3.0, peak < 200 MB",
           lambda r: r["ratio"].median <= 3.0 and max(r["peak_mb"].values) < 200),
    "B7": ("POST /mail/account/ rate / hash-only rate (100 000 rounds, 2 processes)",
           ">= 0.80", lambda r: r["ratio"].median >= 0.80),
}


def _details(name: str, result: dict[str, Any]) -> str:
    parts = [f"{key}: {value.fmt()}" for key, value in result.items()
             if isinstance(value, Samples) and key != "ratio"]
    return "; ".join(parts)


def render(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` ({' '.join(sys.argv[1:]) or 'full sizes'}) on "
        f"{datetime.date.today().isoformat()}.",
        "",
        f"Machine: {machine()}.",
        "",
        f"Sizes: {args.accounts} accounts; {args.runs} runs each; the gateway and its "
        "baseline run in the same command against the same slapd (production settings: "
        "fsync on, the shipped indexes). Figures are median (min, max) of the runs; the "
        "ratio is gateway / baseline.",
        "",
        "| scenario | what (gateway / baseline) | target | ratio, median (min, max) | met | "
        "details |",
        "|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        what, target, check = TARGETS[name]
        lines.append(f"| {name} | {what} | {target} | {result['ratio'].fmt()} | "
                     f"{'yes' if check(result) else '**no**'} | {_details(name, result)} |")
    lines += ["", "Rates are per second, times in seconds, latencies (p50, p99) in "
              "milliseconds, memory (peak_mb: VmHWM of the serving worker) in MiB.", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10 000 accounts, short runs")
    parser.add_argument("--only", default="", help="comma-separated scenarios, e.g. B5,B6")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    args.accounts = 10_000 if args.quick else 100_000
    seconds = 5 if args.quick else 10
    creates = 20 if args.quick else 40
    wanted = {s.strip() for s in args.only.split(",") if s.strip()} or set(TARGETS)
    import api_bench

    with tempfile.TemporaryDirectory(prefix="mailgate-bench-") as tmp:
        results = api_bench.run_all(Path(tmp), args.accounts, args.runs, seconds, creates)
    results = {k: v for k, v in sorted(results.items()) if k in wanted}
    text = render(results, args)
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
