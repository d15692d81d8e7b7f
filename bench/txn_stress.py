"""Stress test of LDAP transactions on the managed slapd (not part of the suite).

    python bench/txn_stress.py                         100 000 transactions, 2 consumers
    python bench/txn_stress.py --transactions 2000     quick
    python bench/txn_stress.py --out /tmp/stress.json  also write the figures as JSON
    python bench/txn_stress.py --size 1 --kill-every 3 --transactions 5000 --compare 0
        no transactions (single operations), slapd SIGKILLed every 3 s instead:
        is what the consumers hold after a provider crash a matter of transactions?

A provider with production settings (fsync on, the shipped indexes), its
product supervisor (``ManagedSlapd.supervise``: restarts it when it dies) and
``--consumers`` syncrepl consumers (ldif/replica.ldif) attached from the
start. The gateway's own code writes: ``Directory.write_many`` with
``transaction_size=--size``, in chunks whose writes touch distinct entries,
mixed adds, modifies (a new alias target) and deletes of aliases; a reader
thread searches meanwhile, as the API would. Every outcome is applied to a
model of what the directory must hold.

When slapd dies (the writer sees DirectoryUnavailable): the crash is
counted, with its kernel log line (``dmesg``) when readable; the batch that
was in flight is read back once the supervisor has slapd running again and
must be applied whole or not at all (``half_written`` counts the other
case); the model takes the directory's word for it and the run goes on.

At the end: every consumer must catch up (the same contextCSN) and hold
exactly the provider's aliases and targets, and the provider exactly the
model. Also measured in the same run, for the figures: ``--compare`` writes
as pipelined single operations and as transactions, same mix, fresh
entries (ops per second each).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from common import BASE_DN, machine, production_slapd
from scale_bench import context_csn, wait_caught_up

from gateway.directory import Directory, Write, eq
from gateway.entries import OC_ALIAS, ORIGIN_SYNC, Layout, alias_attrs
from gateway.errors import DirectoryUnavailable
from gateway.replication import ReplicaSlapd, share_secrets
from gateway.settings import Settings
from gateway.slapd import ManagedSlapd, free_port

DOMAINS = 20
LAYOUT = Layout(BASE_DN)
_SEGFAULT = re.compile(r"slapd\[\d+\]: segfault.*")


def kernel_slapd_faults() -> list[str]:
    """The kernel log's slapd segfault lines (empty if dmesg is not readable)."""
    done = subprocess.run(["dmesg"], capture_output=True, text=True, check=False)
    return _SEGFAULT.findall(done.stdout) if done.returncode == 0 else []


def address(n: int) -> str:
    return f"s{n:07d}@d{n % DOMAINS:02d}.stress"


def add(n: int, target: str) -> Write:
    return Write("add", LAYOUT.address(address(n)),
                 alias_attrs(address(n), [target], ORIGIN_SYNC), OC_ALIAS)


# --mix: (below this roll an add, below this a modify, else a delete)
MIXES = {"mixed": (0.40, 0.75), "add": (1.0, 1.0), "modify": (0.0, 1.0),
         "delete": (0.5, 0.5)}


