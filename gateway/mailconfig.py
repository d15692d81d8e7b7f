"""Render the Postfix and Dovecot configuration that reads the directory natively.

    mailgate render-config postfix --out DIR [options]
    mailgate render-config dovecot --out DIR [options]
    mailgate render-config replica --provider URL --out DIR [options]

The templates live in ``deploy/postfix`` and ``deploy/dovecot`` (``*.in`` files
with ``{{name}}`` placeholders, shipped in the package: :mod:`gateway.resources`);
they are filled with the LDAP URL, the
base DN, the service identity (``cn=postfix`` / ``cn=dovecot``) and its password,
read from a password file. Neither ``ldap_table(5)`` nor Dovecot's LDAP args
file can read a password from another file, so the rendered map and args files
hold it and are written mode 0640 (group postfix) and 0600.

How each service reaches the directory is resolved by :mod:`gateway.access`.
"""

from __future__ import annotations

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

from . import resources
from .access import LdapAccess
from .errors import RenderError

__all__ = [
    "LdapAccess",
    "RenderError",
    "Rendered",
    "dovecot_files",
    "postfix_files",
    "replica_files",
    "write_files",
]

POSTFIX_MAPS = ("ldap-domains.cf", "ldap-mailboxes.cf", "ldap-aliases.cf", "ldap-accounts.cf",
                "ldap-subaddress.cf", "ldap-catchall.cf", "ldap-sender-login.cf",
                "ldap-submission-disabled.cf")
POSTFIX_TABLES = ("subaddress.pcre",)   # no password: world-readable
DOVECOT_ARGS = ("dovecot-ldap-passdb.conf.ext", "dovecot-ldap-userdb.conf.ext")
DOVEADM_KEY_FILE = "doveadm-api.conf.ext"
DEFAULT_MILTER = "inet:127.0.0.1:10031"
DEFAULT_QUOTA_STATUS = "unix:private/quota-status"            # as Postfix names it
# Postfix asks Dovecot's quota-status at RCPT (docs/mail-servers.md). When it
# cannot answer within the timeout, the recipient is deferred (451: the sender
# retries), never accepted unchecked and never refused for good.
QUOTA_POLICY = ("check_policy_service {{ {service}, timeout=10s,\n"
                "    {{ default_action = 451 4.3.0 Mailbox quota check unavailable, "
                "try again later }} }}")
DEFAULT_QUOTA_STATUS_LISTEN = "unix:/var/spool/postfix/private/quota-status"
DEFAULT_DOVEADM_LISTEN = "127.0.0.1:8080"
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
    return resources.template(service, name)


def _check_password(password: str, what: str = "the LDAP password") -> str:
    if not password or any(c.isspace() or ord(c) < 32 or c == "#" for c in password):
        raise RenderError(f"{what} must be non-empty, without spaces, control "
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
                  chroot: bool = False, proxy_read_maps: str | None = None,
                  quota_status: str | None = DEFAULT_QUOTA_STATUS) -> list[Rendered]:
    """The ldap_table maps, the sub-address pcre table, the main.cf and master.cf
    fragments. ``quota_status``: Dovecot's quota-status service as Postfix names
    it (``unix:private/quota-status``, ``inet:host:port``), None for no quota check."""
    if submission_tls not in ("encrypt", "may", "none"):
        raise RenderError("submission TLS must be encrypt, may or none")
    if quota_status is not None and (
            not re.fullmatch(r"(unix:[^\s,{}]+|inet:[^\s,{}]+:\d+)", quota_status)):
        raise RenderError("the quota-status service must be unix:path or inet:host:port, "
                          f"got {quota_status!r}")
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
        "quota_policy": QUOTA_POLICY.format(service=quota_status) if quota_status else "",
    }
    files = [Rendered(name, render_template(_template("postfix", name), values), 0o640,
                      "postfix") for name in POSTFIX_MAPS]
    for name in POSTFIX_TABLES:
        files.append(Rendered(name, render_template(_template("postfix", name), values), 0o644))
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
    return _inet_listener(f"{kind}-mailgate", kind, spec)


