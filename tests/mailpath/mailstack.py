"""Real Postfix, Dovecot and milter processes on loopback ports, and mail clients.

The configuration is what ``mailgate render-config`` writes, wrapped in a small
test-only base (own queue, state and log directories, no chroot, loopback
listeners, outbound mail disabled). Every process is started here and stopped
by its own pid (Postfix by ``postfix -c DIR stop``); every wait is bounded.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway import cli
from gateway.slapd import ManagedSlapd, free_port
from gateway.tls import ensure_self_signed

from tests.support.wait import wait_until

MAIL_USER = "nobody"
# A test that makes an unindexed search on purpose sets this in its node's stash.
ALLOW_UNINDEXED = pytest.StashKey[bool]()
MAIL_GROUP = "nogroup"


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 0.5):
            return True
    except OSError:
        return False


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}


@dataclass(frozen=True)
class Ports:
    smtp: int = field(default_factory=free_port)
    submission: int = field(default_factory=free_port)
    submission_ldap_down: int = field(default_factory=free_port)
    submission_no_milter: int = field(default_factory=free_port)
    lmtp: int = field(default_factory=free_port)
    auth: int = field(default_factory=free_port)
    imap: int = field(default_factory=free_port)
    milter: int = field(default_factory=free_port)
    milter_ldap_down: int = field(default_factory=free_port)
    quota_status: int = field(default_factory=free_port)
    doveadm: int = field(default_factory=free_port)   # the doveadm HTTP API
    closed: int = field(default_factory=free_port)  # nothing ever listens here


@dataclass
class SendResult:
    """How far an SMTP transaction got: stage auth|mail|rcpt|data, or sent."""

    stage: str
    code: int
    text: str

    @property
    def sent(self) -> bool:
        return self.stage == "sent"

    def __str__(self) -> str:
        return f"{self.stage}: {self.code} {self.text}"


def message(subject: str, from_header: str | Sequence[str] | None, to: str,
            padding: int = 0) -> bytes:
    """A small RFC 5322 message; ``from_header`` None omits From:, a list repeats it;
    ``padding`` lines of 78 characters (80 bytes with CRLF) after its one line of text."""
    froms = [] if from_header is None else (
        [from_header] if isinstance(from_header, str) else list(from_header))
    lines = [f"From: {value}" for value in froms]
    lines += [f"To: {to}", f"Subject: {subject}",
              f"Message-ID: <{uuid.uuid4().hex}@client.test>",
              "Date: Mon, 23 Nov 2026 12:00:00 +0000", "", f"test message {subject}",
              *["x" * 78] * padding, ""]
    return "\r\n".join(lines).encode("utf-8")


class MailStack:
    def __init__(self, root: Path, slapd: ManagedSlapd, base_dn: str) -> None:
        self.root = root
        self.slapd = slapd
        self.base_dn = base_dn
        self.ports = Ports()
        self.mail_root = root / "vmail"
        self.postfix_dir = root / "postfix" / "etc"
        self.postfix_var = root / "postfix"
        self.maillog = root / "postfix" / "log" / "maillog"
        self.dovecot_dir = root / "dovecot"
        self.dovecot_conf = self.dovecot_dir / "dovecot.conf"
        self.dovecot_log = self.dovecot_dir / "dovecot.log"
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._postfix_started = False
        self.tls_cert, self.tls_key = ensure_self_signed(root / "tls", ["127.0.0.1"])
        self.doveadm_key_file = root / "doveadm-api.key"
        self.doveadm_key = "doveadm-" + uuid.uuid4().hex

    @property
    def doveadm_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.doveadm}"

    # -- configuration ---------------------------------------------------------

    def render(self) -> None:
        """Run ``mailgate render-config`` for both servers, as an operator would."""
        common = ["--ldap-url", self.slapd.url, "--base-dn", self.base_dn]
        status = cli.main([
            "render-config", "postfix", "--out", str(self.postfix_dir / "mailgate"), *common,
            "--password-file", str(self.slapd.password_file("postfix")),
            "--lmtp", f"lmtp:inet:127.0.0.1:{self.ports.lmtp}",
            "--sasl-path", f"inet:127.0.0.1:{self.ports.auth}",
            "--milter", f"inet:127.0.0.1:{self.ports.milter}",
            "--submission-listen", f"127.0.0.1:{self.ports.submission}",
            "--quota-status", f"inet:127.0.0.1:{self.ports.quota_status}",
        ])
        assert status == 0, "render-config postfix failed"
        status = cli.main([
            "render-config", "dovecot", "--out", str(self.dovecot_dir / "mailgate"), *common,
            "--password-file", str(self.slapd.password_file("dovecot")),
            "--mail-root", str(self.mail_root), "--mail-user", MAIL_USER,
            "--mail-group", MAIL_GROUP,
            "--lmtp-listen", f"127.0.0.1:{self.ports.lmtp}",
            "--auth-listen", f"127.0.0.1:{self.ports.auth}",
            "--quota-status-listen", f"127.0.0.1:{self.ports.quota_status}",
            "--doveadm-listen", f"127.0.0.1:{self.ports.doveadm}",
            "--doveadm-api-key-file", str(self.doveadm_key_file),
        ])
        assert status == 0, "render-config dovecot failed"

    def _postfix_main_cf(self) -> str:
        var = self.postfix_var
        disabled = "error:outbound mail is disabled in tests"
        base = f"""\
