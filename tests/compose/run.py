#!/usr/bin/env python3
"""make test-compose: the whole mail system from docker-compose.yml, actually run.

With podman and podman-compose (installed by deploy/install-container-packages.sh;
CONTAINERS_CONF points at deploy/containers/containers.conf), on free loopback
ports, with a project name and volumes of its own:

 1. the debian:bookworm base image (debootstrap, once), the project's images;
 2. `compose up`, then wait for every healthcheck (podman-compose ignores
    depends_on conditions, so this script waits, with a deadline);
 3. an account and an alias through the HTTPS API;
 4. mail over SMTP (port 25) to the account and to the alias, read over IMAP;
 5. submission (587, STARTTLS + AUTH): own and whitelisted senders accepted, a
    foreign envelope sender and a foreign From: refused;
 6. quota: an account's quota set through the API, mail until its mailbox is
    full, then 552 5.2.2 at RCPT (Postfix asks Dovecot's quota-status); its
    usage through the API (the gateway reads Dovecot's doveadm HTTP API); a
    raised quota takes mail;
 7. the gateway stopped: mail still flows, IMAP still logs in; started again:
    the API answers;
 8. upgrade: `compose down` keeping the volumes, images rebuilt with a new build
    id, `compose up`: the account still logs in and its mail is still there;
 9. `compose down -v`, always (also after a failure).

Only stdlib; run as root: python3 tests/compose/run.py [--keep-images]. It is
not collected by pytest (no test_*.py name): `make test` does not run it.
"""

from __future__ import annotations

import argparse
import contextlib
import imaplib
import json
import os
import secrets
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("directory", "gateway", "sync", "milter", "dovecot", "postfix")
PORTS = ("MAILGATE_LDAP_PORT", "MAILGATE_HTTPS_PORT", "MAILGATE_SMTP_PORT",
         "MAILGATE_SUBMISSION_PORT", "MAILGATE_IMAP_PORT")
HEALTH_DEADLINE = 180.0
MAIL_DEADLINE = 60.0
DOMAIN = "example.com"
ALICE, BOB = f"alice@{DOMAIN}", f"bob@{DOMAIN}"
CAROL = f"carol@{DOMAIN}"         # gets a small quota
# Bytes: five or six of the messages below (3.2 kB, plus 0.5 kB of trace headers
# on the way). quota_grace (10 %) must exceed those headers, which the SIZE a
# client declares cannot count (docs/mail-servers.md).
QUOTA = 20_000
MAX_QUOTA_MESSAGES = 20
OFFICE = f"office@{DOMAIN}"       # an alias to alice, and in alice's whitelist
PASSWORD = "compose-" + secrets.token_urlsafe(12)

results: list[tuple[str, float]] = []


def say(text: str) -> None:
    print(f"test-compose: {text}", flush=True)


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    start = time.monotonic()
    say(f"-- {name}")
    yield
    took = time.monotonic() - start
    results.append((name, took))
    say(f"   ok ({took:.1f} s)")


def wait_for(what: str, check: Callable[[], Any], deadline: float,
             every: float = 0.5) -> Any:
    """Call ``check`` until it returns something true; fail after ``deadline`` s."""
    end = time.monotonic() + deadline
    last: Exception | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # reported if the deadline passes
            last = exc
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not within {deadline:.0f} s"
                                 + (f" (last error: {last!r})" if last else ""))
        time.sleep(every)


def free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


