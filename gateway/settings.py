"""Typed settings read once from ``MAILGATE_*`` environment variables.

Every secret may instead come from a file named by the same variable with
``_FILE`` appended (Docker/Kubernetes secrets). Anything missing or malformed
stops the start with :class:`ConfigError`, which names the variable.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ldap.dn import is_dn

from .proxies import Network, parse_networks

PREFIX = "MAILGATE_"
# granian (gateway.server) parses HTTP and TLS in Rust threads; the Python work is
# CPU-bound under each process's GIL, so one process per core and one more to
# cover the LDAP waits, with a few threads each: 3 x 4 on 2 cores served B5
# best of the shapes tried (docs/servers.md).
DEFAULT_WORKERS = (os.cpu_count() or 1) + 1
DEFAULT_THREADS = 4
JSON_TOTAL_FACTOR = 10
SECRETS = ("LDAP_PASSWORD", "ADMIN_TOKEN", "JSON_AUTH_HEADER", "DOVECOT_API_KEY")


class ConfigError(Exception):
    """Invalid configuration; the message starts with the variable's name."""

    def __init__(self, variable: str, why: str) -> None:
        super().__init__(f"{PREFIX}{variable}: {why}")
        self.variable = PREFIX + variable


@dataclass(frozen=True)
class Settings:
    # LDAP. ldap_url None means: embedded slapd managed under data_dir. Several
    # space-separated URLs: providers replicating each other; the pool uses one
    # at a time and fails over (gateway/directory/pool.py, docs/scaling.md).
    ldap_url: str | None = None
    ldap_base_dn: str = "dc=mail,dc=internal"
    ldap_bind_dn: str | None = None
    ldap_password: str | None = field(default=None, repr=False)
    ldap_ca_file: Path | None = None
    ldap_starttls: bool = False
    ldap_pool_size: int = 8
    ldap_timeout: float = 5.0
    # Read-only consumers whose replication lag /metrics reports (contextCSN).
    ldap_replica_urls: tuple[str, ...] = ()
    # Writes per LDAP transaction in bulk writes (gateway/directory/txn.py); 0: none.
    # Off by default: slapd 2.5.13 segfaults under them (docs/benchmarks.md).
    ldap_transaction_size: int = 0
    embedded_ldap_url: str = "ldap://127.0.0.1:3389"
    data_dir: Path = Path("var")
    # HTTPS API.
    listen: str = "127.0.0.1:8443"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    admin_token: str | None = field(default=None, repr=False)
    # Base of the absolute links in list pages (next/previous), e.g.
    # https://mail-api.example.com or https://proxy.example/gateway. Unset:
    # the links are absolute paths (/mail/account/?page=2), never built
    # from the client's Host header.
    public_url: str | None = None
    workers: int = DEFAULT_WORKERS
    threads: int = DEFAULT_THREADS
    auth_fail_limit: int = 10
    auth_fail_window: int = 60
    # Failures are counted per network of these lengths (gateway/limiter.py).
    auth_fail_prefix_v4: int = 32
    auth_fail_prefix_v6: int = 64
    # Failed authentications written to the directory one by one, per
    # interval and deployment; beyond, one aggregate event (gateway/audit.py).
    auth_fail_budget: int = 20
    audit_interval: int = 60
    # Host names (and host:port) whose Host header may build list links.
    allowed_hosts: tuple[str, ...] = ()
    # Days of audit trail kept in the directory (gateway/audit.py).
    audit_retention_days: int = 90
    # Reverse proxies whose X-Forwarded-For/-Proto are believed (gateway/proxies.py).
    trusted_proxies: tuple[Network, ...] = ()
    # Password policy: SHA512-crypt rounds for passwords set through the API.
    password_rounds: int = 100_000
    # Basic JSON sync.
    json_urls: tuple[str, ...] = ()
    json_interval: int = 300
    json_ca_file: Path | None = None
    json_auth_header: str | None = field(default=None, repr=False)
    json_timeout: float = 30.0
    # The whole fetch of one document (headers and body, every redirect) must
    # end within this; None: 10 x json_timeout (300 s by default).
    json_total_timeout: float | None = None
    json_max_bytes: int = 256 * 1024 * 1024
    json_max_redirects: int = 3
    sync_max_delete_fraction: float = 0.25
    # Dovecot's doveadm HTTP API (gateway/dovecot.py): mailbox usage. None: not
    # configured (the usage routes answer 503).
    dovecot_url: str | None = None
    dovecot_api_key: str | None = field(default=None, repr=False)
    dovecot_timeout: float = 5.0
    log_level: str = "INFO"
    # text (one line, ISO 8601 UTC time) or json (one object a line): gateway/logs.py.
    log_format: str = "text"

    @property
    def json_fetch_limit(self) -> float:
        """Seconds one document's fetch may take in all."""
        if self.json_total_timeout is not None:
            return self.json_total_timeout
        return JSON_TOTAL_FACTOR * self.json_timeout

    @property
    def embedded(self) -> bool:
        return self.ldap_url is None

    @property
    def ldap_urls(self) -> tuple[str, ...]:
        """The LDAP URLs in the order given (empty in embedded mode)."""
        return tuple((self.ldap_url or "").split())

    def pinned(self) -> Settings:
        """These settings with only the first LDAP URL: what must not fail over
        (the sync's lock: two providers cannot agree on an entry at the same instant)."""
        urls = self.ldap_urls
        return self if len(urls) <= 1 else self.replace(ldap_url=urls[0])

    @property
    def gateway_dn(self) -> str:
        return self.ldap_bind_dn or f"cn=gateway,ou=services,{self.ldap_base_dn}"

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every ``MAILGATE_*`` variable; raise ConfigError."""
        env = _Env(os.environ if environ is None else environ)
        ldap_url = env.get_str("LDAP_URL")
        if ldap_url is not None:
            ldap_url = " ".join(ldap_url.split())
            for url in ldap_url.split():
                _check_ldap_url("LDAP_URL", url)
            if len(set(ldap_url.lower().split())) != len(ldap_url.split()):
                raise ConfigError("LDAP_URL", "a URL is listed twice")
        base_dn = env.get_str("LDAP_BASE_DN") or cls.ldap_base_dn
        _check_dn("LDAP_BASE_DN", base_dn)
        bind_dn = env.get_str("LDAP_BIND_DN")
        if bind_dn is not None:
            _check_dn("LDAP_BIND_DN", bind_dn)
        password = env.get_secret("LDAP_PASSWORD")
        if ldap_url is not None and password is None:
            raise ConfigError("LDAP_PASSWORD", "required when MAILGATE_LDAP_URL is set")
        replica_urls = tuple((env.get_str("LDAP_REPLICA_URLS") or "").split())
        for url in replica_urls:
            _check_ldap_url("LDAP_REPLICA_URLS", url)
        if len({u.lower() for u in replica_urls}) != len(replica_urls):
            raise ConfigError("LDAP_REPLICA_URLS", "a URL is listed twice")
        embedded_url = env.get_str("EMBEDDED_LDAP_URL") or cls.embedded_ldap_url
        _check_ldap_url("EMBEDDED_LDAP_URL", embedded_url)
        if ldap_url is None and not base_dn.lower().startswith("dc="):
            raise ConfigError("LDAP_BASE_DN", "the embedded directory needs a base DN starting dc=")
        listen = env.get_str("LISTEN") or cls.listen
        _check_listen("LISTEN", listen)
        cert = env.get_path("TLS_CERT", must_exist=True)
        key = env.get_path("TLS_KEY", must_exist=True)
        if (cert is None) != (key is None):
            raise ConfigError("TLS_KEY" if key is None else "TLS_CERT",
                              "MAILGATE_TLS_CERT and MAILGATE_TLS_KEY go together")
        public_url = env.get_str("PUBLIC_URL")
        if public_url is not None:
            public_url = _check_public_url("PUBLIC_URL", public_url)
        allowed_hosts = _check_hosts("ALLOWED_HOSTS", env.get_str("ALLOWED_HOSTS") or "")
        admin_token = env.get_secret("ADMIN_TOKEN")
        if admin_token is not None and len(admin_token) < 24:
            raise ConfigError("ADMIN_TOKEN", "must be at least 24 characters")
        if ldap_url is not None and admin_token is None:
            raise ConfigError("ADMIN_TOKEN", "required when MAILGATE_LDAP_URL is set")
        urls = tuple((env.get_str("JSON_URLS") or "").split())
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme != "https" or not parts.hostname:
                raise ConfigError("JSON_URLS", "every URL must be https://host/...")
        header = env.get_secret("JSON_AUTH_HEADER")
        if header is not None and (":" not in header or "\n" in header or "\r" in header):
            raise ConfigError("JSON_AUTH_HEADER", "must be one header line 'Name: value'")
        json_timeout = env.get_float("JSON_TIMEOUT", cls.json_timeout, 0.1, 3600)
        json_total: float | None = None
        if env.get_str("JSON_TOTAL_TIMEOUT") is not None:
            json_total = env.get_float("JSON_TOTAL_TIMEOUT", 0.0, 1.0, 86_400)
            if json_total < json_timeout:
                raise ConfigError("JSON_TOTAL_TIMEOUT", f"must be at least MAILGATE_JSON_TIMEOUT "
                                                        f"({json_timeout:g} s)")
        dovecot_url = env.get_str("DOVECOT_URL")
        if dovecot_url is not None:
            dovecot_url = _check_dovecot_url("DOVECOT_URL", dovecot_url)
        dovecot_key = env.get_secret("DOVECOT_API_KEY")
        if dovecot_url is not None and dovecot_key is None:
            raise ConfigError("DOVECOT_API_KEY", "required when MAILGATE_DOVECOT_URL is set")
        log_format = (env.get_str("LOG_FORMAT") or cls.log_format).lower()
        if log_format not in ("text", "json"):
            raise ConfigError("LOG_FORMAT", f"expected text or json, got {log_format!r}")
        log_level = (env.get_str("LOG_LEVEL") or cls.log_level).upper()
        if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError("LOG_LEVEL", "one of DEBUG, INFO, WARNING, ERROR")
        return cls(
            ldap_url=ldap_url,
            ldap_base_dn=base_dn,
            ldap_bind_dn=bind_dn,
            ldap_password=password,
            ldap_ca_file=env.get_path("LDAP_CA_FILE", must_exist=True),
            ldap_starttls=env.get_bool("LDAP_STARTTLS", False),
            ldap_pool_size=env.get_int("LDAP_POOL_SIZE", cls.ldap_pool_size, 1, 256),
            ldap_timeout=env.get_float("LDAP_TIMEOUT", cls.ldap_timeout, 0.1, 300),
            ldap_replica_urls=replica_urls,
            ldap_transaction_size=env.get_int("LDAP_TRANSACTION_SIZE",
                                              cls.ldap_transaction_size, 0, 10000),
            embedded_ldap_url=embedded_url,
            data_dir=env.get_path("DATA_DIR") or cls.data_dir,
            listen=listen,
            tls_cert=cert,
            tls_key=key,
            admin_token=admin_token,
            public_url=public_url,
            workers=env.get_int("WORKERS", cls.workers, 1, 64),
            threads=env.get_int("THREADS", cls.threads, 1, 64),
            auth_fail_limit=env.get_int("AUTH_FAIL_LIMIT", cls.auth_fail_limit, 1, 100_000),
            auth_fail_window=env.get_int("AUTH_FAIL_WINDOW", cls.auth_fail_window, 1, 86_400),
            auth_fail_prefix_v4=env.get_int("AUTH_FAIL_PREFIX_V4", cls.auth_fail_prefix_v4, 8, 32),
            auth_fail_prefix_v6=env.get_int("AUTH_FAIL_PREFIX_V6", cls.auth_fail_prefix_v6,
                                            16, 128),
            auth_fail_budget=env.get_int("AUTH_FAIL_BUDGET", cls.auth_fail_budget, 0, 10_000),
            audit_interval=env.get_int("AUDIT_INTERVAL", cls.audit_interval, 1, 3600),
            allowed_hosts=allowed_hosts,
            trusted_proxies=env.get_networks("TRUSTED_PROXIES"),
            audit_retention_days=env.get_int("AUDIT_RETENTION_DAYS", cls.audit_retention_days,
                                             1, 36_500),
            password_rounds=env.get_int("PASSWORD_ROUNDS", cls.password_rounds, 1000, 999_999_999),
            json_urls=urls,
            json_interval=env.get_int("JSON_INTERVAL", cls.json_interval, 10, 86_400 * 7),
            json_ca_file=env.get_path("JSON_CA_FILE", must_exist=True),
            json_auth_header=header,
            json_timeout=json_timeout,
            json_total_timeout=json_total,
            json_max_bytes=env.get_int("JSON_MAX_BYTES", cls.json_max_bytes, 1024, 1 << 40),
            json_max_redirects=env.get_int("JSON_MAX_REDIRECTS", cls.json_max_redirects, 0, 20),
            sync_max_delete_fraction=env.get_float(
                "SYNC_MAX_DELETE_FRACTION", cls.sync_max_delete_fraction, 0.0, 1.0),
            dovecot_url=dovecot_url,
            dovecot_api_key=dovecot_key,
            dovecot_timeout=env.get_float("DOVECOT_TIMEOUT", cls.dovecot_timeout, 0.1, 300),
            log_level=log_level,
            log_format=log_format,
        )


class _Env:
    """Typed access to MAILGATE_* variables; every failure names the variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def get_str(self, name: str) -> str | None:
        value = self.environ.get(PREFIX + name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def get_secret(self, name: str) -> str | None:
        direct, path = self.get_str(name), self.get_str(name + "_FILE")
        if direct is not None and path is not None:
            raise ConfigError(name, f"set either MAILGATE_{name} or MAILGATE_{name}_FILE")
        if path is None:
            return direct
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(name + "_FILE", f"cannot read {path}: {exc.__class__.__name__}") \
                from None
        if not value:
            raise ConfigError(name + "_FILE", f"{path} is empty")
        return value

    def get_int(self, name: str, default: int, low: int, high: int) -> int:
        raw = self.get_str(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(name, f"not a whole number: {raw!r}") from None
        if not low <= value <= high:
            raise ConfigError(name, f"must be between {low} and {high}")
        return value

    def get_float(self, name: str, default: float, low: float, high: float) -> float:
        raw = self.get_str(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(name, f"not a number: {raw!r}") from None
        if not low <= value <= high:
            raise ConfigError(name, f"must be between {low} and {high}")
        return value

    def get_networks(self, name: str) -> tuple[Network, ...]:
        value = self.get_str(name)
        if value is None:
            return ()
        try:
            return parse_networks(value)
        except ValueError as exc:
            raise ConfigError(name, str(exc)) from None

    def get_bool(self, name: str, default: bool) -> bool:
        raw = self.get_str(name)
        if raw is None:
            return default
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(name, f"not a boolean: {raw!r}")

    def get_path(self, name: str, must_exist: bool = False) -> Path | None:
        raw = self.get_str(name)
        if raw is None:
            return None
        path = Path(raw)
        if must_exist and not path.is_file():
            raise ConfigError(name, f"no such file: {raw}")
        return path


def _check_ldap_url(name: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("ldap", "ldaps", "ldapi") or (parts.scheme != "ldapi"
                                                          and not parts.hostname):
        raise ConfigError(name, f"not an ldap://, ldaps:// or ldapi:// URL: {url!r}")
    try:
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError:
        raise ConfigError(name, f"bad port in {url!r}") from None


def _check_dn(name: str, dn: str) -> None:
    if not dn or not is_dn(dn):
        raise ConfigError(name, f"not a valid DN: {dn!r}")


def _check_listen(name: str, listen: str) -> None:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(name, f"expected host:port, got {listen!r}")


def _check_dovecot_url(name: str, url: str) -> str:
    """``http(s)://host:port[/path]`` of the doveadm HTTP API, no trailing slash."""
    return _check_http_url(name, url, "http://host:port[/path]")


def _check_public_url(name: str, url: str) -> str:
    """``https://host[:port][/path]`` without query, fragment or user info; no
    trailing slash."""
    return _check_http_url(name, url, "https://host[:port][/path]")


def _check_http_url(name: str, url: str, shape: str) -> str:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError:
        raise ConfigError(name, f"not a valid URL: {url!r}") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(name, f"expected {shape}, got {url!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(name, "must not carry a query, a fragment or credentials")
    if any(c.isspace() for c in url):
        raise ConfigError(name, "must not contain white space")
    return url.rstrip("/")


def _check_hosts(name: str, text: str) -> tuple[str, ...]:
    """Host names or ``host:port`` items, separated by commas or spaces, in lower case."""
    hosts = []
    for item in text.replace(",", " ").split():
        host = item.lower()
        try:
            parts = urlsplit(f"//{host}")
            parts.port  # noqa: B018  (raises ValueError on a bad port)
        except ValueError:
            raise ConfigError(name, f"not a host or host:port: {item!r}") from None
        if not parts.hostname or parts.netloc != host or "@" in host:
            raise ConfigError(name, f"not a host or host:port: {item!r}")
        hosts.append(host)
    return tuple(hosts)


@dataclass(frozen=True)
class Help:
    """The documentation of one setting (docs/configuration.md is generated from these).

    ``default``: how to show the default when the field's value alone would
    mislead (computed or unset defaults); ``low``/``high``: the range
    ``from_env`` enforces (tests/test_configuration_doc.py checks both ends);
    ``values``: the only accepted values.
    """

    section: str
    text: str
    default: str | None = None
    low: float | None = None
    high: float | None = None
    values: tuple[str, ...] = ()


# One entry per Settings field, by field name; the variable is MAILGATE_<NAME>.
HELP: dict[str, Help] = {
    "ldap_url": Help(
        "LDAP directory",
        "`ldap://`, `ldaps://` or `ldapi://` URL of the directory; several, separated by "
        "spaces, for providers replicating each other (the gateway uses one at a time and "
        "fails over, see [scaling.md](scaling.md)). Unset: `mailgate serve` runs an embedded "
        "slapd under `MAILGATE_DATA_DIR`.",
        default="unset: embedded slapd"),
    "ldap_base_dn": Help(
        "LDAP directory", "Base DN of the directory (embedded: must start with `dc=`)."),
    "ldap_bind_dn": Help(
        "LDAP directory", "The gateway's identity in the directory.",
        default="`cn=gateway,ou=services,<base DN>`"),
    "ldap_password": Help(
        "LDAP directory",
        "Password of the bind DN. Required with `MAILGATE_LDAP_URL`; embedded: generated "
        "into the data directory.", default="unset"),
    "ldap_ca_file": Help(
        "LDAP directory", "CA file to verify `ldaps://` or StartTLS with (must exist).",
        default="system CAs"),
    "ldap_starttls": Help(
        "LDAP directory", "Use StartTLS on an `ldap://` URL.",
        values=("true", "false", "1", "0", "yes", "no", "on", "off")),
    "ldap_pool_size": Help(
        "LDAP directory", "LDAP connections per gateway process.", low=1, high=256),
    "ldap_timeout": Help(
        "LDAP directory", "Seconds for connecting to and each operation on the directory.",
        low=0.1, high=300),
    "ldap_replica_urls": Help(
        "LDAP directory",
        "Space-separated URLs of read-only consumers (replicas) of the directory. At each "
        "scrape `/metrics` binds to each as the gateway and compares its `contextCSN` with "
        "the provider's: `mailgate_replica_lag_seconds` and `mailgate_replica_up` "
        "(see [troubleshooting.md](troubleshooting.md)).", default="none"),
    "ldap_transaction_size": Help(
        "LDAP directory",
        "Writes per LDAP transaction (RFC 5805) in bulk writes (the JSON sync, cascade "
        "deletes): one disk commit per batch instead of one per entry. Used only where the "
        "directory advertises transactions; a batch the directory refuses is replayed "
        "write by write. `0` (or `1`): pipelined single operations only. Off by default: "
        "slapd 2.5.13 (Debian bookworm) crashed under transactions in the stress test "
        "([benchmarks.md](benchmarks.md)); try `100` on a directory proven stable with "
        "`bench/txn_stress.py`.", low=0, high=10000),
    "embedded_ldap_url": Help(
        "Embedded directory",
        "Where the embedded slapd listens (so LDAP tools and mail servers can use it)."),
    "data_dir": Help(
        "Embedded directory",
        "The embedded slapd's database, generated secrets and the self-signed TLS pair."),
    "listen": Help("HTTPS API", "`host:port` the HTTPS API listens on."),
    "tls_cert": Help(
        "HTTPS API", "Certificate (chain) file of the API; goes with `MAILGATE_TLS_KEY`.",
        default="unset: a self-signed pair in the data directory"),
    "tls_key": Help(
        "HTTPS API", "Private key file of the API; goes with `MAILGATE_TLS_CERT`.",
        default="unset: a self-signed pair in the data directory"),
    "admin_token": Help(
        "HTTPS API",
        "The admin token (may do everything), at least 24 characters. Required with "
        "`MAILGATE_LDAP_URL`; embedded: generated into `<data dir>/admin-token`.",
        default="unset"),
    "public_url": Help(
        "HTTPS API",
        "`https://host[:port][/path]` the clients reach the API at (behind a proxy): the base "
        "of the `next`/`previous` links of list pages. Unset: those links are absolute paths, "
        "never built from the client's `Host` header.", default="unset"),
    "audit_retention_days": Help(
        "HTTPS API", "Days the audit trail is kept in the directory.", low=1, high=36_500),
    "workers": Help(
        "HTTPS API", "Worker processes (granian).", default="CPU cores + 1", low=1, high=64),
    "threads": Help(
        "HTTPS API",
        "Python threads per worker process; HTTP, TLS and idle or slow connections are "
        "handled outside them.", low=1, high=64),
    "auth_fail_limit": Help(
        "HTTPS API",
        "Failed authentications per client address and window before it gets 429.",
        low=1, high=100_000),
    "auth_fail_window": Help(
        "HTTPS API", "The window of `MAILGATE_AUTH_FAIL_LIMIT`, in seconds.",
        low=1, high=86_400),
    "auth_fail_prefix_v4": Help(
        "HTTPS API",
        "Prefix length IPv4 clients are counted by for `MAILGATE_AUTH_FAIL_LIMIT` (after "
        "`MAILGATE_TRUSTED_PROXIES` found the client): 32 is one address, as an IPv4 "
        "address is usually one customer or one NAT.", low=8, high=32),
    "auth_fail_prefix_v6": Help(
        "HTTPS API",
        "Prefix length IPv6 clients are counted by: 64, the network one customer's LAN "
        "always gets, whose 2^64 addresses are all that customer's to use.", low=16, high=128),
    "auth_fail_budget": Help(
        "HTTPS API",
        "Failed authentications the whole deployment writes to the directory one by one "
        "(an audit entry and a failure count each) per `MAILGATE_AUDIT_INTERVAL`; beyond, "
        "they are counted in memory and each gateway process writes one aggregate event per "
        "interval ([reliability.md](reliability.md)).", low=0, high=10_000),
    "audit_interval": Help(
        "HTTPS API",
        "Seconds of the failure budget's interval, and of the aggregate audit events "
        "(failures beyond the budget, 403 answers per token).", low=1, high=3600),
    "allowed_hosts": Help(
        "HTTPS API",
        "Host names (or `host:port`, comma or space separated) the gateway answers to "
        "besides its `MAILGATE_LISTEN` address, as Django's `ALLOWED_HOSTS`: list links are "
        "built from such a `Host` when `MAILGATE_PUBLIC_URL` is unset, and any other `Host` "
        "gets 400.", default="none"),
    "trusted_proxies": Help(
        "HTTPS API",
        "Addresses or networks (comma or space separated) of reverse proxies whose "
        "`X-Forwarded-For` and `X-Forwarded-Proto` are believed.", default="none"),
    "password_rounds": Help(
        "HTTPS API", "SHA512-crypt rounds of passwords set through the API.",
        low=1000, high=999_999_999),
    "json_urls": Help(
        "Basic JSON sync",
        "Whitespace-separated `https://` URLs of Basic JSON documents to sync.",
        default="unset: no sync"),
    "json_interval": Help(
        "Basic JSON sync", "Seconds between syncs.", low=10, high=86_400 * 7),
    "json_ca_file": Help(
        "Basic JSON sync", "CA file to verify the sources with (must exist).",
        default="system CAs"),
    "json_auth_header": Help(
        "Basic JSON sync",
        "One header line sent to the sources (only to the configured origin), e.g. "
        "`Authorization: Bearer ...`.", default="unset"),
    "json_timeout": Help(
        "Basic JSON sync",
        "Seconds to connect to a source and between bytes of its answer.",
        low=0.1, high=3600),
    "json_total_timeout": Help(
        "Basic JSON sync",
        "Seconds the whole fetch of one document (every redirect, headers and body) may "
        "take; at least `MAILGATE_JSON_TIMEOUT`.",
        default=f"{JSON_TOTAL_FACTOR} * `MAILGATE_JSON_TIMEOUT` (300 s)",
        low=1, high=86_400),
    "json_max_bytes": Help(
        "Basic JSON sync", "Largest document accepted, in bytes (after decompression).",
        default="`268435456` (256 MiB)", low=1024, high=1 << 40),
    "json_max_redirects": Help(
        "Basic JSON sync", "Redirects followed per source (https only).", low=0, high=20),
    "sync_max_delete_fraction": Help(
        "Basic JSON sync",
        "A sync that would delete more than this share of the sync-managed entries is "
        "refused unless forced.", low=0.0, high=1.0),
    "dovecot_url": Help(
        "Dovecot",
        "`http://host:port` of Dovecot's doveadm HTTP API (`render-config dovecot "
        "--doveadm-api-key-file`), where the usage routes read mailbox usage; the path "
        "`/doveadm/v1` is used when the URL has none. Keep it on loopback or a private "
        "network. Unset: the usage routes answer 503.", default="unset: not configured"),
    "dovecot_api_key": Help(
        "Dovecot",
        "The doveadm API key (Dovecot's `doveadm_api_key`, sent base64-encoded). Required "
        "with `MAILGATE_DOVECOT_URL`.", default="unset"),
    "dovecot_timeout": Help(
        "Dovecot", "Seconds for connecting to and each answer of the doveadm API.",
        low=0.1, high=300),
    "log_level": Help(
        "Logging", "Log level (case-insensitive).",
        values=("DEBUG", "INFO", "WARNING", "ERROR")),
    "log_format": Help(
        "Logging", "`text`: one line, ISO 8601 UTC time; `json`: one object a line.",
        values=("text", "json")),
}
