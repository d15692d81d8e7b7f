"""Where a ``GET /mail/account/{id}/`` spends its CPU: py-spy on one serving worker.

    python bench/profile_b5.py [--config granian:1x4] [--seconds 15] [--path healthz]
    python bench/profile_b5.py --path list --accounts 100000   (B6: pages of 10 000)

Serves the gateway (bench/servers.py launcher) against a slapd with 10 000
accounts, drives it with wrk (8 clients; ``--path list``: one client paging through every
account in pages of 10 000, as B6 does) and samples the worker process with
py-spy (``pip install py-spy``; needs ptrace, i.e. root or CAP_SYS_PTRACE).
Prints the heaviest frames by own time and by inclusive time (share of the
samples in which the frame is on the stack), GIL-holding samples only
(``--gil``): the Python work that competes for the worker's one interpreter.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import api_bench
import requests
import urllib3
from common import children, production_slapd, write_ldif
from servers import launched


def summarise(collapsed: Path, top: int) -> str:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[_short(frames[-1])] += n
        for frame in {_short(f) for f in frames}:
            inclusive[frame] += n
    lines = [f"{total} samples", "", "own time:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    heaviest = own.most_common(1)[0][0] if own else ""
    callers: collections.Counter[str] = collections.Counter()
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [_short(f) for f in stack.split(";")]
        if frames and frames[-1] == heaviest:
            callers[" < ".join(frames[-2:-6:-1][:4])] += int(count)
    lines += ["", f"callers of {heaviest}:"]
    lines += [f"  {100 * n / total:5.1f}%  {c}" for c, n in callers.most_common(5)]
    lines += ["", "inclusive:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top * 2)]
    return "\n".join(lines)


def _short(frame: str) -> str:
    """``func (path/to/module.py:12)`` -> ``func (module.py)``."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(where).parts
    return f"{name} ({'/'.join(parts[-2:])})" if where else name


def list_pages(url: str, seconds: float) -> dict[str, float]:
    """Page through every account (pages of 10 000), again and again, for ``seconds``."""
    session = requests.Session()
    start, pages, listings = time.monotonic(), 0, 0
    while time.monotonic() - start < seconds:
        pages += api_bench.page_through(session, url)[1]
        listings += 1
    elapsed = time.monotonic() - start
    return {"pages": pages, "listings": listings, "s_per_page": elapsed / pages}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="granian:1x4")
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--gil", action="store_true", help="only samples holding the GIL")
    parser.add_argument("--native", action="store_true", help="native frames too")
    parser.add_argument("--path", choices=["account", "healthz", "list"], default="account")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    from api_bench import _wrk

    urllib3.disable_warnings()  # the self-signed certificate of the profiled gateway

    with tempfile.TemporaryDirectory(prefix="mailgate-profile-") as tmp:
        work = Path(tmp)
        data = write_ldif(work / "accounts.ldif", args.accounts)
        with production_slapd(work / "slapd", preload=data) as server, \
                launched(args.config, server, work / "gw") as (url, proc):
            _wrk(url, args.accounts, 2, 8)  # warm-up
            workers = children(proc.pid) or [proc.pid]
            out = work / "profile.txt"
            record = [py_spy, "record", "--pid", str(workers[0]), "--duration",
                      str(args.seconds), "--format", "raw", "--output", str(out),
                      "--rate", "200"]
            if args.gil:
                record.append("--gil")
            if args.native:
                record.append("--native")  # needs the blocking (default) mode
            else:
                record.append("--nonblocking")
            result: dict[str, float] = {}
            if args.path == "list":
                load = threading.Thread(target=lambda: result.update(
                    list_pages(url, args.seconds)))
            else:
                load = threading.Thread(target=lambda: result.update(
                    _wrk(url, args.accounts, args.seconds, 8, floor=args.path == "healthz")))
            load.start()
            subprocess.run(record, check=True, capture_output=True)
            load.join()
            print(f"{args.config} {args.path}: {result}")
            print(summarise(out, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
