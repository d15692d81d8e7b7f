"""B5-B7: the REST API against its fastest baselines on the same slapd.

B5  GET /mail/account/{id}/ over HTTPS, 8 concurrent keep-alive clients (wrk),
    vs 8 processes reading the same entries straight from slapd, with
    python-ldap (the project's LDAP client: every gateway operation goes
    through it) and with ldap3 (the pure-Python client it used before); and
    vs the same server answering /healthz (no token, no LDAP).
B5b the same GET with 64 clients, vs the 8-client rate of the same run.
B6  every account through GET /mail/account/ in pages of 10 000, vs ldapsearch
    with the same page size; peak memory of the serving process.
B7  POST /mail/account/ with the configured hash rounds, vs the same machine
    computing that hash alone.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import re
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import requests
from common import (
    ADMIN_TOKEN,
    BASE_DN,
    Samples,
    account_ids,
    children,
    domains_for,
    gateway,
    ldap_tool_args,
    peak_rss_mb,
    production_slapd,
    write_ldif,
)
from passlib.hash import sha512_crypt

from gateway.entries import ACCOUNT_ATTRS, ACCOUNT_LIST_ATTRS

# The baselines read what the gateway reads: one account, and a list page.
ATTRS = list(ACCOUNT_ATTRS)
LIST_ATTRS = list(ACCOUNT_LIST_ATTRS)
HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _wrk(url: str, accounts: int, seconds: int, concurrency: int,
         floor: bool = False, check: bool = True) -> dict[str, float]:
    """wrk on random accounts; ``floor``: on /healthz instead (no token, no LDAP).

    ``errors``: non-2xx answers plus socket errors (connect, read, write,
    timeout); with ``check`` any of them raises.
    """
    domains = len(domains_for(accounts))
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(f"""
math.randomseed(os.time())
request = function()
  local i = math.random(0, {accounts - 1})
  local path = string.format("/mail/account/user%07d@d%03d.example/", i, i % {domains})
  return wrk.format("GET", path, {{["Authorization"] = "Bearer {ADMIN_TOKEN}"}})
end
""" if not floor else """
request = function()
  return wrk.format("GET", "/healthz", {})
