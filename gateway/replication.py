"""OpenLDAP replication of the mailgate directory: consumers and a provider pair.

Nothing home-made: slapd's own syncrepl (``olcSyncrepl``, refreshAndPersist)
against the syncprov overlay that config.ldif loads on every directory. The
cn=config changes are the templates ``ldif/replica.ldif`` (a read-only
consumer, e.g. on each mail host) and ``ldif/provider-pair.ldif`` (two
providers replicating each other, olcMultiProvider); this module renders them
for ``mailgate render-config replica`` and builds managed servers from them
(``mailgate directory --replica-of``, the tests, the benchmarks).

Every consumer binds to its provider as ``cn=replicator,ou=services,<base>``,
which reads everything in the database and writes nothing (config.ldif).
"""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path
from string import Template
from urllib.parse import urlsplit

from . import resources
from .errors import RenderError
from .slapd import ManagedSlapd

REPLICATOR = "replicator"


def syncrepl_values(base_dn: str, provider_url: str, password: str, *, rid: int = 1,
                    starttls: bool = False, ca_file: Path | None = None) -> dict[str, str]:
    """The placeholders of replica.ldif / provider-pair.ldif (RenderError if unusable)."""
    parts = urlsplit(provider_url)
    if parts.scheme not in ("ldap", "ldaps") or not parts.hostname or " " in provider_url:
        raise RenderError(f"the provider must be one ldap:// or ldaps:// URL, got "
                          f"{provider_url!r}")
    if not password or any(c.isspace() or c in "\"'\\" for c in password):
        raise RenderError("the replicator password must be non-empty, without spaces, quotes "
                          "or backslashes")
    if not 0 < rid < 1000:
        raise RenderError("the replica ID (rid) must be between 1 and 999")
    tls = ""
    if starttls or parts.scheme == "ldaps":
        tls = (" starttls=critical" if starttls else "") + " tls_reqcert=demand"
        if ca_file is not None:
            tls += f" tls_cacert={ca_file}"
    return {"rid": f"{rid:03d}", "provider_url": provider_url, "peer_url": provider_url,
            "base_dn": base_dn, "replicator_dn": f"cn={REPLICATOR},ou=services,{base_dn}",
            "replicator_password": password, "tls": tls}


def render_replica(base_dn: str, provider_url: str, password: str, **options: object) -> str:
    """ldif/replica.ldif filled: the cn=config changes of a read-only consumer."""
    return Template(resources.ldif("replica.ldif")).substitute(
        syncrepl_values(base_dn, provider_url, password, **options))  # type: ignore[arg-type]


@dataclass
class ReplicaSlapd(ManagedSlapd):
    """A managed read-only consumer of ``provider_url``: empty at creation, filled by
    syncrepl; its local secrets are the admin (rootdn) password and the
    replicator's (copied from the provider)."""

    provider_url: str = ""
    rid: int = 1

    loads_base = False
    ready_as = "admin"

    def config_changes(self, values: dict[str, str]) -> list[str]:
        return [Template(resources.ldif("replica.ldif")).substitute(
            values | syncrepl_values(self.base_dn, self.provider_url,
                                     self.password(REPLICATOR), rid=self.rid))]


@dataclass
class PairedProviderSlapd(ManagedSlapd):
    """One of two providers replicating each other (server IDs 1 and 2).

    Server 1 loads base.ldif; server 2 starts empty and must share server 1's
    secrets (:func:`share_secrets` before its first start).
    """

    server_id: int = 1
    peer_url: str = ""

    ready_as = "admin"

    @property
    def loads_base(self) -> bool:  # type: ignore[override]
        return self.server_id == 1

    def config_changes(self, values: dict[str, str]) -> list[str]:
        filled = values | syncrepl_values(self.base_dn, self.peer_url,
                                          self.password(REPLICATOR), rid=self.server_id)
        filled["server_id"] = str(self.server_id)
        return [Template(resources.ldif("provider-pair.ldif")).substitute(filled)]


def share_secrets(source: ManagedSlapd, target: ManagedSlapd,
                  names: tuple[str, ...] | None = None) -> None:
    """Copy ``source``'s secret files (all, or ``names``) to ``target`` (mode 0600)."""
    target.secrets_dir.mkdir(parents=True, exist_ok=True)
    target.secrets_dir.chmod(0o700)
    for path in sorted(source.secrets_dir.iterdir()):
        if names is None or path.name in {f"ldap-{n}.password" for n in names}:
            shutil.copy2(path, target.secrets_dir / path.name)
            (target.secrets_dir / path.name).chmod(0o600)


# -- how far a replica is behind (contextCSN) -----------------------------------


def csn_times(values: list[str]) -> dict[str, float]:
    """contextCSN values (``YYYYmmddHHMMSS.ffffffZ#count#sid#mod``) as
    {server ID: Unix time of the newest change from that server}; unreadable
    values are left out."""
    times: dict[str, float] = {}
    for value in values:
        parts = value.split("#")
        if len(parts) != 4:
            continue
        try:
            when = dt.datetime.strptime(parts[0], "%Y%m%d%H%M%S.%fZ").replace(tzinfo=dt.UTC)
        except ValueError:
            continue
        sid = parts[2]
        times[sid] = max(times.get(sid, 0.0), when.timestamp())
    return times


def replica_lag(provider: list[str], replica: list[str]) -> float:
    """Seconds the replica's copy is behind the provider's: for each server ID
    the provider knows, its newest change's time minus the replica's newest
    change from that server ID (0 when the replica has it all). A server ID the
    replica has never heard of counts from the Unix epoch: such a replica has
    not replicated at all, and the figure is as large as that is serious."""
    theirs = csn_times(replica)
    lag = 0.0
    for sid, when in csn_times(provider).items():
        lag = max(lag, when - theirs.get(sid, 0.0))
    return lag
