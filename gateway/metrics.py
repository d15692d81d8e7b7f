"""Prometheus metrics (prometheus-client), correct across every worker process.

``mailgate serve`` runs several worker processes; each counts what it serves.
Before the workers start, :func:`enable_multiprocess` points prometheus-client
at a directory of its own (``<data dir>/metrics``, emptied at start): each
process then keeps its counts in memory-mapped files there, and a scrape of
``/metrics`` adds up every process's files (prometheus-client's multiprocess
mode). A process that is not ``serve`` (tests, ``mailgate sync``) counts in
memory. Metrics are made on first use (:func:`get`), after that choice.

Only counters and histograms are kept per process; what describes the
deployment is computed at scrape time instead (:class:`_DeploymentCollector`):
the build, and the age of the last successful sync, read from the sync's run
history in LDAP, so the figure is right whichever host ran the sync.

Names (all prefixed ``mailgate_``):

    http_requests_total{route,method,status}       requests answered
    http_request_duration_seconds{route,method}    latency histogram
    ldap_operations_total{operation}               search, add, modify, delete, bind, ...
    ldap_errors_total{kind}                        unavailable, refused
    ldap_transactions_total{outcome}               committed, refused (then replayed singly)
    ldap_reconnects_total                          new connections after a dead one
    ldap_pool_wait_seconds                         time to get a pooled connection
    auth_failures_total                            wrong or missing tokens
    auth_rate_limited_total                        answers 429
    authz_denied_total                             answers 403 (a token without the rights)
    sync_runs_total{result}                        applied, partial, unchanged, failed, ...
    sync_run_duration_seconds                      histogram of whole runs
    sync_entries_total{change}                     created, updated, deleted, skipped, ...
    build_info{version,python}                     always 1

Computed at scrape time (:class:`Deployment`; gateway/api/metrics.py reads it):

    directory_up                                   1: the directory answered a read
                                                   within 2 s (0: every other figure
                                                   read from LDAP is missing)
    sync_last_success_age_seconds                  scrape time minus the last applied run
    sync_last_result{result}                       1, for the newest run in the history
    sync_last_run_timestamp_seconds                when the newest run started
    sync_consecutive_failures                      newest runs in a row failed or refused
    sync_interval_seconds                          MAILGATE_JSON_INTERVAL (sync set up only)
    tls_certificate_expiry_timestamp_seconds       notAfter of the API's certificate
    replica_up{replica}                            1: the replica answered within 2 s
    replica_lag_seconds{replica}                   its contextCSN behind the provider's

Domain limits (tenancy): limit_refusals_total{limit,source}, and per domain with a
limit domain_usage{domain,resource} and domain_limit{domain,resource}.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .errors import SetupError

ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0)
_SYNC_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600)


def package_version() -> str:
    try:
        return version("mailgate")
    except PackageNotFoundError:   # running from a tree that was never installed
        return "unknown"


def enable_multiprocess(directory: Path) -> None:
    """Count in files under ``directory`` (emptied now), shared by every process.

    Call before any metric is made and before the worker processes start.
    """
    try:
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True, mode=0o700)
    except OSError as exc:
        raise SetupError(f"MAILGATE_DATA_DIR: cannot make {directory} for the workers' "
                         f"metrics: {exc.strerror}") from None
    os.environ[ENV] = str(directory)
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


@dataclass
class Metrics:
    requests: Counter
    latency: Histogram
    ldap_operations: Counter
    ldap_errors: Counter
    ldap_transactions: Counter
    ldap_reconnects: Counter
    ldap_pool_wait: Histogram
    auth_failures: Counter
    auth_rate_limited: Counter
    authz_denied: Counter
    sync_runs: Counter
    sync_duration: Histogram
    sync_entries: Counter
    limit_refusals: Counter
    registry: CollectorRegistry


_made: Metrics | None = None
_making = threading.Lock()


def get() -> Metrics:
    """This process's metrics, made on first use."""
    global _made
    if _made is None:
        with _making:
            if _made is None:
                _made = _make()
    return _made


def _make() -> Metrics:
    registry = CollectorRegistry(auto_describe=True)

    def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
        return Counter(f"mailgate_{name}", doc, labels, registry=registry)

    return Metrics(
        requests=counter("http_requests_total", "HTTP requests answered",
                         ("route", "method", "status")),
        latency=Histogram("mailgate_http_request_duration_seconds",
                          "Time to answer an HTTP request", ("route", "method"),
                          buckets=_LATENCY_BUCKETS, registry=registry),
        ldap_operations=counter("ldap_operations_total", "LDAP operations sent",
                                ("operation",)),
        ldap_errors=counter("ldap_errors_total", "LDAP operations that failed", ("kind",)),
        ldap_transactions=counter("ldap_transactions_total",
                                  "LDAP transactions of bulk writes, by outcome", ("outcome",)),
        ldap_reconnects=counter("ldap_reconnects_total",
                                "Connections replaced after the directory dropped them"),
        ldap_pool_wait=Histogram("mailgate_ldap_pool_wait_seconds",
                                 "Time to get a connection from the pool",
                                 buckets=(0.0001, 0.001, 0.01, 0.1, 1.0, 5.0),
                                 registry=registry),
        auth_failures=counter("auth_failures_total", "Requests with a missing or wrong token"),
        auth_rate_limited=counter("auth_rate_limited_total",
                                  "Requests refused (429) after too many failures"),
        authz_denied=counter("authz_denied_total",
                             "Requests refused (403): the token has no rights there"),
        sync_runs=counter("sync_runs_total", "JSON sync runs by result", ("result",)),
        sync_duration=Histogram("mailgate_sync_run_duration_seconds",
                                "Duration of JSON sync runs", buckets=_SYNC_BUCKETS,
                                registry=registry),
        sync_entries=counter("sync_entries_total", "Entries changed or skipped by the sync",
                             ("change",)),
        limit_refusals=counter("limit_refusals_total",
                               "Creates and quota changes refused by a domain's limit",
                               ("limit", "source")),
        registry=registry,
    )


