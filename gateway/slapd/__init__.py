"""A managed local slapd: embedded mode, tests and benchmarks share it.

It is built from the project's ``ldif/`` files (read from the package through
:mod:`gateway.resources`), the same ones a production directory loads:
``config.ldif`` and ``base.ldif`` are templates filled here,
``schema/mailgate.ldif`` is loaded as it is. Service passwords are generated
once and kept in ``<data_dir>/secrets`` (mode 0600); the directory's data
survives restarts.

The package splits it by concern: this module runs it (make, start, wait
for a real bind, supervise, stop), :mod:`.upgrade` brings a directory made
by an earlier mailgate to the shipped schema, indexes and ACLs on every
start, :mod:`.backup` writes and restores archives, :mod:`.tools` holds what
they share.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from string import Template
from urllib.parse import quote, urlsplit

from ldap.dn import str2dn
from passlib.hash import ldap_sha512_crypt

from .. import resources
from ..errors import SlapdError
from .backup import BackingUp
from .tools import run, tool, write_secret
from .upgrade import Upgrading

SERVICES = ("gateway", "postfix", "dovecot", "milter", "replicator")
_log = logging.getLogger(__name__)


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for tests and benchmarks)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(url: str, timeout: float = 0.5) -> bool:
    """Does something accept TCP connections at the host and port of ``url``?"""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 389),
                                      timeout):
            return True
    except OSError:
        return False


@dataclass
class ManagedSlapd(Upgrading, BackingUp):
    data_dir: Path
    base_dn: str
    url: str = "ldap://127.0.0.1:3389"
    nosync: bool = False
    debug_level: str = "0"
    module_path: Path = Path("/usr/lib/ldap")
    schema_dir: Path = Path("/etc/ldap/schema")

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()
        self.root = self.data_dir / "ldap"
        self.config_dir = self.root / "slapd.d"
        self.db_dir = self.root / "db"
        self.run_dir = self.root / "run"
        self.secrets_dir = self.data_dir / "secrets"
        self.log_path = self.root / "slapd.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._owner = os.getpid()  # forked children (server workers) never stop it

    # Names and secrets ---------------------------------------------------

    def service_dn(self, name: str) -> str:
        return f"cn={name},ou=services,{self.base_dn}"

    @property
    def admin_dn(self) -> str:
        return f"cn=admin,{self.base_dn}"

    def password_file(self, name: str) -> Path:
        return self.secrets_dir / f"ldap-{name}.password"

    def password(self, name: str) -> str:
        return self.password_file(name).read_text(encoding="utf-8").strip()

    @property
    def ldapi_path(self) -> Path:
        return self.run_dir / "ldapi"

    @property
    def ldapi_url(self) -> str:
        return "ldapi://" + quote(str(self.ldapi_path), safe="")

    # Lifecycle -----------------------------------------------------------

    @property
    def initialised(self) -> bool:
        return (self.config_dir / "cn=config.ldif").is_file()

    def ensure_initialised(self) -> bool:
        """Create config and base DIT if they do not exist yet; True if created."""
        if self.initialised:
            return False
        self.secrets_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.secrets_dir, 0o700)
        self._ensure_secrets()
        for d in (self.config_dir, self.db_dir, self.run_dir):
            if d.exists():
                shutil.rmtree(d)  # a half-made directory from an interrupted start
            d.mkdir(parents=True)
        os.chmod(self.root, 0o700)
        rendered = self.root / "rendered"
        (rendered / "schema").mkdir(parents=True, exist_ok=True)
        # config.ldif includes the schema by path: a file of our own, not one
        # inside the installed package.
        (rendered / "schema" / "mailgate.ldif").write_text(
            resources.ldif("schema/mailgate.ldif"), encoding="utf-8")
        values = self._template_values(ldif_dir=rendered)
        config = rendered / "config.ldif"
        base = rendered / "base.ldif"
        config.write_text(self.render("config.ldif", values), encoding="utf-8")
        base.write_text(self.render("base.ldif", values), encoding="utf-8")
        slapadd = tool("slapadd")
        run([slapadd, "-n0", "-F", str(self.config_dir), "-l", str(config)])
        for number, change in enumerate(self.config_changes(values)):
            path = rendered / f"config-change-{number}.ldif"
            path.write_text(change, encoding="utf-8")
            run([tool("slapmodify"), "-n0", "-F", str(self.config_dir), "-l", str(path)])
        if self.loads_base:
            run([slapadd, "-n1", "-q", "-F", str(self.config_dir), "-l", str(base)])
        os.chmod(rendered, 0o700)
        return True

    def _ensure_secrets(self) -> None:
        """A password for every service identity that has none yet (a directory
        made before the identity existed gets one at its upgrade)."""
        self.secrets_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.secrets_dir, 0o700)
        for name in ("admin", *SERVICES):
            path = self.password_file(name)
            if not path.exists():
                write_secret(path, secrets.token_urlsafe(24))

    # Hooks for replication (gateway/replication.py) ------------------------

    #: Load base.ldif at creation (a consumer gets its content from its provider).
    loads_base = True
    #: The identity whose bind proves the server ready ("admin": the rootdn,
    #: which binds before a consumer has any entry).
    ready_as = "gateway"

    def config_changes(self, values: dict[str, str]) -> list[str]:
        """LDIF changes applied to cn=config after config.ldif (slapmodify)."""
        return []

    @staticmethod
    def render(name: str, values: dict[str, str]) -> str:
        return Template(resources.ldif(name)).substitute(values)

    def _template_values(self, ldif_dir: Path) -> dict[str, str]:
        first_rdn = str2dn(self.base_dn)[0][0]
        values = {
            "base_dn": self.base_dn,
            "base_dc": first_rdn[1],
            "db_dir": str(self.db_dir),
            "run_dir": str(self.run_dir),
            "module_path": str(self.module_path),
            "schema_dir": str(self.schema_dir),
            "ldif_dir": str(ldif_dir),
            "db_nosync": "TRUE" if self.nosync else "FALSE",
            "log_level": "none",
            "admin_password_hash": _crypt(self.password("admin")),
        }
        for name in SERVICES:
            values[f"{name}_dn"] = self.service_dn(name)
            values[f"{name}_password_hash"] = _crypt(self.password(name))
        return values

    def start(self, timeout: float = 20.0) -> None:
        """Start slapd in the foreground as our child and wait until it answers.

        A directory made by an earlier mailgate is upgraded first (:meth:`upgrade`).
        """
        if self._proc is not None and self._proc.poll() is None:
            return
        upgraded = False
        if not self.ensure_initialised():
            self._refuse_if_running()
            self._ensure_secrets()
            upgraded = self.upgrade()
        self._refuse_if_running()
        urls = f"{self.url} {self.ldapi_url}"
        self._owner = os.getpid()
        log = open(self.log_path, "ab")  # noqa: SIM115 (handed to the child)
        try:
            self._proc = subprocess.Popen(
                [tool("slapd"), "-F", str(self.config_dir), "-h", urls, "-d", self.debug_level],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise SlapdError(f"slapd exited with {self._proc.returncode}:\n{self.log_tail()}")
            # A real bind with our own credentials, not just an open port.
            if self._answers() and self.binds(self.ready_as):
                if upgraded and self.loads_base:
                    self.add_missing_entries()
                return
            time.sleep(0.05)
        self.stop()
        raise SlapdError(f"slapd did not answer on {self.url} within {timeout}s:\n"
                         f"{self.log_tail()}")

    def restart(self, timeout: float = 20.0) -> None:
        self.stop()
        self.start(timeout)

    def __enter__(self) -> ManagedSlapd:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def binds(self, service: str = "gateway") -> bool:
        """Does a simple bind as ``service`` with its password succeed at :attr:`url`?"""
        dn = self.admin_dn if service == "admin" else self.service_dn(service)
        try:
            done = subprocess.run(
                [tool("ldapwhoami"), "-x", "-H", self.url, "-o", "nettimeout=2",
                 "-D", dn, "-y", str(self.password_file(service))],
                capture_output=True, timeout=10, check=False)
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0

    def running_pid(self) -> int | None:
        """The pid of a live slapd serving this data dir (from its pid file), or None."""
        with contextlib.suppress(OSError, ValueError):
            pid = int((self.run_dir / "slapd.pid").read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"slapd" in cmdline and str(self.config_dir).encode() in cmdline:
                return pid
        return None

    def owns_listener(self) -> bool:
        """Is what listens at :attr:`url` this data dir's slapd (pid file and a bind)?"""
        return self.running_pid() is not None and self.binds(self.ready_as)

    def supervise(self, stop: threading.Event, check_every: float = 0.5,
                  max_backoff: float = 30.0) -> threading.Thread:
        """Restart this slapd whenever it dies, until ``stop`` is set (a daemon thread).

        Each death is logged once with the end of slapd's log; restarts back
        off from 1 s to ``max_backoff`` while slapd keeps failing to start.
        """
        def loop() -> None:
            backoff = 1.0
            while not stop.wait(check_every):
                proc = self._proc
                if proc is None or proc.poll() is None:
                    continue
                _log.warning("managed slapd (pid %s) exited with %s; restarting it",
                             proc.pid, proc.returncode)
                while not stop.is_set():
                    try:
                        self._proc = None
                        self.start()
                    except SlapdError as exc:
                        _log.error("managed slapd did not start again (next try in %.0f s): "
                                   "%s", backoff, str(exc).splitlines()[0])
                        if stop.wait(backoff):
                            return
                        backoff = min(backoff * 2, max_backoff)
                    else:
                        _log.warning("managed slapd running again (pid %s)", self.pid)
                        backoff = 1.0
                        break

        thread = threading.Thread(target=loop, name="slapd-supervisor", daemon=True)
        thread.start()
        return thread

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the slapd this object started (by its process id), never another."""
        proc, self._proc = self._proc, None
        if proc is None or os.getpid() != self._owner or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _answers(self) -> bool:
        return listening(self.url)

    def _refuse_if_running(self) -> None:
        pid = self.running_pid()
        if pid is not None:
            raise SlapdError(f"a slapd for {self.data_dir} already runs as process {pid}")
        if self._answers():
            raise SlapdError(f"something already listens on {self.url}")

def _die_with_parent() -> None:
    """In the child before exec: the kernel sends SIGTERM when the parent dies.

    So a managed slapd never outlives the process that manages it, even one
    killed with SIGKILL.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


def _crypt(password: str) -> str:
    return str(ldap_sha512_crypt.using(rounds=5000).hash(password))


