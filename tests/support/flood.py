"""A flood of requests with a wrong token from many source addresses (tests/test_flood.py).

``python -m tests.support.flood HOST PORT EACH PARALLEL SOURCE...`` sends EACH
requests from every SOURCE address (round by round, PARALLEL connections at
a time, one TLS connection per request, as a scanner does) and prints one
JSON object: ``{"statuses": {source: [status, ...]}, "seconds": ...}``; a
connection that failed counts as status 0. Run inside a network namespace
(``ip netns exec``) for IPv6 sources the test gave that namespace. Bounded:
len(SOURCE) * EACH requests, each with a 30 s timeout.
"""

from __future__ import annotations

import json
import socket
import ssl
import sys
import time
from concurrent.futures import ThreadPoolExecutor


def one(host: str, port: int, source: str, context: ssl.SSLContext) -> int:
    family = socket.AF_INET6 if ":" in source else socket.AF_INET
    request = (f"GET /mail/account/ HTTP/1.1\r\nHost: {host}\r\n"
               "Authorization: Bearer wrong-token\r\nConnection: close\r\n\r\n").encode()
    try:
        with socket.socket(family, socket.SOCK_STREAM) as raw:
            raw.settimeout(30)
            raw.bind((source, 0))
            raw.connect((host, port))
            with context.wrap_socket(raw) as tls:
                tls.sendall(request)
                head = b""
                while b"\r\n" not in head and len(head) < 4096:
                    chunk = tls.recv(4096)
                    if not chunk:
                        break
                    head += chunk
        return int(head.split(b" ", 2)[1])
    except (OSError, ValueError, IndexError):
        return 0


def main(argv: list[str]) -> int:
    host, port, each, parallel, *sources = argv
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE   # a stranger does not care who answers
    jobs = [source for _round in range(int(each)) for source in sources]
    started = time.monotonic()
    with ThreadPoolExecutor(int(parallel)) as pool:
        codes = list(pool.map(lambda s: one(host.strip("[]"), int(port), s, context), jobs))
    statuses: dict[str, list[int]] = {s: [] for s in sources}
    for source, code in zip(jobs, codes, strict=True):
        statuses[source].append(code)
    print(json.dumps({"statuses": statuses, "seconds": time.monotonic() - started}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
