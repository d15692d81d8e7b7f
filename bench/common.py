"""Shared pieces of the benchmarks: a production-settings slapd, data, timing, memory.

Every scenario measures the gateway and its baseline in the same run on the
same machine, and reports ratios; absolute times on these shared machines
mean little.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from passlib.hash import sha512_crypt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.slapd import ManagedSlapd, free_port

BASE_DN = "dc=mail,dc=bench"
ADMIN_TOKEN = "bench-admin-token-0123456789abcdef"
# One pre-computed hash for every generated account: hashing is not what the
# list and read scenarios measure.
PASSWORD = "bench-password"
HASH = sha512_crypt.using(rounds=5000).hash(PASSWORD)


@dataclass
class Samples:
    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def fmt(self, digits: int | None = None) -> str:
        if digits is None:
            whole = all(float(v).is_integer() for v in self.values)
            digits = 0 if whole else 3 if abs(self.median) < 1 else 2
        return (f"{self.median:.{digits}f} (min {min(self.values):.{digits}f}, "
                f"max {max(self.values):.{digits}f})")


def domains_for(count: int) -> list[str]:
    return [f"d{i:03d}.example" for i in range(max(1, count // 1000))]


def account_ids(count: int) -> list[str]:
    domains = domains_for(count)
    return [f"user{i:07d}@{domains[i % len(domains)]}" for i in range(count)]


def alias_ids(count: int, accounts: int) -> list[str]:
    domains = domains_for(accounts)
    return [f"alias{i:07d}@{domains[i % len(domains)]}" for i in range(count)]


def directory_ldif(accounts: int, aliases: int = 0, origin: str = "sync") -> Iterator[str]:
    """Domains, accounts and aliases as LDIF, in the layout the gateway writes."""
    for domain in domains_for(accounts):
        yield (f"dn: dc={domain},ou=domains,{BASE_DN}\nobjectClass: mailgateDomain\n"
               f"dc: {domain}\nmailgateOrigin: {origin}\n\n")
    for address in account_ids(accounts):
        domain = address.split("@")[1]
        yield (f"dn: mail={address},dc={domain},ou=domains,{BASE_DN}\n"
               f"objectClass: mailgateAccount\nmail: {address}\n"
               f"userPassword: {{CRYPT}}{HASH}\nmailgateOrigin: {origin}\n\n")
    targets = account_ids(accounts)
    for i, address in enumerate(alias_ids(aliases, accounts)):
        domain = address.split("@")[1]
        recipients = "".join(f"mailgateAliasTarget: {t}\n" for t in alias_targets(i, targets))
        yield (f"dn: mail={address},dc={domain},ou=domains,{BASE_DN}\n"
               f"objectClass: mailgateAlias\nmail: {address}\n{recipients}"
               f"mailgateOrigin: {origin}\n\n")


def alias_targets(i: int, targets: list[str]) -> list[str]:
    """The recipients of the i-th generated alias (two accounts)."""
    return [targets[i % len(targets)], targets[(i + 1) % len(targets)]]


def document(accounts: int, aliases: int = 0, extra_accounts: int = 0,
             extra_aliases: int = 0) -> bytes:
    """A Basic JSON document holding the entries of :func:`directory_ldif`.

    ``extra_*``: more accounts and aliases, in domains ``e000.example`` and up
    (1000 addresses each), so that a bigger document is a superset of the
    directory a smaller one made (B8).
    """
    doc: dict[str, dict[str, list[dict[str, str]]]] = {}

    def add(address: str, kind: str, item: dict[str, str]) -> None:
        name, domain = address.split("@")
        doc.setdefault(domain, {"account": [], "alias": []})[kind].append(
            {"name": name, **item})

    targets = account_ids(accounts)
    for address in targets:
        add(address, "account", {"password": HASH})
    for i, address in enumerate(alias_ids(aliases, accounts)):
        add(address, "alias", {"to": ",".join(alias_targets(i, targets))})
    extra = [f"user{i:07d}@e{i // 1000:03d}.example" for i in range(extra_accounts)]
    for address in extra:
        add(address, "account", {"password": HASH})
    for i in range(extra_aliases):
        add(f"alias{i:07d}@e{i // 200:03d}.example", "alias",
            {"to": ",".join(alias_targets(i, extra))})
    return json.dumps(doc).encode()


class DocumentServer:
    """Serves one document over local HTTPS with an ETag (304 when it matches).

    ``publish(body)`` serves new content (or the same with a new ETag).
    """

    def __init__(self, tmp: Path, body: bytes) -> None:
        import ssl
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        import trustme

        self.body, self.version = body, 0
        self.answers: list[int] = []   # the status of every answer, in order
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                body, etag = owner.body, owner.etag
                if self.headers.get("If-None-Match") == etag:
                    owner.answers.append(304)
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                    return
                owner.answers.append(200)
                self.send_response(200)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        ca = trustme.CA()
        self.ca_file = tmp / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("127.0.0.1").configure_cert(context)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}/mail.json"

    @property
    def etag(self) -> str:
        return f'"v{self.version}-{len(self.body)}"'

    def publish(self, body: bytes) -> None:
        self.body, self.version = body, self.version + 1

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def write_ldif(path: Path, accounts: int, aliases: int = 0) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for chunk in directory_ldif(accounts, aliases):
            handle.write(chunk)
    return path


@contextmanager
def production_slapd(root: Path, preload: Path | None = None) -> Iterator[ManagedSlapd]:
    """A slapd with production settings (fsync on, shipped indexes) on a free port.

    ``preload`` is loaded offline with slapadd before start (fast set-up for
    scenarios that only read).
    """
    server = ManagedSlapd(root, BASE_DN, url=f"ldap://127.0.0.1:{free_port()}", nosync=False)
    server.ensure_initialised()
    if preload is not None:
        subprocess.run(["slapadd", "-q", "-n1", "-F", str(server.config_dir), "-l", str(preload)],
                       check=True, capture_output=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def ldap_tool_args(server: ManagedSlapd, service: str = "gateway") -> list[str]:
    return ["-x", "-H", server.url, "-D", server.service_dn(service), "-y",
            str(server.password_file(service))]


def serve_env(server: ManagedSlapd, data: Path, port: int, **extra: str) -> dict[str, str]:
    """The environment of a gateway serving ``server`` on ``port`` for a benchmark."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}
    env.update(MAILGATE_LDAP_URL=server.url, MAILGATE_LDAP_BASE_DN=BASE_DN,
               MAILGATE_LDAP_PASSWORD_FILE=str(server.password_file("gateway")),
               MAILGATE_ADMIN_TOKEN=ADMIN_TOKEN, MAILGATE_DATA_DIR=str(data),
               MAILGATE_LISTEN=f"127.0.0.1:{port}", MAILGATE_LOG_LEVEL="WARNING",
               MAILGATE_AUTH_FAIL_LIMIT="100000", **extra)
    return env


