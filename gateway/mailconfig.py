"""Render the Postfix and Dovecot configuration that reads the directory natively.

    mailgate render-config postfix --out DIR [options]
    mailgate render-config dovecot --out DIR [options]

The templates live in ``deploy/postfix`` and ``deploy/dovecot`` (``*.in``
files with ``{{name}}`` placeholders); they are filled with the LDAP URL, the
base DN, the service identity (``cn=postfix`` / ``cn=dovecot``) and its password,
read from a password file. Neither ``ldap_table(5)`` nor Dovecot's LDAP args
file can read a password from another file, so the rendered map and args files
hold it and are written mode 0640 (group postfix) and 0600.

In embedded mode (no ``MAILGATE_LDAP_URL``) the defaults come from the managed
slapd: ``MAILGATE_EMBEDDED_LDAP_URL`` and ``<data_dir>/secrets/ldap-<service>.password``.
"""

from __future__ import annotations

import argparse
import contextlib
import grp
import os
import pwd
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .settings import Settings

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "deploy"
POSTFIX_MAPS = ("ldap-domains.cf", "ldap-mailboxes.cf", "ldap-aliases.cf",
                "ldap-sender-login.cf", "ldap-submission-disabled.cf")
DOVECOT_ARGS = ("dovecot-ldap-passdb.conf.ext", "dovecot-ldap-userdb.conf.ext")
DEFAULT_MILTER = "inet:127.0.0.1:10031"
# Postfix 3.7's default, used when postconf cannot tell us the local one.
_PROXY_READ_MAPS_FALLBACK = (
    "$local_recipient_maps $mydestination $virtual_alias_maps $virtual_alias_domains "
    "$virtual_mailbox_maps $virtual_mailbox_domains $relay_recipient_maps $relay_domains "
    "$canonical_maps $sender_canonical_maps $recipient_canonical_maps $relocated_maps "
    "$transport_maps $mynetworks $smtpd_sender_login_maps $sender_bcc_maps "
    "$recipient_bcc_maps $smtp_generic_maps $lmtp_generic_maps $alias_maps "
    "$smtpd_client_restrictions $smtpd_helo_restrictions $smtpd_sender_restrictions "
    "$smtpd_relay_restrictions $smtpd_recipient_restrictions")
_PLACEHOLDER = re.compile(r"\{\{([a-z_]+)\}\}")


class RenderError(ValueError):
    """A template or option cannot be rendered; the message says which."""


@dataclass(frozen=True)
class LdapAccess:
    """How one mail service reaches the directory."""

    url: str
    base_dn: str
    bind_dn: str
    password: str
    starttls: bool = False
    ca_file: Path | None = None


@dataclass(frozen=True)
class Rendered:
    name: str
    text: str
    mode: int
    group: str | None = None


def render_template(text: str, values: Mapping[str, str]) -> str:
    """Fill ``{{name}}`` placeholders; RenderError on a name with no value."""
    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise RenderError(f"template placeholder {{{{{name}}}}} has no value")
        return values[name]
    return _PLACEHOLDER.sub(fill, text)


def _template(service: str, name: str) -> str:
    return (TEMPLATE_DIR / service / f"{name}.in").read_text(encoding="utf-8")


def _check_password(password: str) -> str:
    if not password or any(c.isspace() or ord(c) < 32 or c == "#" for c in password):
        raise RenderError("the LDAP password must be non-empty, without spaces, control "
                          "characters or '#' (config files cannot quote it)")
    return password


def _ldap_values(ldap: LdapAccess) -> dict[str, str]:
    return {"ldap_url": ldap.url, "base_dn": ldap.base_dn, "bind_dn": ldap.bind_dn,
            "bind_pw": _check_password(ldap.password)}


def _absolute(path: str | Path, what: str) -> str:
    if not Path(path).is_absolute():
        raise RenderError(f"{what} must be an absolute path, got {str(path)!r}")
    return str(path)


# -- Postfix -------------------------------------------------------------------


