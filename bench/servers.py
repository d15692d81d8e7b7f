"""`make bench-servers`: the same gateway app under different HTTPS servers, in one run.

    python bench/servers.py                       100 000 accounts, 3 runs, 5 s per figure
    python bench/servers.py --quick               10 000 accounts
    python bench/servers.py --configs gunicorn:5x2,granian:2x4

Every configuration serves the same app (gateway.app.create_app, TLS with a
self-signed EC P-256 pair, an access log to a file) against one slapd loaded
with the B5 accounts; all run side by side and are measured in turn, run by
run, with the python-ldap readers of B5 as the baseline in between. Per
configuration:

* B5   ``GET /mail/account/{id}/``, 8 keep-alive clients (wrk): rate, p50, p99;
* B5b  the same with 64 clients: rate, p99, socket errors;
* hz   ``GET /healthz`` (no token, no LDAP), 8 clients;
* slow 50 connections held open, 25 that send nothing and 25 that complete
  the TLS handshake and send half a request; meanwhile 20 ``/healthz`` probes,
  each on a new connection (5 s timeout): p50 and max latency, failures.

``gunicorn:WxT`` is what ``mailgate serve`` ran before (gthread workers,
the gunicorn access logger it had); ``granian:WxT[bB][-MODE]`` is
gateway.server (W worker processes, T blocking threads each, backpressure B,
granian's runtime mode st or mt).
"""

from __future__ import annotations

import argparse
import datetime
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from common import (
    ROOT,
    free_port,
    launched_server,
    machine,
    production_slapd,
    serve_env,
    write_ldif,
)

DEFAULT_CONFIGS = "gunicorn:5x2,gunicorn:3x8,granian:2x2,granian:2x4,granian:3x2"
SLOW_CLIENTS = 50
PROBES = 20


# --- the serving side (run in a subprocess: python bench/servers.py --serve ...) ---