@contextmanager
def launched_server(command: list[str], env: dict[str, str], port: int, log_path: Path,
                    settle: float) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run ``command`` until it listens on ``port`` (60 s at most), give its workers
    ``settle`` seconds, yield (URL, process); SIGTERM (then SIGKILL) afterwards."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("wb")
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{' '.join(command[-2:])} did not start: "
                                   + log_path.read_text()[-2000:])
            try:
                with socket.create_connection(("127.0.0.1", port), 0.2):
                    break
            except OSError:
                time.sleep(0.1)
        time.sleep(settle)  # workers up
        yield f"https://127.0.0.1:{port}", proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


@contextmanager
def gateway(server: ManagedSlapd, data: Path, workers: int | None = None,
            threads: int | None = None,
            rounds: int = 100_000) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``mailgate serve`` (granian, TLS) against ``server``; yields (url, process).

    ``workers``, ``threads``: None for serve's defaults.
    """
    port = free_port()
    env = serve_env(server, data, port, MAILGATE_PASSWORD_ROUNDS=str(rounds))
    if workers is not None:
        env["MAILGATE_WORKERS"] = str(workers)
    if threads is not None:
        env["MAILGATE_THREADS"] = str(threads)
    with launched_server([sys.executable, "-m", "gateway.cli", "serve"], env, port,
                         data / "gateway.log", settle=1.0) as served:
        yield served


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // (1024 * 1024)
    slapd = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "slapd"],
                           capture_output=True, text=True, check=False).stdout
    return (f"{os.cpu_count()} cores ({cpu}), {mem} GiB RAM, {platform.platform()}, "
            f"Python {platform.python_version()}, slapd {slapd}")