end
""")
    out = subprocess.run(["wrk", "-t2", f"-c{concurrency}", f"-d{seconds}s", "--latency",
                          "-s", str(script), url], capture_output=True, text=True,
                         check=True).stdout
    script.unlink()
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses:\s+(\d+)", out))
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                              r"timeout (\d+)", out)
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    if check and errors:
        raise RuntimeError("wrk saw errors:\n" + out)

    def ms(label: str) -> float:
        value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)\b", out).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return {"rate": rate, "p50": ms("50%"), "p99": ms("99%"), "errors": float(errors)}


def _ldap_reader(args: tuple[str, str, str, str, int, float]) -> list[float]:
    """One process reading random accounts as the gateway does (same filter, attributes)."""
    client, url, dn, password, accounts, seconds = args
    ids = account_ids(accounts)
    base = f"ou=domains,{BASE_DN}"
    latencies: list[float] = []
    if client == "ldap3":
        import ldap3

        conn = ldap3.Connection(ldap3.Server(url, get_info=ldap3.NONE), dn, password,
                                auto_bind=True, raise_exceptions=True)

        def lookup(address: str) -> int:
            conn.search(base, f"(&(objectClass=mailgateAccount)(mail={address}))",
                        ldap3.SUBTREE, attributes=ATTRS)
            return len(conn.response)
    else:
        import ldap

        conn = ldap.initialize(url)
        conn.protocol_version = 3
        conn.simple_bind_s(dn, password)

        def lookup(address: str) -> int:
            msgid = conn.search_ext(base, ldap.SCOPE_SUBTREE,
                                    f"(&(objectClass=mailgateAccount)(mail={address}))",
                                    ATTRS, sizelimit=2)
            return len(conn.result3(msgid)[1])
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        address = random.choice(ids)
        start = time.perf_counter()
        if lookup(address) != 1:
            raise RuntimeError(f"{address} not found")
        latencies.append(time.perf_counter() - start)
    return latencies


def _ldap_baseline(server: Any, client: str, accounts: int, seconds: int,
                   concurrency: int) -> dict[str, float]:
    job = (client, server.url, server.service_dn("gateway"), server.password("gateway"),
           accounts, float(seconds))
    with multiprocessing.get_context("fork").Pool(concurrency) as pool:
        results = pool.map(_ldap_reader, [job] * concurrency)
    latencies = sorted(x for r in results for x in r)
    return {"rate": len(latencies) / seconds, "p50": latencies[len(latencies) // 2] * 1000,
            "p99": latencies[int(len(latencies) * 0.99)] * 1000}


def b5(server: Any, work: Path, accounts: int, runs: int, seconds: int) -> dict[str, Any]:
    names = ("ratio", "ratio_vs_ldap3", "gateway_rate", "python_ldap_rate", "ldap3_rate",
             "p50", "p99", "python_ldap_p50", "python_ldap_p99", "ldap3_p50", "ldap3_p99",
             "healthz_rate", "healthz_ratio", "vs_healthz")
    found: dict[str, Samples] = {name: Samples() for name in names}
    wide: dict[str, Samples] = {name: Samples() for name in (
        "ratio", "rate_64", "rate_8", "p50", "p99", "errors")}
    with gateway(server, work / "b5") as (url, _proc):
        _wrk(url, accounts, 2, 8)  # warm-up
        for run in range(runs):
            # Interleaved, so that a noisy moment of the machine hits all three alike.
            # B5b compares 64 clients with the 8 of the same round: the two runs
            # are next to each other, in turns first, so that the machine's drift
            # over a round (tens of seconds) is not read as the cost of 64 clients.
            if run % 2:
                many = _wrk(url, accounts, seconds, 64, check=False)
            gw = _wrk(url, accounts, seconds, 8)
            if not run % 2:
                many = _wrk(url, accounts, seconds, 64, check=False)
            native = _ldap_baseline(server, "python-ldap", accounts, seconds, 8)
            pure = _ldap_baseline(server, "ldap3", accounts, seconds, 8)
            # The same stack (TLS, granian, Flask-RESTX) answering without LDAP or token:
            # what the gateway could reach if its LDAP lookup cost nothing.
            floor = _wrk(url, accounts, seconds, 8, floor=True)
            for name, value in (("ratio", many["rate"] / gw["rate"]), ("rate_64", many["rate"]),
                                ("rate_8", gw["rate"]), ("p50", many["p50"]),
                                ("p99", many["p99"]), ("errors", many["errors"])):
                wide[name].add(value)
            for name, value in (("ratio", gw["rate"] / native["rate"]),
                                ("ratio_vs_ldap3", gw["rate"] / pure["rate"]),
                                ("gateway_rate", gw["rate"]),
                                ("python_ldap_rate", native["rate"]),
                                ("ldap3_rate", pure["rate"]),
                                ("p50", gw["p50"]), ("p99", gw["p99"]),
                                ("python_ldap_p50", native["p50"]),
                                ("python_ldap_p99", native["p99"]),
                                ("ldap3_p50", pure["p50"]), ("ldap3_p99", pure["p99"]),
                                ("healthz_rate", floor["rate"]),
                                ("healthz_ratio", floor["rate"] / native["rate"]),
                                ("vs_healthz", gw["rate"] / floor["rate"])):
                found[name].add(value)
    return {**found, "B5b": dict(wide)}


def page_through(session: requests.Session, url: str,
                 parse: Callable[[bytes], Any] = orjson.loads,
                 max_pages: int = 1000) -> tuple[int, int]:
    """Every account through ``GET /mail/account/`` in pages of 10 000, following
    ``next`` to the end (at most ``max_pages``): (accounts listed, pages)."""
    seen = 0
    for page in range(1, max_pages + 1):
        response = session.get(f"{url}/mail/account/", params={
            "page": page, "page_size": 10000}, headers=HEADERS, verify=False, timeout=600)
        response.raise_for_status()
        body = parse(response.content)
        seen += len(body["results"])
        if body["next"] is None:
            return seen, page
    raise RuntimeError(f"still a next page after {max_pages} pages")


def list_all(url: str, accounts: int, parse: Callable[[bytes], Any] = orjson.loads) -> float:
    """Seconds to page through every account (B6's client); all ``accounts`` or an error."""
    start = time.perf_counter()
    seen, _pages = page_through(requests.Session(), url, parse)
    elapsed = time.perf_counter() - start
    if seen != accounts:
        raise RuntimeError(f"listed {seen} of {accounts} accounts")
    return elapsed


def b6(server: Any, work: Path, accounts: int, runs: int) -> dict[str, Any]:
    ratio, gw_time, base_time, memory = Samples(), Samples(), Samples(), Samples()
    stdlib_time = Samples()

    for run in range(runs):
        with gateway(server, work / f"b6-{run}", workers=1) as (url, proc):
            # The client parses each page in C (orjson), as ldapsearch decodes in C;
            # the same listing parsed by Python's json module is a detail.
            elapsed = list_all(url, accounts)
            stdlib_time.add(list_all(url, accounts, json.loads))
            memory.add(max(peak_rss_mb(pid) for pid in children(proc.pid)))
        start = time.perf_counter()
        listed = subprocess.run(["ldapsearch", *ldap_tool_args(server), "-LLL",
                                 "-E", "pr=10000/noprompt", "-b", f"ou=domains,{BASE_DN}",
                                 "(objectClass=mailgateAccount)", *LIST_ATTRS],
                                capture_output=True, check=True)
        base = time.perf_counter() - start
        if listed.stdout.count(b"\ndn: ") + listed.stdout.startswith(b"dn: ") != accounts:
            raise RuntimeError("ldapsearch did not list every account")
        gw_time.add(elapsed)
        base_time.add(base)
        ratio.add(elapsed / base)
    return {"ratio": ratio, "gateway_s": gw_time, "baseline_s": base_time, "peak_mb": memory,
            "gateway_stdlib_json_client_s": stdlib_time}


def _hash(i: int) -> str:
    return str(sha512_crypt.using(rounds=100_000).hash(f"password-{i}"))


def b7(server: Any, work: Path, runs: int, count: int) -> dict[str, Any]:
    ratio, gw_rate, base_rate = Samples(), Samples(), Samples()
    with gateway(server, work / "b7") as (url, _proc):
        session = requests.Session()
        for run in range(runs):
            def create(i: int, run: int = run) -> int:
                response = session.post(f"{url}/mail/account/", json={
                    "name": f"new{run}x{i}", "domain": "b7.example",
                    "password": f"password-{i}"}, headers=HEADERS, verify=False, timeout=120)
                return response.status_code

            start = time.perf_counter()
            with ThreadPoolExecutor(4) as pool:
                statuses = list(pool.map(create, range(count)))
            elapsed = time.perf_counter() - start
            if set(statuses) != {201}:
                raise RuntimeError(f"creates failed: {statuses}")
            start = time.perf_counter()
            with multiprocessing.get_context("fork").Pool(2) as pool:
                pool.map(_hash, range(count))
            hashing = time.perf_counter() - start
            gw_rate.add(count / elapsed)
            base_rate.add(count / hashing)
            ratio.add((count / elapsed) / (count / hashing))
    return {"ratio": ratio, "gateway_rate": gw_rate, "baseline_rate": base_rate}


def run_all(work: Path, accounts: int, runs: int, seconds: int, creates: int,
            wanted: set[str]) -> dict[str, dict[str, Any]]:
    """B5-B7 as ``wanted``, on one slapd loaded (slapadd) with ``accounts`` accounts."""
    import urllib3

    urllib3.disable_warnings()  # the bench gateway's self-signed certificate
    data = write_ldif(work / "accounts.ldif", accounts)
    results: dict[str, dict[str, Any]] = {}
    with production_slapd(work / "slapd", preload=data) as server:
        if wanted & {"B5", "B5B"}:
            b5_result = b5(server, work, accounts, runs, seconds)
            results["B5b"] = b5_result.pop("B5b")
            results["B5"] = b5_result
        if "B6" in wanted:
            results["B6"] = b6(server, work, accounts, runs)
        if "B7" in wanted:
            results["B7"] = b7(server, work, runs, creates)
    return results