class Stack:
    """podman-compose on docker-compose.yml with this run's project and ports."""

    def __init__(self, project: str, env: dict[str, str]) -> None:
        self.project = project
        self.env = env

    def run(self, *args: str, timeout: float = 600, check: bool = True,
            quiet: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(args, cwd=ROOT, env=self.env, text=True, timeout=timeout,
                              stdout=subprocess.PIPE if quiet else None,
                              stderr=subprocess.STDOUT if quiet else None, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{(proc.stdout or '')[-4000:]}")
        return proc

    def compose(self, *args: str, timeout: float = 600,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("podman-compose", "-p", self.project, *args, timeout=timeout,
                        check=check)

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"

    def healthy(self, service: str) -> bool:
        proc = self.run("podman", "healthcheck", "run", self.container(service),
                        timeout=30, check=False)
        return proc.returncode == 0

    def wait_healthy(self, services: tuple[str, ...] = SERVICES) -> None:
        pending = list(services)

        def check() -> bool:
            pending[:] = [s for s in pending if not self.healthy(s)]
            return not pending
        try:
            wait_for(f"healthy {pending}", check, HEALTH_DEADLINE, every=1.0)
        except AssertionError:
            raise AssertionError(f"not healthy within {HEALTH_DEADLINE:.0f} s: "
                                 f"{', '.join(pending)}") from None

    def image_ids(self) -> dict[str, str]:
        ids = {}
        for image in ("mailgate", "mailgate-postfix", "mailgate-dovecot"):
            proc = self.run("podman", "image", "inspect", "-f", "{{.Id}}",
                            f"localhost/{image}:{self.env['MAILGATE_VERSION']}")
            ids[image] = proc.stdout.strip()[:12]
        return ids

    def logs(self) -> None:
        for service in SERVICES:
            proc = self.run("podman", "logs", "--tail", "30", self.container(service),
                            check=False, timeout=30)
            print(f"----- logs of {service} (last 30 lines)\n{proc.stdout}", flush=True)


# -- clients -------------------------------------------------------------------


class Api:
    def __init__(self, port: int, token: str, cafile: Path) -> None:
        self.base = f"https://127.0.0.1:{port}"
        self.token = token
        self.context = ssl.create_default_context(cafile=str(cafile))

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             timeout: float = 10) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Authorization": f"Bearer {self.token}",
                                                  "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=self.context) as resp:
                text = resp.read().decode()
                return resp.status, json.loads(text) if text else None
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read().decode() or "null")


def message(sender: str, to: str, subject: str, header_from: str | None = None,
            padding: int = 0) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = header_from or sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{secrets.token_hex(8)}@compose.test>"
    msg.set_content(f"{subject}\n" + "x" * 78 * padding)
    return msg


def smtp_inbound(port: int, sender: str, rcpt: str, subject: str, padding: int = 0) -> None:
    """One message over port 25 (smtplib declares its SIZE)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.ehlo("outside.test")
        smtp.send_message(message(sender, rcpt, subject, padding=padding), sender, [rcpt])


def submission(port: int, context: ssl.SSLContext, login: str, password: str,
               envelope: str, rcpt: str, subject: str, header_from: str | None = None) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.ehlo("client.test")
        smtp.starttls(context=context)
        smtp.ehlo("client.test")
        smtp.login(login, password)
        smtp.send_message(message(envelope, rcpt, subject, header_from), envelope, [rcpt])


def imap_subjects(port: int, context: ssl.SSLContext, login: str, password: str) -> list[str]:
    with imaplib.IMAP4("127.0.0.1", port, timeout=15) as imap:
        imap.starttls(ssl_context=context)
        imap.login(login, password)
        imap.select("INBOX", readonly=True)
        _, data = imap.search(None, "ALL")
        subjects = []
        for num in (data[0] or b"").split():
            _, parts = imap.fetch(num, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            for part in parts:
                if isinstance(part, tuple):
                    line = part[1].decode(errors="replace").strip()
                    subjects.append(line.removeprefix("Subject:").strip())
        imap.logout()
        return subjects


def wait_for_mail(port: int, context: ssl.SSLContext, login: str, password: str,
                  subject: str) -> None:
    wait_for(f"{subject!r} in {login}'s INBOX over IMAP",
             lambda: subject in imap_subjects(port, context, login, password), MAIL_DEADLINE)


def refused(call: Callable[[], None]) -> str:
    """The SMTP error that ``call`` got; fails if the message was accepted."""
    try:
        call()
    except smtplib.SMTPRecipientsRefused as exc:
        code, text = next(iter(exc.recipients.values()))
        return f"{code} {text.decode(errors='replace')}"
    except smtplib.SMTPSenderRefused as exc:
        return f"{exc.smtp_code} {exc.smtp_error.decode(errors='replace')}"
    except smtplib.SMTPDataError as exc:
        return f"{exc.smtp_code} {exc.smtp_error.decode(errors='replace')}"
    raise AssertionError("the message was accepted, but must be refused")


# -- the run ---------------------------------------------------------------------


def prepare(env: dict[str, str]) -> None:
    with step("podman and podman-compose (deploy/install-container-packages.sh)"):
        subprocess.run(["bash", str(ROOT / "deploy/install-container-packages.sh")],
                       env=env, check=True, timeout=900)
    with step("base image debian:bookworm (deploy/containers/build-base-image.sh)"):
        subprocess.run(["bash", str(ROOT / "deploy/containers/build-base-image.sh")],
                       env=env, check=True, timeout=900)


def scenario(stack: Stack, ports: dict[str, int], secrets_dir: Path) -> None:
    cafile = secrets_dir / "tls.crt"
    context = ssl.create_default_context(cafile=str(cafile))
    api = Api(ports["MAILGATE_HTTPS_PORT"],
              (secrets_dir / "admin-token").read_text().strip(), cafile)
    smtp_port, sub_port = ports["MAILGATE_SMTP_PORT"], ports["MAILGATE_SUBMISSION_PORT"]
    imap_port = ports["MAILGATE_IMAP_PORT"]
    run_id = secrets.token_hex(4)

    with step("compose build (podman-compose build: the three images, layers reused)"):
        stack.compose("build", timeout=1200)
        say(f"   images {stack.image_ids()}")
    with step("compose up and every service healthy"):
        stack.compose("up", "-d", timeout=300)
        stack.wait_healthy()

    with step("account and alias through the HTTPS API"):
        status, body = api.call("POST", "/mail/account/", {
            "name": "alice", "domain": DOMAIN, "password": PASSWORD,
            "spoofing_whitelist": OFFICE})
        assert status == 201, (status, body)
        status, body = api.call("POST", "/mail/account/", {
            "name": "bob", "domain": DOMAIN, "password": PASSWORD + "b"})
        assert status == 201, (status, body)
        status, body = api.call("POST", "/mail/alias/",
                                {"name": "office", "domain": DOMAIN, "to": ALICE})
        assert status == 201, (status, body)
        status, body = api.call("GET", f"/mail/account/?domain={DOMAIN}")
        assert status == 200 and body["count"] == 2, (status, body)

    with step("SMTP (25) to the account and to the alias, read over IMAP (STARTTLS)"):
        smtp_inbound(smtp_port, "someone@outside.test", ALICE, f"direct {run_id}")
        smtp_inbound(smtp_port, "someone@outside.test", OFFICE, f"via alias {run_id}")
        wait_for_mail(imap_port, context, ALICE, PASSWORD, f"direct {run_id}")
        wait_for_mail(imap_port, context, ALICE, PASSWORD, f"via alias {run_id}")
        text = refused(lambda: smtp_inbound(smtp_port, "someone@outside.test",
                                            f"nobody@{DOMAIN}", "unknown"))
        assert text.startswith("550"), text
        say(f"   unknown recipient refused: {text[:70]}")

    with step("submission (587, STARTTLS + AUTH) and the spoofing rule"):
        submission(sub_port, context, ALICE, PASSWORD, ALICE, BOB, f"own {run_id}")
        submission(sub_port, context, ALICE, PASSWORD, OFFICE, BOB, f"whitelisted {run_id}")
        wait_for_mail(imap_port, context, BOB, PASSWORD + "b", f"own {run_id}")
        wait_for_mail(imap_port, context, BOB, PASSWORD + "b", f"whitelisted {run_id}")
        envelope = refused(lambda: submission(sub_port, context, ALICE, PASSWORD, BOB, BOB,
                                              "forged envelope"))
        assert envelope.startswith("553"), envelope
        say(f"   foreign envelope sender refused: {envelope[:80]}")
        header = refused(lambda: submission(sub_port, context, ALICE, PASSWORD, ALICE, BOB,
                                            "forged From", header_from=BOB))
        assert header.startswith("550"), header
        say(f"   foreign From: refused (milter): {header[:80]}")
        status = smtp_unauthenticated_relay(sub_port, context)
        say(f"   unauthenticated submission refused: {status[:60]}")

    with step("quota: a full mailbox gets 552 5.2.2 at RCPT; a raised quota takes mail"):
        status, body = api.call("POST", "/mail/account/", {
            "name": "carol", "domain": DOMAIN, "password": PASSWORD + "c"})
        assert status == 201, (status, body)
        status, body = api.call("POST", f"/mail/account/{CAROL}/set_quota/", {"quota": QUOTA})
        assert status == 200 and body["quota"] == QUOTA, (status, body)
        full = ""
        for i in range(MAX_QUOTA_MESSAGES):
            try:
                smtp_inbound(smtp_port, "someone@outside.test", CAROL, f"filling {i} {run_id}",
                             padding=40)
            except smtplib.SMTPRecipientsRefused as exc:
                code, text = next(iter(exc.recipients.values()))
                full = f"{code} {text.decode(errors='replace')}"
                break
            wait_for_mail(imap_port, context, CAROL, PASSWORD + "c", f"filling {i} {run_id}")
        assert full.startswith("552 5.2.2") and "Mailbox is full" in full, full
        say(f"   after {i} messages: {full[:70]}")
        status, usage = api.call("GET", f"/mail/account/{CAROL}/usage/")
        assert status == 200 and usage["used_messages"] == i, (status, usage)
        assert QUOTA * 0.5 < usage["used_bytes"] <= QUOTA * 1.1, usage
        say(f"   usage through the API (from doveadm): {usage}")
        assert imap_subjects(imap_port, context, CAROL, PASSWORD + "c")   # still logs in
        status, body = api.call("POST", f"/mail/account/{CAROL}/set_quota/",
                                {"quota": QUOTA * 100})
        assert status == 200, (status, body)
        smtp_inbound(smtp_port, "someone@outside.test", CAROL, f"room again {run_id}")
        wait_for_mail(imap_port, context, CAROL, PASSWORD + "c", f"room again {run_id}")

    with step("gateway stopped: mail still flows, IMAP still logs in; started: API answers"):
        stack.run("podman", "stop", "-t", "10", stack.container("gateway"), timeout=60)
        wait_for("the API to be down", lambda: not api_answers(api), 30)
        smtp_inbound(smtp_port, "someone@outside.test", OFFICE, f"gateway down {run_id}")
        wait_for_mail(imap_port, context, ALICE, PASSWORD, f"gateway down {run_id}")
        submission(sub_port, context, ALICE, PASSWORD, ALICE, BOB, f"sent while down {run_id}")
        wait_for_mail(imap_port, context, BOB, PASSWORD + "b", f"sent while down {run_id}")
        stack.run("podman", "start", stack.container("gateway"), timeout=60)
        stack.wait_healthy(("gateway",))
        status, body = api.call("GET", f"/mail/account/{ALICE}/")
        assert status == 200 and body["id"] == ALICE, (status, body)

    with step("upgrade: down (volumes kept), rebuild with a new build id, up"):
        before = stack.image_ids()
        stack.compose("down", timeout=300)
        stack.compose("build", "--build-arg", f"MAILGATE_BUILD_ID={run_id}", timeout=1200)
        after = stack.image_ids()
        assert all(before[k] != after[k] for k in before), (before, after)
        say(f"   images {before} -> {after}")
        stack.compose("up", "-d", timeout=300)
        stack.wait_healthy()
        for service in ("gateway", "postfix", "dovecot"):
            build_id = stack.run("podman", "exec", stack.container(service), "cat",
                                 "/opt/mailgate/build-id").stdout.strip()
            assert build_id == run_id, (service, build_id)
        subjects = imap_subjects(imap_port, context, ALICE, PASSWORD)
        assert f"direct {run_id}" in subjects, subjects
        status, body = api.call("GET", f"/mail/account/{ALICE}/")
        assert status == 200, (status, body)
        smtp_inbound(smtp_port, "someone@outside.test", ALICE, f"after upgrade {run_id}")
        wait_for_mail(imap_port, context, ALICE, PASSWORD, f"after upgrade {run_id}")


def api_answers(api: Api) -> bool:
    try:
        api.call("GET", "/healthz", timeout=3)
        return True
    except OSError:
        return False


def smtp_unauthenticated_relay(port: int, context: ssl.SSLContext) -> str:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.ehlo("client.test")
        smtp.starttls(context=context)
        smtp.ehlo("client.test")
        smtp.mail("someone@outside.test")
        code, text = smtp.rcpt(BOB)
        assert code >= 500, (code, text)
        return f"{code} {text.decode(errors='replace')}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true",
                        help="leave the stack running after the run (no compose down -v)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("test-compose: needs root (podman, Postfix's port 25 inside containers)",
              file=sys.stderr)
        return 2
    started = time.monotonic()
    env = dict(os.environ)
    env["CONTAINERS_CONF"] = str(ROOT / "deploy/containers/containers.conf")
    prepare(env)

    project = f"mailgate-test-{secrets.token_hex(3)}"
    secrets_dir = Path(tempfile.mkdtemp(prefix="mailgate-compose-secrets."))
    ports = dict(zip(PORTS, free_ports(len(PORTS)), strict=True))
    env.update({name: str(port) for name, port in ports.items()})
    env.update(MAILGATE_SECRETS_DIR=str(secrets_dir), MAILGATE_VERSION="latest",
               MAILGATE_BIND="127.0.0.1", MAILGATE_API_BIND="127.0.0.1",
               MAILGATE_WORKERS="2", MAILGATE_PASSWORD_ROUNDS="5000")
    env.pop("MAILGATE_JSON_URLS", None)
    subprocess.run(["bash", str(ROOT / "deploy/compose/make-secrets.sh"), str(secrets_dir)],
                   env=env, check=True, stdout=subprocess.DEVNULL, timeout=60)
    stack = Stack(project, env)
    say(f"project {project}, ports {ports}")
    failed: BaseException | None = None
    try:
        scenario(stack, ports, secrets_dir)
    except BaseException as exc:  # also Ctrl-C: the stack is removed either way
        failed = exc
        stack.logs()
    finally:
        if args.keep and failed is None:
            say(f"kept: podman-compose -p {project} down -v (secrets in {secrets_dir})")
        else:
            with step("compose down -v (containers, network, volumes)"):
                stack.compose("down", "-v", timeout=300, check=False)
                leftover = stack.run("podman", "ps", "-a", "--filter",
                                     f"label=io.podman.compose.project={project}",
                                     "--format", "{{.Names}}").stdout.strip()
                assert not leftover, f"containers left: {leftover}"
            shutil.rmtree(secrets_dir, ignore_errors=True)
            # Earlier versions of our images (untagged by the rebuilds); never others'.
            stack.run("podman", "image", "prune", "-f", "--filter",
                      "label=io.mailgate.image=true", check=False, timeout=120)
    total = time.monotonic() - started
    print("\ntest-compose summary")
    for name, took in results:
        print(f"  ok    {took:6.1f} s  {name}")
    if failed is not None:
        print(f"  FAILED: {failed!r}")
    print(f"  total {total:.1f} s: {'FAILED' if failed else 'all passed'}")
    images = subprocess.run(["podman", "images", "--format",
                             "{{.Repository}}:{{.Tag}} {{.Size}}"], env=env, text=True,
                            capture_output=True, check=False).stdout
    print("  images: " + ", ".join(line for line in images.splitlines()
                                   if "mailgate" in line or "debian" in line))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