def _gunicorn(settings: Any, cert: Path, key: Path) -> None:
    """``mailgate serve`` as it was before gateway.server (gunicorn, gthread)."""
    import gc
    import time as _time

    from gunicorn import glogging
    from gunicorn.app.base import BaseApplication

    from gateway.app import create_app

    fmt = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'

    class AccessLogger(glogging.Logger):  # type: ignore[misc]
        """The cheaper access logger serve had (gateway/accesslog.py before)."""

        _now: tuple[int, str] = (-1, "")

        def atoms(self, resp: Any, req: Any, environ: dict[str, Any],
                  request_time: Any) -> dict[str, Any]:
            status = resp.status
            if isinstance(status, str):
                status = status.split(None, 1)[0]
            sent = getattr(resp, "sent", None)
            second = int(_time.time())
            if second != self._now[0]:
                self._now = (second, _time.strftime("[%d/%b/%Y:%H:%M:%S %z]"))
            return {"h": environ.get("REMOTE_ADDR", "-"), "l": "-",
                    "u": self._get_user(environ) or "-", "t": self._now[1],
                    "r": f"{environ['REQUEST_METHOD']} {environ['RAW_URI']} "
                         f"{environ['SERVER_PROTOCOL']}",
                    "s": status, "b": "-" if sent is None else str(sent),
                    "f": environ.get("HTTP_REFERER", "-"),
                    "a": environ.get("HTTP_USER_AGENT", "-")}

    class App(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            options = {
                "bind": settings.listen, "workers": settings.workers,
                "threads": settings.threads, "worker_class": "gthread",
                "certfile": str(cert), "keyfile": str(key),
                "accesslog": "-", "errorlog": "-", "loglevel": settings.log_level.lower(),
                "timeout": 120, "graceful_timeout": 20, "keepalive": 30,
                "proc_name": "mailgate", "preload_app": False, "logger_class": AccessLogger,
                "access_log_format": fmt,
            }
            if "control_socket_disable" in self.cfg.settings:
                options["control_socket_disable"] = True
            for name, value in options.items():
                self.cfg.set(name, value)

        def load(self) -> Any:
            app = create_app(settings)
            gc.freeze()
            gc.set_threshold(50_000, 20, 20)
            return app

    App().run()


def serve_main(name: str, backpressure: int | None, mode: str | None) -> None:
    from gateway.server import serve
    from gateway.settings import Settings
    from gateway.tls import ensure_self_signed

    settings = Settings.from_env()
    cert, key = ensure_self_signed(settings.data_dir / "tls", ["127.0.0.1"])
    if name == "gunicorn":
        _gunicorn(settings, cert, key)
    else:
        options = {"runtime_mode": mode} if mode else {}
        serve(settings, cert, key, backpressure=backpressure, **options)


# --- the measuring side ---

@contextmanager
def launched(config: str, server: Any,
             data: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Serve the gateway as ``config`` (e.g. granian:2x4b8); yield (URL, process)."""
    name, _, shape = config.partition(":")
    shape, _, mode = shape.partition("-")
    shape, _, backpressure = shape.partition("b")
    workers, _, threads = shape.partition("x")
    port = free_port()
    env = serve_env(server, data, port, MAILGATE_WORKERS=workers, MAILGATE_THREADS=threads)
    command = [sys.executable, __file__, "--serve", name]
    if backpressure:
        command += ["--backpressure", backpressure]
    if mode:
        command += ["--runtime-mode", mode]
    with launched_server(command, env, port, data / "server.log", settle=1.5) as served:
        yield served


def _probe(port: int, context: ssl.SSLContext) -> float | None:
    """One GET /healthz on a new TLS connection; seconds, or None on failure."""
    start = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), 5) as raw, \
                context.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
            conn.settimeout(5)
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Connection: close\r\n\r\n")
            answer = b""
            while len(answer) < 1 << 16:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                answer += chunk
    except OSError:
        return None
    if not answer.startswith(b"HTTP/1.1 200"):
        return None
    return time.perf_counter() - start


def slow_clients(url: str) -> dict[str, float]:
    """/healthz probes while SLOW_CLIENTS connections stall (bounded, loopback)."""
    port = int(url.rsplit(":", 1)[1])
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with ExitStack() as stack:
        for i in range(SLOW_CLIENTS):
            try:
                raw = stack.enter_context(socket.create_connection(("127.0.0.1", port), 5))
                if i % 2:
                    conn = stack.enter_context(
                        context.wrap_socket(raw, server_hostname="127.0.0.1"))
                    conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            except OSError:
                pass  # the server would not even take it: the probes tell the rest
        time.sleep(0.5)
        times: list[float | None] = []
        while len(times) < PROBES:
            times.append(_probe(port, context))
            if times[-3:] == [None, None, None]:
                times += [None] * (PROBES - len(times))  # starved: no need to wait it out
    ok = sorted(t * 1000 for t in times if t is not None)
    return {"slow_p50": statistics.median(ok) if ok else float("nan"),
            "slow_max": ok[-1] if ok else float("nan"),
            "slow_failed": float(len(times) - len(ok))}


def measure(url: str, accounts: int, seconds: int) -> dict[str, float]:
    from api_bench import _wrk

    b5 = _wrk(url, accounts, seconds, 8)
    b5b = _wrk(url, accounts, seconds, 64, check=False)
    hz = _wrk(url, accounts, seconds, 8, floor=True)
    return {"b5_rate": b5["rate"], "b5_p50": b5["p50"], "b5_p99": b5["p99"],
            "b5b_rate": b5b["rate"], "b5b_p99": b5b["p99"], "b5b_errors": b5b["errors"],
            "hz_rate": hz["rate"], **slow_clients(url)}


COLUMNS = [
    ("B5 req/s", "b5_rate", 0), ("B5 / python-ldap", "b5_ratio", 3),
    ("B5 p50 ms", "b5_p50", 2), ("B5 p99 ms", "b5_p99", 2),
    ("B5b (64) req/s", "b5b_rate", 0), ("B5b p99 ms", "b5b_p99", 1),
    ("B5b errors", "b5b_errors", 0), ("/healthz req/s", "hz_rate", 0),
    ("B5 / /healthz", "b5_vs_hz", 3), ("slow: probe p50 ms", "slow_p50", 1),
    ("slow: probe max ms", "slow_max", 1), ("slow: failed probes", "slow_failed", 0),
]


def render(found: dict[str, dict[str, list[float]]], baseline: list[float],
           args: argparse.Namespace, minutes: float) -> str:
    def cell(values: list[float], digits: int) -> str:
        return (f"{statistics.median(values):.{digits}f} "
                f"({min(values):.{digits}f}-{max(values):.{digits}f})")

    lines = [
        "# HTTPS servers for the gateway",
        "",
        f"Written by `bench/servers.py {' '.join(args.argv)}` on "
        f"{datetime.date.today().isoformat()} ({minutes:.0f} min). Machine: {machine()}.",
        "",
        f"{args.accounts} accounts; {args.runs} runs, {args.seconds} s per figure; every "
        "configuration served side by side, measured in turn run by run, with 8 python-ldap "
        f"reader processes as the baseline in each run "
        f"(median {statistics.median(baseline):.0f} lookups/s). "
        "Cells: median (min-max) of the runs. `gunicorn:WxT`: gthread, W workers, T threads "
        "(5x2 is what `mailgate serve` ran before); `granian:WxT`: gateway.server, W "
        "workers, T blocking threads. Slow: 50 connections stalled (25 silent, 25 with half "
        "a request after the TLS handshake) while 20 `/healthz` probes open new connections "
        "(5 s timeout).",
        "",
        "| server | " + " | ".join(c[0] for c in COLUMNS) + " |",
        "|---|" + "---|" * len(COLUMNS),
    ]
    for config, values in found.items():
        lines.append(f"| {config} | "
                     + " | ".join(cell(values[key], digits) for _, key, digits in COLUMNS)
                     + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--backpressure", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--runtime-mode", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="10 000 accounts")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--configs", default=DEFAULT_CONFIGS)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "servers.md")
    args = parser.parse_args()
    if args.serve:
        serve_main(args.serve, args.backpressure, args.runtime_mode)
        return 0
    args.argv = sys.argv[1:]
    args.accounts = 10_000 if args.quick else 100_000
    import urllib3
    from api_bench import _ldap_baseline

    urllib3.disable_warnings()
    started = time.monotonic()
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    found: dict[str, dict[str, list[float]]] = {c: {} for c in configs}
    baseline: list[float] = []
    with tempfile.TemporaryDirectory(prefix="mailgate-servers-") as tmp:
        work = Path(tmp)
        data = write_ldif(work / "accounts.ldif", args.accounts)
        with production_slapd(work / "slapd", preload=data) as server, ExitStack() as stack:
            urls = {c: stack.enter_context(launched(c, server, work / c.replace(":", "-")))[0]
                    for c in configs}
            from api_bench import _wrk

            for url in urls.values():
                _wrk(url, args.accounts, 2, 8)  # warm-up
            for run in range(args.runs):
                native = _ldap_baseline(server, "python-ldap", args.accounts, args.seconds, 8)
                baseline.append(native["rate"])
                order = configs if run % 2 == 0 else configs[::-1]
                for config in order:
                    figures = measure(urls[config], args.accounts, args.seconds)
                    figures["b5_ratio"] = figures["b5_rate"] / native["rate"]
                    figures["b5_vs_hz"] = figures["b5_rate"] / figures["hz_rate"]
                    print(config, {k: round(v, 3) for k, v in figures.items()}, flush=True)
                    for key, value in figures.items():
                        found[config].setdefault(key, []).append(value)
    text = render(found, baseline, args, (time.monotonic() - started) / 60)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