def _inet_listener(name: str, kind: str, spec: str) -> str:
    host, sep, port = spec.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise RenderError(f"{kind} listener must be unix:/path or host:port, got {spec!r}")
    return (f"  inet_listener {name} {{\n    address = {host.strip('[]')}\n"
            f"    port = {int(port)}\n  }}")


def _doveadm_http(listen: str, api_key: str | None, conf_dir: str) -> str:
    """The doveadm HTTP API: its key file included and a ``host:port`` listener
    named ``http`` (the name makes it speak HTTP), or a note that it is off."""
    if api_key is None:
        return ("# No doveadm HTTP API (render with --doveadm-api-key-file to have one): the\n"
                "# gateway's usage routes answer 503 without it.\n")
    _check_password(api_key, "the doveadm API key")
    block = _inet_listener("http", "doveadm HTTP", listen)
    return ("# doveadm's HTTP API: the gateway reads mailbox usage here (quotaGet; its\n"
            "# MAILGATE_DOVECOT_URL and MAILGATE_DOVECOT_API_KEY). The key is in a file of\n"
            "# its own, mode 0600. Keep the listener off the Internet: the key allows\n"
            "# every doveadm command.\n"
            f"!include {conf_dir}/{DOVEADM_KEY_FILE}\n"
            f"service doveadm {{\n{block}\n}}\n")


def dovecot_files(ldap: LdapAccess, *, conf_dir: str, mail_root: str = "/var/vmail",
                  mail_user: str = "vmail", mail_group: str = "vmail",
                  lmtp_listen: str = "unix:/var/spool/postfix/private/dovecot-lmtp",
                  auth_listen: str = "unix:/var/spool/postfix/private/auth",
                  quota_status_listen: str = DEFAULT_QUOTA_STATUS_LISTEN,
                  doveadm_listen: str = DEFAULT_DOVEADM_LISTEN,
                  doveadm_api_key: str | None = None,
                  socket_user: str = "postfix", socket_group: str = "postfix") -> list[Rendered]:
    """The include file for dovecot.conf, the passdb/userdb LDAP args files and,
    with ``doveadm_api_key``, the doveadm HTTP API's key file and listener."""
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
    conf_dir = _absolute(conf_dir, "the Dovecot config directory").rstrip("/") or "/"
    values = _ldap_values(ldap) | {
        "ldap_tls": tls_lines,
        "conf_dir": conf_dir,
        "mail_root": _absolute(mail_root, "the mail root").rstrip("/") or "/",
        "mail_user": mail_user,
        "mail_group": mail_group,
        "first_valid_uid": first_valid_uid,
        "lmtp_listener": _listener("lmtp", lmtp_listen, socket_user, socket_group),
        "auth_listener": _listener("auth", auth_listen, socket_user, socket_group),
        "quota_status_listener": _listener("quota-status", quota_status_listen, socket_user,
                                           socket_group),
        "doveadm_http": _doveadm_http(doveadm_listen, doveadm_api_key, conf_dir),
    }
    files = [Rendered(name, render_template(_template("dovecot", name), values), 0o600)
             for name in DOVECOT_ARGS]
    if doveadm_api_key is not None:
        files.append(Rendered(DOVEADM_KEY_FILE, render_template(
            _template("dovecot", DOVEADM_KEY_FILE), {"doveadm_api_key": doveadm_api_key}),
            0o600))
    files.append(Rendered("mailgate.conf",
                          render_template(_template("dovecot", "mailgate.conf"), values), 0o644))
    return files


# -- writing -------------------------------------------------------------------


# -- a local read-only replica (OpenLDAP syncrepl consumer) -----------------------


def replica_files(replicator: LdapAccess, provider_url: str, rid: int = 1) -> list[Rendered]:
    """``replica.ldif``: the cn=config changes that make a slapd loaded with
    mailgate's config.ldif (and an empty database) a read-only consumer of
    ``provider_url`` (ldif/replica.ldif; gateway/replication.py). Mode 0600: it
    holds the replicator's password."""
    from .replication import render_replica

    text = render_replica(replicator.base_dn, provider_url, replicator.password, rid=rid,
                          starttls=replicator.starttls, ca_file=replicator.ca_file)
    return [Rendered("replica.ldif", text, 0o600)]


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
