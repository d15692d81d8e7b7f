"""Plain refreshAndPersist against delta-syncrepl (accesslog), measured: the figures
behind the choice in docs/scaling.md. Not a shipped configuration: the delta
variant's cn=config lives here only.

    cd bench && ../.venv/bin/python delta_probe.py [--changes 1000]

For each mode: a provider (production settings, fsync on) with 1 000 accounts,
one consumer behind a counting TCP proxy; then ``--changes`` password modifies
and as many adds through the gateway's Directory. Per change: bytes on the
replication wire, provider and consumer CPU, wall time until the consumer has
it, and the provider's disk growth.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import BASE_DN, write_ldif
from scale_bench import CountingProxy, apply_changes, cpu_seconds, mdb_used, wait_caught_up

from gateway.directory import Directory
from gateway.replication import ReplicaSlapd, share_secrets
from gateway.settings import Settings
from gateway.slapd import ManagedSlapd, free_port

ACCESSLOG_PROVIDER = """
dn: olcDatabase={{2}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{2}}mdb
olcSuffix: cn=accesslog
olcDbDirectory: {logdir}
olcRootDN: cn=admin,{base}
olcDbIndex: entryCSN,objectClass,reqEnd,reqResult,reqStart eq
olcDbNoSync: FALSE
olcAccess: {{0}}to * by dn.exact="cn=replicator,ou=services,{base}" read by * none
olcLimits: {{0}}dn.exact="cn=replicator,ou=services,{base}" size=unlimited time=unlimited

dn: olcOverlay={{0}}syncprov,olcDatabase={{2}}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcSyncProvConfig
olcOverlay: {{0}}syncprov
olcSpNoPresent: TRUE
olcSpReloadHint: TRUE

dn: olcOverlay={{2}}accesslog,olcDatabase={{1}}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcAccessLogConfig
olcOverlay: {{2}}accesslog
olcAccessLogDB: cn=accesslog
olcAccessLogOps: writes
olcAccessLogSuccess: TRUE
olcAccessLogPurge: 07+00:00 01+00:00
"""


@dataclass
class DeltaProvider(ManagedSlapd):
    """config.ldif plus the accesslog module, database and overlay (slapmodify
    cannot add databases, so they are appended before slapadd -n0)."""

    def render(self, name: str, values: dict[str, str]) -> str:  # type: ignore[override]
        text = ManagedSlapd.render(name, values)
        if name != "config.ldif":
            return text
        logdir = self.root / "accesslog"
        logdir.mkdir(parents=True, exist_ok=True)
        text = text.replace("olcModuleLoad: sssvlv\n",
                            "olcModuleLoad: sssvlv\nolcModuleLoad: accesslog\n")
        return text.rstrip("\n") + "\n" + ACCESSLOG_PROVIDER.format(base=self.base_dn,
                                                                  logdir=logdir)


@dataclass
class DeltaConsumer(ReplicaSlapd):
    def config_changes(self, values: dict[str, str]) -> list[str]:
        [text] = super().config_changes(values)
        return [text.replace("type=refreshAndPersist",
                             'type=refreshAndPersist syncdata=accesslog logbase="cn=accesslog" '
                             'logfilter="(&(objectClass=auditWriteObject)(reqResult=0))"')]


def probe(mode: str, work: Path, changes: int) -> dict[str, float]:
    provider_cls = DeltaProvider if mode == "delta" else ManagedSlapd
    consumer_cls = DeltaConsumer if mode == "delta" else ReplicaSlapd
    provider = provider_cls(work / "provider", BASE_DN, url=f"ldap://127.0.0.1:{free_port()}")
    provider.ensure_initialised()
    import subprocess
    subprocess.run(["slapadd", "-q", "-n1", "-F", str(provider.config_dir), "-l",
                    str(write_ldif(work / "seed.ldif", 1000))], check=True, capture_output=True)
    provider.start()
    proxy = CountingProxy(int(provider.url.rsplit(":", 1)[1]))
    consumer = consumer_cls(work / "consumer", BASE_DN, url=f"ldap://127.0.0.1:{free_port()}",
                            provider_url=f"ldap://127.0.0.1:{proxy.port}")
    share_secrets(provider, consumer, ("replicator",))
    out: dict[str, float] = {}
    directory = Directory(Settings(ldap_url=provider.url, ldap_base_dn=BASE_DN,
                                   ldap_password=provider.password("gateway")))
    try:
        consumer.start()
        wait_caught_up(consumer, provider, 120)
        domain = "d000.example"
        ops = [("modify", f"user{i:07d}@{domain}") for i in range(changes)]
        ops += [("add", f"new{i:05d}@{domain}") for i in range(changes)]
        for kind in ("modify", "add"):
            batch = [(op, address) for op, address in ops if op == kind]
            wire, disk = proxy.total, mdb_used(provider.db_dir)
            if mode == "delta":
                disk += mdb_used(provider.root / "accesslog")
            p_cpu, c_cpu = cpu_seconds(provider.pid), cpu_seconds(consumer.pid)
            start = time.monotonic()
            apply_changes(directory, batch)
            wait_caught_up(consumer, provider, 600)
            n = len(batch)
            after_disk = mdb_used(provider.db_dir) + (
                mdb_used(provider.root / "accesslog") if mode == "delta" else 0)
            out[f"{kind}_wall_ms"] = (time.monotonic() - start) / n * 1000
            out[f"{kind}_bytes"] = (proxy.total - wire) / n
            out[f"{kind}_provider_cpu_ms"] = (cpu_seconds(provider.pid) - p_cpu) / n * 1000
            out[f"{kind}_consumer_cpu_ms"] = (cpu_seconds(consumer.pid) - c_cpu) / n * 1000
            out[f"{kind}_provider_disk_bytes"] = (after_disk - disk) / n
    finally:
        directory.close()
        consumer.stop()
        proxy.close()
        provider.stop()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=1000)
    args = parser.parse_args()
    results = {}
    for mode in ("plain", "delta"):
        with tempfile.TemporaryDirectory(prefix=f"mailgate-{mode}-") as tmp:
            results[mode] = probe(mode, Path(tmp), args.changes)
        print(mode, json.dumps({k: round(v, 2) for k, v in results[mode].items()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
