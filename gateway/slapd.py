"""A managed local slapd: embedded mode, tests and benchmarks share it.

It is built from the project's ``ldif/`` files (read from the package through
:mod:`gateway.resources`), the same ones a production directory loads:
``config.ldif`` and ``base.ldif`` are templates filled here,
``schema/mailgate.ldif`` is loaded as it is. Service passwords are generated
once and kept in ``<data_dir>/secrets`` (mode 0600); the directory's data
survives restarts.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from string import Template
from urllib.parse import quote, urlsplit

from ldap.dn import str2dn
from passlib.hash import ldap_sha512_crypt

from . import resources
from .errors import SlapdError

SERVICES = ("gateway", "postfix", "dovecot", "milter", "replicator")
_log = logging.getLogger(__name__)


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")
    if not found:
        raise SlapdError(f"{name} not found: install the Debian packages slapd and ldap-utils "
                         "(make run and make test do it)")
    return found


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
class ManagedSlapd:
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
        for name in ("admin", *SERVICES):
            path = self.password_file(name)
            if not path.exists():
                _write_secret(path, secrets.token_urlsafe(24))
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
        slapadd = _tool("slapadd")
        self._run([slapadd, "-n0", "-F", str(self.config_dir), "-l", str(config)])
        for number, change in enumerate(self.config_changes(values)):
            path = rendered / f"config-change-{number}.ldif"
            path.write_text(change, encoding="utf-8")
            self._run([_tool("slapmodify"), "-n0", "-F", str(self.config_dir), "-l", str(path)])
        if self.loads_base:
            self._run([slapadd, "-n1", "-q", "-F", str(self.config_dir), "-l", str(base)])
        os.chmod(rendered, 0o700)
        return True

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
        """Start slapd in the foreground as our child and wait until it answers."""
        self.ensure_initialised()
        if self._proc is not None and self._proc.poll() is None:
            return
        self._refuse_if_running()
        urls = f"{self.url} {self.ldapi_url}"
        self._owner = os.getpid()
        log = open(self.log_path, "ab")  # noqa: SIM115 (handed to the child)
        try:
            self._proc = subprocess.Popen(
                [_tool("slapd"), "-F", str(self.config_dir), "-h", urls, "-d", self.debug_level],
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
                [_tool("ldapwhoami"), "-x", "-H", self.url, "-o", "nettimeout=2",
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

    # Backup and restore ---------------------------------------------------

    def backup(self, archive: Path) -> dict[str, object]:
        """Write the configuration, the data and the service secrets to ``archive``.

        A gzipped tar (mode 0600: it holds password hashes and the service
        passwords) with ``config.ldif`` (``slapcat -n0``), ``data.ldif``
        (``slapcat -n1``, every entry with its operational attributes) and
        ``secrets/``. slapcat reads the mdb database consistently while slapd
        runs, so a backup needs no downtime. Returns the manifest.
        """
        if not self.initialised:
            raise SlapdError(f"no directory in {self.data_dir} to back up")
        slapcat = _tool("slapcat")
        manifest: dict[str, object] = {
            "format": 1, "base_dn": self.base_dn, "root": str(self.root),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        with tempfile.TemporaryDirectory(prefix="mailgate-backup-") as tmp:
            work = Path(tmp)
            for number, name in ((0, "config.ldif"), (1, "data.ldif")):
                self._run([slapcat, "-n", str(number), "-F", str(self.config_dir),
                           "-l", str(work / name)])
            manifest["entries"] = (work / "data.ldif").read_text(
                encoding="utf-8").count("\ndn: ") + 1
            (work / "manifest.json").write_text(json.dumps(manifest, indent=2),
                                                encoding="utf-8")
            fd = os.open(archive, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
                tar.add(work / "manifest.json", "manifest.json")
                tar.add(work / "config.ldif", "config.ldif")
                tar.add(work / "data.ldif", "data.ldif")
                tar.add(self.secrets_dir, "secrets")
        return manifest

    def restore(self, archive: Path) -> dict[str, object]:
        """Replace this data dir's directory with the one in ``archive`` (slapd stopped).

        The current directory, if any, is kept beside as ``ldap.replaced-<time>``
        until the restore succeeded. Returns the archive's manifest.
        """
        if self.running_pid() is not None or (self._proc is not None and self.pid):
            raise SlapdError(f"the slapd of {self.data_dir} is running: stop it before a "
                             "restore (mailgate serve or mailgate directory)")
        slapadd = _tool("slapadd")
        with tempfile.TemporaryDirectory(prefix="mailgate-restore-") as tmp:
            work = Path(tmp)
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(work, filter="data")
            try:
                manifest = json.loads((work / "manifest.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                raise SlapdError(f"{archive} is not a mailgate backup (no manifest)") from None
            if manifest.get("base_dn", "").lower() != self.base_dn.lower():
                raise SlapdError(f"{archive} holds {manifest.get('base_dn')!r}, not "
                                 f"{self.base_dn!r} (MAILGATE_LDAP_BASE_DN)")
            config = (work / "config.ldif").read_text(encoding="utf-8")
            # The paths inside cn=config name the data dir the backup came from.
            config = config.replace(str(manifest["root"]), str(self.root))
            (work / "config.ldif").write_text(config, encoding="utf-8")
            aside = None
            if self.root.exists():
                aside = self.root.with_name(f"ldap.replaced-{int(time.time())}")
                self.root.rename(aside)
            try:
                for d in (self.config_dir, self.db_dir, self.run_dir):
                    d.mkdir(parents=True)
                os.chmod(self.root, 0o700)
                self._run([slapadd, "-n0", "-F", str(self.config_dir),
                           "-l", str(work / "config.ldif")])
                self._run([slapadd, "-n1", "-q", "-F", str(self.config_dir),
                           "-l", str(work / "data.ldif")])
                self.secrets_dir.mkdir(parents=True, exist_ok=True)
                os.chmod(self.secrets_dir, 0o700)
                for secret in (work / "secrets").iterdir():
                    _write_secret(self.secrets_dir / secret.name,
                                  secret.read_text(encoding="utf-8"))
            except BaseException:
                if self.root.exists():
                    shutil.rmtree(self.root)
                if aside is not None:
                    aside.rename(self.root)
                raise
        if aside is not None:
            shutil.rmtree(aside)
        return dict(manifest)

    @staticmethod
    def _run(cmd: list[str]) -> None:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SlapdError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}{proc.stderr}")


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


def _write_secret(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value)  # no newline: ldapsearch -y reads the file verbatim