def default_proxy_read_maps() -> str:
    """The local Postfix's default proxy_read_maps (our entries are added to it)."""
    postconf = shutil.which("postconf") or shutil.which("postconf", path="/usr/sbin:/sbin")
    if postconf:
        try:
            found = subprocess.run([postconf, "-d", "-h", "proxy_read_maps"], capture_output=True,
                                   text=True, timeout=10, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            found = ""
        if found:
            return found
    return _PROXY_READ_MAPS_FALLBACK


def postfix_files(ldap: LdapAccess, *, map_dir: str, lmtp: str = "lmtp:unix:private/dovecot-lmtp",
                  sasl_path: str = "private/auth", milter: str | None = DEFAULT_MILTER,
                  submission_listen: str = "submission", submission_tls: str = "encrypt",
                  chroot: bool = False, proxy_read_maps: str | None = None) -> list[Rendered]:
    """The five ldap_table maps plus the main.cf and master.cf fragments."""
    if submission_tls not in ("encrypt", "may", "none"):
        raise RenderError("submission TLS must be encrypt, may or none")
    tls_lines = ""
    if ldap.starttls:
        tls_lines += "start_tls = yes\n"
    if ldap.starttls or ldap.url.startswith("ldaps:"):
        tls_lines += "tls_require_cert = yes\n"
        if ldap.ca_file is not None:
            tls_lines += f"tls_ca_cert_file = {ldap.ca_file}\n"
    values = _ldap_values(ldap) | {
        "ldap_tls": tls_lines,
        "map_dir": _absolute(map_dir, "the map directory").rstrip("/") or "/",
        "lmtp": lmtp,
        "sasl_path": sasl_path,
        "milter": milter or "",
        "proxy_read_maps": proxy_read_maps or default_proxy_read_maps(),
        "submission_listen": submission_listen,
        "submission_tls": submission_tls,
        "tls_auth_only": "no" if submission_tls == "none" else "yes",
        "chroot": "y" if chroot else "n",
    }
    files = [Rendered(name, render_template(_template("postfix", name), values), 0o640,
                      "postfix") for name in POSTFIX_MAPS]
    for name in ("main.cf", "master.cf"):
        files.append(Rendered(f"{name}.fragment",
                              render_template(_template("postfix", name), values), 0o644))
    return files


# -- Dovecot -------------------------------------------------------------------


def _listener(kind: str, spec: str, user: str, group: str) -> str:
    """A Dovecot listener block for ``unix:/path`` or ``host:port``."""
    if spec.startswith("unix:"):
        path = _absolute(spec[5:], f"the {kind} socket")
        return (f"  unix_listener {path} {{\n    mode = 0600\n    user = {user}\n"
                f"    group = {group}\n  }}")
    host, sep, port = spec.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise RenderError(f"{kind} listener must be unix:/path or host:port, got {spec!r}")
    return (f"  inet_listener {kind}-mailgate {{\n    address = {host.strip('[]')}\n"
            f"    port = {int(port)}\n  }}")


def dovecot_files(ldap: LdapAccess, *, conf_dir: str, mail_root: str = "/var/vmail",
                  mail_user: str = "vmail", mail_group: str = "vmail",
                  lmtp_listen: str = "unix:/var/spool/postfix/private/dovecot-lmtp",
                  auth_listen: str = "unix:/var/spool/postfix/private/auth",
                  socket_user: str = "postfix", socket_group: str = "postfix") -> list[Rendered]:
    """The include file for dovecot.conf and the passdb/userdb LDAP args files."""
    tls_lines = ""
    if ldap.starttls:
        tls_lines += "tls = yes\n"
    if ldap.starttls or ldap.url.startswith("ldaps:"):
        tls_lines += "tls_require_cert = demand\n"
        if ldap.ca_file is not None:
            tls_lines += f"tls_ca_cert_file = {ldap.ca_file}\n"
    try:
        uid = pwd.getpwnam(mail_user).pw_uid
        first_valid_uid = (f"# The mail user's uid ({mail_user}): Dovecot refuses lower ones.\n"
                           f"first_valid_uid = {uid}\n")
    except KeyError:
        print(f"mailgate: warning: no user {mail_user!r} here; set first_valid_uid to its uid "
              "in the rendered mailgate.conf", file=sys.stderr)
        first_valid_uid = ""
    values = _ldap_values(ldap) | {
        "ldap_tls": tls_lines,
        "conf_dir": _absolute(conf_dir, "the Dovecot config directory").rstrip("/") or "/",
        "mail_root": _absolute(mail_root, "the mail root").rstrip("/") or "/",
        "mail_user": mail_user,
        "mail_group": mail_group,
        "first_valid_uid": first_valid_uid,
        "lmtp_listener": _listener("lmtp", lmtp_listen, socket_user, socket_group),
        "auth_listener": _listener("auth", auth_listen, socket_user, socket_group),
    }
    files = [Rendered(name, render_template(_template("dovecot", name), values), 0o600)
             for name in DOVECOT_ARGS]
    files.append(Rendered("mailgate.conf",
                          render_template(_template("dovecot", "mailgate.conf"), values), 0o644))
    return files


# -- writing -------------------------------------------------------------------


def write_files(out: Path, files: list[Rendered]) -> list[Path]:
    """Write each file atomically with its mode (and group, when it exists)."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for item in files:
        path = out / item.name
        tmp = path.with_name(f".{item.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, item.mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(item.text)
        os.chmod(tmp, item.mode)
        if item.group is not None and os.geteuid() == 0:
            # No such group on this machine: root only, which is safe.
            with contextlib.suppress(KeyError):
                os.chown(tmp, 0, grp.getgrnam(item.group).gr_gid)
        os.replace(tmp, path)
        written.append(path)
    return written


# -- command line --------------------------------------------------------------


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "render-config", help="write Postfix or Dovecot config that reads the directory",
        description=__doc__.split("\n\n")[0] if __doc__ else None)
    servers = parser.add_subparsers(dest="server", required=True)
    postfix = servers.add_parser("postfix", help="ldap_table maps, main.cf/master.cf fragments")
    dovecot = servers.add_parser("dovecot", help="passdb/userdb LDAP files, dovecot.conf include")
    for sub, service in ((postfix, "postfix"), (dovecot, "dovecot")):
        sub.add_argument("--out", type=Path, required=True, help="directory to write into")
        sub.add_argument("--ldap-url", help="default: MAILGATE_LDAP_URL, else the embedded URL")
        sub.add_argument("--base-dn", help="default: MAILGATE_LDAP_BASE_DN")
        sub.add_argument("--bind-dn", help=f"default: cn={service},ou=services,<base DN>")
        sub.add_argument("--password-file", type=Path,
                         help=f"file holding the bind password (default in embedded mode: "
                              f"<data dir>/secrets/ldap-{service}.password)")
        sub.add_argument("--ldap-starttls", action="store_true", default=None,
                         help="use StartTLS (default: MAILGATE_LDAP_STARTTLS)")
        sub.add_argument("--ldap-ca-file", type=Path, help="CA file for LDAP TLS")
        sub.set_defaults(func=_render, service=service)
    postfix.add_argument("--map-dir", help="absolute directory the maps are installed in, as "
                                           "main.cf names them (default: --out)")
    postfix.add_argument("--lmtp", default="lmtp:unix:private/dovecot-lmtp",
                         help="virtual_transport (default: %(default)s)")
    postfix.add_argument("--sasl-path", default="private/auth",
                         help="smtpd_sasl_path of Dovecot's auth service (default: %(default)s)")
    postfix.add_argument("--milter", default=DEFAULT_MILTER,
                         help="the mailgate milter as Postfix names it, or 'none' "
                              "(default: %(default)s)")
    postfix.add_argument("--submission-listen", default="submission",
                         help="master.cf service name of submission, e.g. 127.0.0.1:10587 "
                              "(default: %(default)s, port 587)")
    postfix.add_argument("--submission-tls", choices=("encrypt", "may", "none"),
                         default="encrypt", help="smtpd_tls_security_level on submission "
                                                 "(default: %(default)s)")
    postfix.add_argument("--chroot", action="store_true",
                         help="run the submission smtpd chrooted (Debian's default services are)")
    dovecot.add_argument("--conf-dir", help="absolute directory the files are installed in "
                                            "(default: --out)")
    dovecot.add_argument("--mail-root", default="/var/vmail", help="default: %(default)s")
    dovecot.add_argument("--mail-user", default="vmail", help="default: %(default)s")
    dovecot.add_argument("--mail-group", default="vmail", help="default: %(default)s")
    dovecot.add_argument("--lmtp-listen", default="unix:/var/spool/postfix/private/dovecot-lmtp",
                         help="unix:/path or host:port (default: %(default)s)")
    dovecot.add_argument("--auth-listen", default="unix:/var/spool/postfix/private/auth",
                         help="unix:/path or host:port for Postfix SASL (default: %(default)s)")


def ldap_access(settings: Settings, service: str, *, url: str | None = None,
                base_dn: str | None = None, bind_dn: str | None = None,
                password_file: Path | None = None, starttls: bool | None = None,
                ca_file: Path | None = None) -> LdapAccess:
    """Resolve how ``service`` binds: explicit values, else settings, else embedded slapd."""
    from .cli import embedded_slapd

    base = base_dn or settings.ldap_base_dn
    if password_file is None:
        if url is not None or not settings.embedded:
            raise RenderError("--password-file is required unless the directory is the "
                              "embedded one (MAILGATE_LDAP_URL unset)")
        slapd = embedded_slapd(settings.replace(ldap_base_dn=base))
        slapd.ensure_initialised()
        password_file = slapd.password_file(service)
    try:
        password = password_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise RenderError(f"cannot read {password_file}: {exc.strerror}") from None
    return LdapAccess(
        url=url or settings.ldap_url or settings.embedded_ldap_url,
        base_dn=base,
        bind_dn=bind_dn or f"cn={service},ou=services,{base}",
        password=password,
        starttls=settings.ldap_starttls if starttls is None else starttls,
        ca_file=ca_file or settings.ldap_ca_file,
    )


def _render(args: argparse.Namespace, settings: Settings) -> int:
    try:
        ldap = ldap_access(settings, args.service, url=args.ldap_url, base_dn=args.base_dn,
                           bind_dn=args.bind_dn, password_file=args.password_file,
                           starttls=args.ldap_starttls, ca_file=args.ldap_ca_file)
        out = args.out.resolve()
        if args.service == "postfix":
            files = postfix_files(
                ldap, map_dir=args.map_dir or str(out), lmtp=args.lmtp, sasl_path=args.sasl_path,
                milter=None if args.milter == "none" else args.milter,
                submission_listen=args.submission_listen, submission_tls=args.submission_tls,
                chroot=args.chroot)
        else:
            files = dovecot_files(
                ldap, conf_dir=args.conf_dir or str(out), mail_root=args.mail_root,
                mail_user=args.mail_user, mail_group=args.mail_group,
                lmtp_listen=args.lmtp_listen, auth_listen=args.auth_listen)
    except RenderError as exc:
        print(f"mailgate: {exc}", file=sys.stderr)
        return 2
    for path in write_files(out, files):
        print(path)
    return 0