def record_request(route: str, method: str, status: int, seconds: float | None) -> None:
    """One answered request (the app's hook and the hot reads both count here)."""
    made = get()
    made.requests.labels(route, method, str(status)).inc()
    if seconds is not None:
        made.latency.labels(route, method).observe(seconds)


def record_limit_refusal(limit: str, source: str) -> None:
    """A create or quota change refused by a domain's ``limit`` (api or sync)."""
    get().limit_refusals.labels(limit, source).inc()


def record_sync(result: str, duration: float, counts: dict[str, int]) -> None:
    made = get()
    made.sync_runs.labels(result).inc()
    if result not in ("busy", "skipped"):
        made.sync_duration.observe(duration)
    for change in ("created", "updated", "replaced", "deleted", "skipped", "taken_over"):
        if counts.get(change):
            made.sync_entries.labels(change).inc(counts[change])


# (domain, resource, used, limit) for each limit a domain has: resource is
# accounts, aliases or quota (bytes allocated against max_quota).
DomainUsage = tuple[str, str, int, int]


@dataclass(frozen=True)
class Replica:
    """A replica as one scrape found it: ``lag`` None when it did not answer."""

    url: str
    lag: float | None


@dataclass(frozen=True)
class Deployment:
    """What one scrape read of the deployment (None or empty: not known)."""

    directory_up: bool = True
    last_success: float | None = None
    last_result: str | None = None
    last_run: float | None = None
    consecutive_failures: int | None = None
    sync_interval: float | None = None
    certificate_expiry: float | None = None
    replicas: tuple[Replica, ...] = ()
    domains: tuple[DomainUsage, ...] | None = None   # None: not read (LDAP down)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"mailgate_{name}", doc, value=value)


class _DeploymentCollector(Collector):
    """What is true of the deployment, computed at scrape time."""

    def __init__(self, deployment: Callable[[], Deployment]) -> None:
        self.deployment = deployment

    def collect(self) -> Iterator[Any]:
        build = GaugeMetricFamily("mailgate_build_info", "The gateway's version",
                                  labels=["version", "python"])
        build.add_metric([package_version(), platform.python_version()], 1.0)
        yield build
        now = self.deployment()
        yield _gauge("directory_up", "1 if the directory answered a read within 2 s",
                     float(now.directory_up))
        if now.last_success is not None:
            yield _gauge("sync_last_success_age_seconds",
                         "Seconds since the last JSON sync run that applied or found nothing "
                         "to do", max(0.0, time.time() - now.last_success))
        if now.last_result is not None:
            result = GaugeMetricFamily("mailgate_sync_last_result",
                                       "1 for the result of the newest sync run",
                                       labels=["result"])
            result.add_metric([now.last_result], 1.0)
            yield result
        if now.last_run is not None:
            yield _gauge("sync_last_run_timestamp_seconds",
                         "When the newest sync run started (Unix time)", now.last_run)
        if now.consecutive_failures is not None:
            yield _gauge("sync_consecutive_failures",
                         "The newest sync runs in a row that failed or were refused",
                         float(now.consecutive_failures))
        if now.sync_interval is not None:
            yield _gauge("sync_interval_seconds", "Seconds between scheduled sync runs",
                         now.sync_interval)
        if now.certificate_expiry is not None:
            yield _gauge("tls_certificate_expiry_timestamp_seconds",
                         "When the API's TLS certificate expires (Unix time)",
                         now.certificate_expiry)
        if now.replicas:
            up = GaugeMetricFamily("mailgate_replica_up",
                                   "1 if the replica answered within 2 s", labels=["replica"])
            lag = GaugeMetricFamily("mailgate_replica_lag_seconds",
                                    "How far the replica's contextCSN is behind the provider's",
                                    labels=["replica"])
            for replica in now.replicas:
                up.add_metric([replica.url], float(replica.lag is not None))
                if replica.lag is not None:
                    lag.add_metric([replica.url], replica.lag)
            yield up
            yield lag
        if now.domains is not None:
            usage = GaugeMetricFamily(
                "mailgate_domain_usage", "What a domain with a limit holds, per resource "
                "(accounts, aliases; quota: bytes allocated)", labels=["domain", "resource"])
            limit = GaugeMetricFamily(
                "mailgate_domain_limit", "A domain's limit per resource (only limits that "
                "are set)", labels=["domain", "resource"])
            for domain, resource, used, most in now.domains:
                usage.add_metric([domain, resource], float(used))
                limit.add_metric([domain, resource], float(most))
            yield usage
            yield limit


def exposition(deployment: Callable[[], Deployment]) -> bytes:
    """The text a scrape gets: every process's counts and the deployment's figures."""
    if ENV in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = get().registry
    scrape = CollectorRegistry()
    scrape.register(_Merged(registry))
    scrape.register(_DeploymentCollector(deployment))
    return bytes(generate_latest(scrape))


class _Merged(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Any]:
        yield from self.registry.collect()


def parse_time(text: str) -> float | None:
    """An ISO 8601 time as the sync's history writes it, as a Unix time."""
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