# test-only base; the mailgate fragment follows
compatibility_level = 3.6
queue_directory = {var}/spool
data_directory = {var}/data
meta_directory = /etc/postfix
maillog_file = {self.maillog}
maillog_file_prefixes = {var}/log
myhostname = mail.test
mydomain = test
myorigin = $myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
default_transport = {disabled}
relay_transport = {disabled}
smtpd_peername_lookup = no
# Clients here come from 127.0.0.1, which the default (permit_inet_interfaces)
# treats as local: cleanup would add a missing From: before the milter sees the
# message. Treat them like the remote submission clients they stand for.
local_header_rewrite_clients =
smtpd_error_sleep_time = 0
smtpd_tls_cert_file = {self.tls_cert}
smtpd_tls_key_file = {self.tls_key}
biff = no
"""
        fragment = (self.postfix_dir / "mailgate" / "main.cf.fragment").read_text()
        return base + "\n" + fragment

    def _postfix_master_cf(self) -> str:
        p = self.ports
        services = [
            # Port 25 path; the milter is attached here too (test only) to prove
            # that it lets unauthenticated mail through.
            f"127.0.0.1:{p.smtp} inet n - n - - smtpd\n"
            f"  -o smtpd_milters=inet:127.0.0.1:{p.milter}",
            "cleanup unix n - n - 0 cleanup",
            "qmgr unix n - n 300 1 qmgr",
            "tlsmgr unix - - n 1000? 1 tlsmgr",
            "rewrite unix - - n - - trivial-rewrite",
            "bounce unix - - n - 0 bounce",
            "defer unix - - n - 0 bounce",
            "trace unix - - n - 0 bounce",
            "verify unix - - n - 1 verify",
            "flush unix n - n 1000? 0 flush",
            "proxymap unix - - n - - proxymap",
            "proxywrite unix - - n - 1 proxymap",
            "smtp unix - - n - - smtp",
            "relay unix - - n - - smtp",
            "showq unix n - n - - showq",
            "error unix - - n - - error",
            "retry unix - - n - - error",
            "discard unix - - n - - discard",
            "lmtp unix - - n - - lmtp",
            "anvil unix - - n - 1 anvil",
            "scache unix - - n - 1 scache",
            "postlog unix-dgram n - n - 1 postlogd",
        ]
        fragment = (self.postfix_dir / "mailgate" / "master.cf.fragment").read_text()
        # Two test-only copies of the shipped submission service: one whose
        # milter cannot reach LDAP, one whose milter is not running at all.
        service = _service_block(fragment, f"127.0.0.1:{p.submission}")
        extra = [
            service.replace(f"127.0.0.1:{p.submission} ", f"127.0.0.1:{p.submission_ldap_down} ")
            + f"\n  -o smtpd_milters=inet:127.0.0.1:{p.milter_ldap_down}",
            service.replace(f"127.0.0.1:{p.submission} ", f"127.0.0.1:{p.submission_no_milter} ")
            + f"\n  -o smtpd_milters=inet:127.0.0.1:{p.closed}",
        ]
        return "\n".join(services) + "\n" + fragment + "\n".join(extra) + "\n"

    def _dovecot_conf(self) -> str:
        d = self.dovecot_dir
        return f"""\