class Stress:
    def __init__(self, provider: ManagedSlapd, size: int, seed: int,
                 mix: str = "mixed") -> None:
        self.provider = provider
        self.size = size
        self.mix, self.mixed = MIXES[mix], mix == "mixed"
        self.random = random.Random(seed)
        self.settings = Settings(ldap_url=provider.url, ldap_base_dn=BASE_DN,
                                 ldap_password=provider.password("gateway"),
                                 ldap_timeout=30.0, ldap_transaction_size=size)
        self.directory = Directory(self.settings)
        self.model: dict[int, str] = {}      # alias number -> its one target
        self.next = 0
        self.counts = {"transactions": 0, "writes": 0, "crashes": 0, "half_written": 0,
                       "whole_after_crash": 0, "none_after_crash": 0, "refused": 0,
                       "reads": 0, "read_errors": 0}
        self.crash_log: list[str] = []

    def setup(self) -> None:
        for d in range(DOMAINS):
            self.directory.add(LAYOUT.domain(f"d{d:02d}.stress"), "mailgateDomain",
                               {"dc": [f"d{d:02d}.stress"]})

    def chunk(self, transactions: int) -> list[Write]:
        """``transactions`` x ``size`` writes, each entry at most once; the mix
        ``mixed``: about 40 % adds, 35 % modifies, 25 % deletes (adds only
        while few exist)."""
        writes: list[Write] = []
        existing = list(self.model)
        self.random.shuffle(existing)
        for _ in range(transactions * self.size):
            roll = self.random.random()
            few = len(existing) < 1000 if self.mixed else not existing
            if roll < self.mix[0] or few:
                n, self.next = self.next, self.next + 1
                writes.append(add(n, f"t{self.random.randrange(10**6)}@example.net"))
            else:
                n = existing.pop()
                if roll < self.mix[1]:
                    writes.append(Write("modify", LAYOUT.address(address(n)), {
                        "mailgateAliasTarget": [f"t{self.random.randrange(10**6)}@example.net"]}))
                else:
                    writes.append(Write("delete", LAYOUT.address(address(n))))
        return writes

    @staticmethod
    def number(dn: str) -> int:
        return int(dn.split("=", 1)[1][1:8])

    def applied(self, write: Write) -> None:
        n = self.number(write.dn)
        if write.op == "delete":
            self.model.pop(n, None)
        else:
            self.model[n] = str(write.attrs["mailgateAliasTarget"][0])

    def read_back(self, write: Write) -> bool:
        """Was ``write`` applied? (after a crash: the directory's word)"""
        entry = self.directory.read(write.dn, eq("objectClass", OC_ALIAS),
                                    ["mailgateAliasTarget"])
        if write.op == "delete":
            return entry is None
        if entry is None:
            return False
        return [v.decode() for v in entry.attrs.get("mailgateAliasTarget", [])] == \
            [str(write.attrs["mailgateAliasTarget"][0])]

    def wait_back(self, old_pid: int | None, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.provider.pid
            if pid is not None and pid != old_pid and self.provider.binds():   # None: any
                return
            time.sleep(0.2)
        raise RuntimeError("the supervisor did not bring slapd back")

    def run_chunk(self, writes: list[Write]) -> None:
        pid = self.provider.pid
        yielded: set[str] = set()
        try:
            for write, error in self.directory.write_many(writes):
                yielded.add(write.dn)
                self.counts["writes"] += 1
                if error is None:
                    self.applied(write)
                else:
                    self.counts["refused"] += 1
            self.counts["transactions"] += -(-len(writes) // self.size)
            return
        except DirectoryUnavailable:
            pass
        self.counts["crashes"] += 1
        self.wait_back(pid)
        # Transactions are sequential: at most the batch after the last yielded
        # write was in flight. Which of the rest were applied, by the directory.
        rest = [w for w in writes if w.dn not in yielded]
        if self.size == 1:
            # Single operations are pipelined: any of the rest may have been
            # applied, each wholly (one write, one commit). The model follows.
            for write in rest:
                if self.read_back(write):
                    self.applied(write)
            self.counts["transactions"] += len(writes) - len(rest)
            return
        in_flight, untouched = rest[:self.size], rest[self.size:]
        done = [self.read_back(w) for w in in_flight]
        if all(done):
            self.counts["whole_after_crash"] += 1
        elif not any(done):
            self.counts["none_after_crash"] += 1
        else:
            self.counts["half_written"] += 1
        for write, was in zip(in_flight, done, strict=True):
            if was:
                self.applied(write)
        if any(self.read_back(w) for w in untouched):
            self.counts["half_written"] += 1     # a later batch applied: impossible
        self.counts["transactions"] += -(-(len(writes) - len(rest)) // self.size)

    def reader(self, stop: threading.Event, limit: int) -> None:
        reading = Directory(self.settings)
        try:
            for _ in range(limit):                      # bounded; stop ends it sooner
                if stop.is_set():
                    return
                try:
                    reading.find(LAYOUT.domains, eq("mailgateAliasTarget", "t1@example.net"),
                                 ["mail"], limit=10)
                    self.counts["reads"] += 1
                except DirectoryUnavailable:
                    self.counts["read_errors"] += 1
                    stop.wait(0.2)
        finally:
            reading.close()

    def directory_state(self, server: ManagedSlapd) -> dict[int, str]:
        out = subprocess.run(
            ["ldapsearch", "-x", "-H", server.url, "-D", self.provider.service_dn("replicator"),
             "-y", str(self.provider.password_file("replicator")), "-LLL", "-o",
             "ldif-wrap=no", "-E", "pr=2000/noprompt", "-b", f"ou=domains,{BASE_DN}",
             "(objectClass=mailgateAlias)", "mail", "mailgateAliasTarget"],
            capture_output=True, text=True, check=True).stdout
        state: dict[int, str] = {}
        current = -1
        for line in out.splitlines():
            if line.startswith("mail: "):
                current = int(line[7:14])
            elif line.startswith("mailgateAliasTarget: "):
                state[current] = line.split(": ", 1)[1]
        return state


def difference(provider: dict[int, str], consumer: dict[int, str]) -> dict[str, Any]:
    """What a consumer holds that the provider does not, and the reverse."""
    extra = sorted(set(consumer) - set(provider))
    missing = sorted(set(provider) - set(consumer))
    other = sorted(n for n in set(provider) & set(consumer) if provider[n] != consumer[n])
    return {"extra_on_consumer": len(extra), "missing_on_consumer": len(missing),
            "other_target": len(other), "examples": (extra + missing + other)[:5]}


def killer(provider: ManagedSlapd, every: float, stop: threading.Event,
           kills: list[int], how: signal.Signals = signal.SIGKILL) -> None:
    """Send ``how`` to the provider's slapd (ours: started by this script) every
    ``every`` seconds, at most 10 000 times, until ``stop``."""
    for _ in range(10_000):
        if stop.wait(every):
            return
        pid = provider.pid
        if pid is not None:
            os.kill(pid, how)
            kills.append(pid)


def compare_rates(provider: ManagedSlapd, stress: Stress, writes: int) -> dict[str, float]:
    """Ops per second of the same mix as single operations and in transactions."""
    rates: dict[str, float] = {}
    for label, size in (("single", 0), ("transactions", stress.size)):
        for _attempt in range(10):        # slapd may die under it: measured again
            chunk = stress.chunk(writes // stress.size)
            start = time.perf_counter()
            pid = provider.pid
            try:
                for write, error in stress.directory.write_many(chunk, transaction_size=size):
                    if error is None:
                        stress.applied(write)
            except DirectoryUnavailable:
                stress.counts["crashes"] += 1
                stress.wait_back(pid)
                stress.model = stress.directory_state(provider)
                continue
            rates[f"{label}_ops_per_s"] = len(chunk) / (time.perf_counter() - start)
            break
    rates["ratio"] = rates["single_ops_per_s"] / rates["transactions_ops_per_s"]
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transactions", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=5, help="writes per transaction")
    parser.add_argument("--consumers", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=200, help="transactions per write_many")
    parser.add_argument("--compare", type=int, default=5000,
                        help="writes of each kind for the rate comparison (0: none)")
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--hours", type=float, default=3.0, help="time bound of the run")
    parser.add_argument("--mix", choices=sorted(MIXES), default="mixed",
                        help="the writes: mixed (40 %% adds, 35 %% modifies, 25 %% deletes), "
                             "add, modify (after 1 000 adds) or delete (half adds)")
    parser.add_argument("--kill-every", type=float, default=0.0,
                        help="stop the provider's slapd every this many seconds (0: never); "
                             "the supervisor starts it again")
    parser.add_argument("--signal", choices=("KILL", "TERM"), default="KILL",
                        help="with --kill-every: a crash (KILL) or a clean stop (TERM)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    faults_before = len(kernel_slapd_faults())
    started = time.monotonic()
    result: dict[str, Any] = {"machine": machine(), "size": args.size,
                              "consumers": args.consumers, "mix": args.mix,
                              "kill_every": args.kill_every, "signal": args.signal}
    with tempfile.TemporaryDirectory(prefix="mailgate-txn-stress-") as tmp, \
            production_slapd(Path(tmp) / "provider") as provider:
        consumers: list[ReplicaSlapd] = []
        stop = threading.Event()            # the reader
        unsupervised = threading.Event()    # the supervisor, at the very end
        supervisor = provider.supervise(unsupervised, check_every=0.2)
        try:
            for rid in range(1, args.consumers + 1):
                consumer = ReplicaSlapd(Path(tmp) / f"consumer{rid}", BASE_DN,
                                        url=f"ldap://127.0.0.1:{free_port()}", nosync=False,
                                        provider_url=provider.url, rid=rid)
                share_secrets(provider, consumer, ("replicator",))
                consumer.start()
                consumers.append(consumer)
            stress = Stress(provider, args.size, args.seed, args.mix)
            stress.setup()
            pids = {c.url: c.pid for c in consumers}
            reader = threading.Thread(target=stress.reader, args=(stop, 10**8), daemon=True)
            reader.start()
            kills: list[int] = []
            if args.kill_every > 0:
                threading.Thread(target=killer, args=(provider, args.kill_every, stop, kills,
                                                      signal.Signals[f"SIG{args.signal}"]),
                                 daemon=True).start()
            deadline = started + args.hours * 3600
            progress = 0
            while stress.counts["transactions"] < args.transactions \
                    and time.monotonic() < deadline:      # bounded in count and time
                left = args.transactions - stress.counts["transactions"]
                stress.run_chunk(stress.chunk(min(args.chunk, left)))
                if stress.counts["transactions"] >= progress:
                    print(f"{time.monotonic() - started:7.0f} s {stress.counts}", flush=True)
                    progress += 10_000
            if args.compare:
                result["rates"] = compare_rates(provider, stress, args.compare)
            stop.set()
            reader.join(30)
            # slapd may have died under the last writes: the supervisor's restart first.
            stress.wait_back(None)
            result["seconds"] = round(time.monotonic() - started, 1)
            result["kills"] = len(kills)
            result["counts"] = dict(stress.counts)
            lag: list[float] = []
            equal: list[bool] = []
            want = stress.directory_state(provider)
            result["provider_equals_model"] = want == stress.model
            result["aliases"] = len(want)
            differences: list[dict[str, Any]] = []
            for consumer in consumers:
                lag.append(round(wait_caught_up(consumer, provider, timeout=1800), 2))
                theirs = stress.directory_state(consumer)
                equal.append(theirs == want and
                             context_csn(consumer, provider) == context_csn(provider,
                                                                            provider))
                differences.append(difference(want, theirs))
            result["consumer_differences"] = differences
            result["consumer_catch_up_s"] = lag
            result["consumers_equal"] = equal
            result["consumer_restarts"] = sum(1 for c in consumers if c.pid != pids[c.url])
            stress.directory.close()
        finally:
            stop.set()
            unsupervised.set()
            supervisor.join(10)
            for consumer in consumers:
                consumer.stop()
    faults = kernel_slapd_faults()[faults_before:]
    result["kernel_segfaults"] = len(faults)
    result["kernel_lines"] = faults[:20]
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0 if result["provider_equals_model"] and all(result["consumers_equal"]) \
        and not result["counts"]["half_written"] else 1


if __name__ == "__main__":
    sys.exit(main())