# test-only base; the rendered mailgate include follows
base_dir = {d}/run
state_dir = {d}/state
instance_name = mailgate-test-{self.ports.imap}
log_path = {self.dovecot_log}
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
# fail fast: the tests log in with wrong passwords on purpose
auth_failure_delay = 0
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.ports.imap}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
!include {d}/mailgate/mailgate.conf
"""

    # -- processes ------------------------------------------------------------

    def start(self) -> None:
        fd = os.open(self.doveadm_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as key:
            key.write(self.doveadm_key + "\n")
        self.render()
        self.mail_root.mkdir(parents=True)
        os.chown(self.mail_root, _uid(MAIL_USER), _gid(MAIL_GROUP))
        for sub in ("run", "state"):
            (self.dovecot_dir / sub).mkdir(parents=True, exist_ok=True)
        self.dovecot_conf.write_text(self._dovecot_conf())
        self._start_dovecot()
        milter_args = ["--base-dn", self.base_dn,
                       "--password-file", str(self.slapd.password_file("milter"))]
        self._spawn("milter", [sys.executable, "-m", "gateway.cli", "milter",
                               "--socket", f"inet:{self.ports.milter}@127.0.0.1",
                               "--ldap-url", self.slapd.url, *milter_args],
                    self.root / "milter.log")
        self._spawn("milter-ldap-down", [
            sys.executable, "-m", "gateway.cli", "milter",
            "--socket", f"inet:{self.ports.milter_ldap_down}@127.0.0.1",
            "--ldap-url", f"ldap://127.0.0.1:{self.ports.closed}", *milter_args],
            self.root / "milter-ldap-down.log")
        for sub in ("log", "spool", "data"):
            (self.postfix_var / sub).mkdir(parents=True, exist_ok=True)
        os.chown(self.postfix_var / "data", _uid("postfix"), _gid("postfix"))
        (self.postfix_dir / "main.cf").write_text(self._postfix_main_cf())
        (self.postfix_dir / "master.cf").write_text(self._postfix_master_cf())
        check = self.postfix("check")
        assert check.returncode == 0, f"postfix check: {check.stdout}{check.stderr}"
        started = self.postfix("start")
        assert started.returncode == 0, f"postfix start: {started.stdout}{started.stderr}"
        self._postfix_started = True
        p = self.ports
        for port, what in ((p.imap, "Dovecot IMAP"), (p.lmtp, "Dovecot LMTP"),
                           (p.auth, "Dovecot auth"), (p.quota_status, "Dovecot quota-status"),
                           (p.doveadm, "doveadm HTTP API"), (p.milter, "milter"),
                           (p.milter_ldap_down, "second milter"), (p.smtp, "Postfix smtpd"),
                           (p.submission, "Postfix submission")):
            self._check_alive()
            wait_until(lambda port=port: listening(port), f"{what} on port {port}", timeout=30)

    def _start_dovecot(self) -> None:
        self._spawn("dovecot", ["dovecot", "-F", "-c", str(self.dovecot_conf)],
                    self.dovecot_dir / "stdout.log")

    @contextlib.contextmanager
    def dovecot_stopped(self) -> Iterator[None]:
        """Dovecot (the master this stack started, and so all its services) is down
        inside the block, and up again after it, even on failure."""
        name, proc = next(item for item in self._procs if item[0] == "dovecot")
        self._procs.remove((name, proc))
        proc.terminate()
        proc.wait(30)
        wait_until(lambda: not listening(self.ports.doveadm), "doveadm HTTP API down",
                   timeout=30)
        try:
            yield
        finally:
            self._start_dovecot()
            for port in (self.ports.imap, self.ports.lmtp, self.ports.auth,
                         self.ports.quota_status, self.ports.doveadm):
                wait_until(lambda port=port: listening(port), f"Dovecot on port {port}",
                           timeout=30)

    def postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["postfix", "-c", str(self.postfix_dir), *args],
                              capture_output=True, text=True, timeout=60, check=False,
                              env=_clean_env())

    def _spawn(self, name: str, argv: list[str], log: Path) -> None:
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=self.root, env=_clean_env())
        self._procs.append((name, proc))

    def _check_alive(self) -> None:
        for name, proc in self._procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}; see {self.root}")

    def stop(self) -> None:
        if self._postfix_started:
            self._postfix_started = False
            pid_file = self.postfix_var / "spool" / "pid" / "master.pid"
            master = None
            with contextlib.suppress(OSError, ValueError):
                master = int(pid_file.read_text().strip())
            self.postfix("stop")
            if master is not None:
                with contextlib.suppress(AssertionError):
                    wait_until(lambda: not _alive(master), "postfix master exit", timeout=15)
                if _alive(master):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(master, signal.SIGKILL)
        for _name, proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
        self._procs.clear()

    # -- clients --------------------------------------------------------------

    def imap_login(self, user: str, password: str) -> bool:
        """Does an IMAP AUTHENTICATE PLAIN succeed (and the mailbox open)?"""
        return self.imap_error(user, password) is None

    def imap_error(self, user: str, password: str) -> str | None:
        """None if the IMAP login succeeds, else the server's answer."""
        try:
            with self._imap(user, password):
                return None
        except imaplib.IMAP4.error as exc:
            return str(exc)

    def imap_session(self, user: str, password: str) -> contextlib.AbstractContextManager[
            imaplib.IMAP4]:
        """A logged-in IMAP session with INBOX selected (read-only), for the block."""
        return self._imap(user, password)

    @contextlib.contextmanager
    def _imap(self, user: str, password: str) -> Iterator[imaplib.IMAP4]:
        imap = imaplib.IMAP4("127.0.0.1", self.ports.imap, timeout=20)
        try:
            imap.authenticate("PLAIN", lambda _: f"\0{user}\0{password}".encode())
            typ, _ = imap.select("INBOX", readonly=True)
            if typ != "OK":
                raise imaplib.IMAP4.error(f"SELECT INBOX: {typ}")
            yield imap
        finally:
            with contextlib.suppress(Exception):
                imap.logout()

    def wait_until_login(self, user: str, password: str, timeout: float = 30) -> None:
        wait_until(lambda: self.imap_login(user, password), f"IMAP login of {user}",
                   timeout=timeout, interval=0.2)

    def imap_subjects(self, user: str, password: str) -> list[str]:
        with self._imap(user, password) as imap:
            typ, data = imap.search(None, "ALL")
            assert typ == "OK"
            subjects = []
            for num in data[0].split():
                typ, parts = imap.fetch(num, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
                for part in parts:
                    if isinstance(part, tuple):
                        text = part[1].decode("utf-8", "replace").strip()
                        subjects.append(text.partition(":")[2].strip())
            return subjects

    def wait_for_mail(self, user: str, password: str, subject: str, timeout: float = 20) -> None:
        """Wait (bounded) until ``subject`` is in the user's INBOX, read over IMAP."""
        wait_until(lambda: subject in self.imap_subjects(user, password),
                   f"{subject!r} in {user}'s INBOX (maillog: {self.maillog})", timeout=timeout,
                   interval=0.1)

    def submit(self, login: str, password: str, mail_from: str, rcpts: Sequence[str],
               from_header: str | Sequence[str] | None = "", subject: str = "",
               port: int | None = None) -> SendResult:
        """An authenticated submission (STARTTLS, AUTH PLAIN) on the submission port.

        ``from_header`` "" means: the envelope sender.
        """
        subject = subject or f"submitted {uuid.uuid4().hex[:12]}"
        header = mail_from if from_header == "" else from_header
        context = ssl.create_default_context(cafile=str(self.tls_cert))
        with smtplib.SMTP("127.0.0.1", port or self.ports.submission, timeout=30) as smtp:
            smtp.ehlo("client.test")
            try:
                smtp.starttls(context=context)
            except smtplib.SMTPResponseException as exc:  # e.g. 454 when no milter answers
                return SendResult("starttls", exc.smtp_code, _text(exc.smtp_error))
            smtp.ehlo("client.test")
            smtp.user, smtp.password = login, password
            try:
                smtp.auth("PLAIN", smtp.auth_plain, initial_response_ok=True)
            except smtplib.SMTPAuthenticationError as exc:
                return SendResult("auth", exc.smtp_code, _text(exc.smtp_error))
            return _transaction(smtp, mail_from, rcpts, message(subject, header, rcpts[0]))

    def send25(self, mail_from: str, rcpts: Sequence[str], from_header: str | None = "",
               subject: str = "", padding: int = 0) -> SendResult:
        """An unauthenticated SMTP transaction on the port-25 service (no SIZE
        declared: the RCPT checks know nothing of the message)."""
        subject = subject or f"inbound {uuid.uuid4().hex[:12]}"
        header = mail_from if from_header == "" else from_header
        with smtplib.SMTP("127.0.0.1", self.ports.smtp, timeout=30) as smtp:
            smtp.ehlo("outside.test")
            return _transaction(smtp, mail_from, rcpts,
                                message(subject, header, rcpts[0], padding))

    def maildir(self, address: str) -> Path:
        local, _, domain = address.rpartition("@")
        return self.mail_root / domain / local / "Maildir"

    def doveadm(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["doveadm", "-c", str(self.dovecot_conf), *args],
                              capture_output=True, text=True, timeout=60, check=False,
                              env=_clean_env())

    def postmap_query(self, map_name: str, key: str) -> str | None:
        """``postmap -q key proxy-less ldap:map`` as Postfix would look it up."""
        path = self.postfix_dir / "mailgate" / map_name
        done = subprocess.run(["postmap", "-c", str(self.postfix_dir), "-q", key,
                               f"ldap:{path}"], capture_output=True, text=True, timeout=60,
                              check=False, env=_clean_env())
        if done.returncode == 1:
            return None
        assert done.returncode == 0, f"postmap -q {key} {map_name}: {done.stderr}"
        return done.stdout.strip()


def _transaction(smtp: smtplib.SMTP, mail_from: str, rcpts: Sequence[str],
                 body: bytes) -> SendResult:
    code, text = smtp.mail(mail_from)
    if code != 250:
        return SendResult("mail", code, _text(text))
    for rcpt in rcpts:
        code, text = smtp.rcpt(rcpt)
        if code not in (250, 251):
            return SendResult("rcpt", code, _text(text))
    try:
        code, text = smtp.data(body)
    except smtplib.SMTPDataError as exc:
        return SendResult("data", exc.smtp_code, _text(exc.smtp_error))
    return SendResult("sent" if code == 250 else "data", code, _text(text))


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _service_block(fragment: str, listen: str) -> str:
    """The master.cf entry starting with ``listen`` and its indented -o lines."""
    lines = fragment.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(listen + " "))
    end = start + 1
    while end < len(lines) and lines[end][:1] in (" ", "\t"):
        end += 1
    return "\n".join(lines[start:end])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _uid(name: str) -> int:
    import pwd

    return pwd.getpwnam(name).pw_uid


def _gid(name: str) -> int:
    import grp

    return grp.getgrnam(name).gr_gid
