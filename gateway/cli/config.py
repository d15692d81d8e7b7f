"""``mailgate render-config postfix|dovecot|replica``: the mail servers' configuration,
and a local read-only replica of the directory for a mail host.

The files read the directory natively (Postfix ``ldap_table``, Dovecot
``passdb``/``userdb ldap``); :mod:`gateway.mailconfig` renders them and
:mod:`gateway.access` says how each service binds. Exit status 2 on a bad
option or an unknown password file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..access import service_access
from ..errors import AccessError, RenderError
from ..mailconfig import (
    DEFAULT_DOVEADM_LISTEN,
    DEFAULT_MILTER,
    DEFAULT_QUOTA_STATUS,
    DEFAULT_QUOTA_STATUS_LISTEN,
    dovecot_files,
    postfix_files,
    replica_files,
    write_files,
)
from ..settings import Settings


def add_commands(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "render-config", help="write Postfix or Dovecot config that reads the directory",
        description=__doc__.split("\n\n")[0] if __doc__ else None)
    servers = parser.add_subparsers(dest="server", required=True)
    postfix = servers.add_parser("postfix", help="ldap_table maps, main.cf/master.cf fragments")
    dovecot = servers.add_parser("dovecot", help="passdb/userdb LDAP files, dovecot.conf include")
    replica = servers.add_parser(
        "replica", help="replica.ldif: cn=config changes making a slapd (mailgate's config.ldif, "
                        "empty database) a read-only consumer of --provider")
    replica.add_argument("--provider", required=True,
                         help="the provider's ldap:// or ldaps:// URL (writes are referred there)")
    replica.add_argument("--rid", type=int, default=1, help="syncrepl replica ID (default 1)")
    replica.set_defaults(func=run, service="replicator")
    for sub, service in ((postfix, "postfix"), (dovecot, "dovecot"), (replica, "replicator")):
        sub.add_argument("--out", type=Path, required=True, help="directory to write into")
        if service == "replicator":
            sub.add_argument("--ldap-url", help=argparse.SUPPRESS)
        else:
            sub.add_argument("--ldap-url",
                             help="default: MAILGATE_LDAP_URL, else the embedded URL; on a "
                                  "mail host with a local replica: that replica, e.g. "
                                  "ldap://127.0.0.1:389 (docs/scaling.md)")
        sub.add_argument("--base-dn", help="default: MAILGATE_LDAP_BASE_DN")
        sub.add_argument("--bind-dn", help=f"default: cn={service},ou=services,<base DN>")
        sub.add_argument("--password-file", type=Path,
                         help=f"file holding the bind password (default in embedded mode: "
                              f"<data dir>/secrets/ldap-{service}.password)")
        sub.add_argument("--ldap-starttls", action="store_true", default=None,
                         help="use StartTLS (default: MAILGATE_LDAP_STARTTLS)")
        sub.add_argument("--ldap-ca-file", type=Path, help="CA file for LDAP TLS")
        sub.set_defaults(func=run, service=service)
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
    postfix.add_argument("--quota-status", default=DEFAULT_QUOTA_STATUS,
                         help="Dovecot's quota-status policy service as Postfix names it "
                              "(unix:path or inet:host:port), asked at RCPT, or 'none' "
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
    dovecot.add_argument("--quota-status-listen", default=DEFAULT_QUOTA_STATUS_LISTEN,
                         help="unix:/path or host:port of the quota policy service for "
                              "Postfix (default: %(default)s)")
    dovecot.add_argument("--doveadm-api-key-file", type=Path,
                         help="file holding the doveadm HTTP API key (the gateway's "
                              "MAILGATE_DOVECOT_API_KEY); without it: no HTTP API")
    dovecot.add_argument("--doveadm-listen", default=DEFAULT_DOVEADM_LISTEN,
                         help="host:port of the doveadm HTTP API (default: %(default)s)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        ldap = service_access(settings, args.service, url=args.ldap_url, base_dn=args.base_dn,
                              bind_dn=args.bind_dn, password_file=args.password_file,
                              starttls=args.ldap_starttls, ca_file=args.ldap_ca_file)
        out = args.out.resolve()
        if args.service == "replicator":
            files = replica_files(ldap, args.provider, args.rid)
        elif args.service == "postfix":
            files = postfix_files(
                ldap, map_dir=args.map_dir or str(out), lmtp=args.lmtp, sasl_path=args.sasl_path,
                milter=None if args.milter == "none" else args.milter,
                submission_listen=args.submission_listen, submission_tls=args.submission_tls,
                chroot=args.chroot,
                quota_status=None if args.quota_status == "none" else args.quota_status)
        else:
            files = dovecot_files(
                ldap, conf_dir=args.conf_dir or str(out), mail_root=args.mail_root,
                mail_user=args.mail_user, mail_group=args.mail_group,
                lmtp_listen=args.lmtp_listen, auth_listen=args.auth_listen,
                quota_status_listen=args.quota_status_listen,
                doveadm_listen=args.doveadm_listen,
                doveadm_api_key=_read_key(args.doveadm_api_key_file))
    except (AccessError, RenderError) as exc:
        print(f"mailgate: {exc}", file=sys.stderr)
        return 2
    for path in write_files(out, files):
        print(path)
    return 0


def _read_key(path: Path | None) -> str | None:
    """The doveadm API key from its file (stripped), None without a file."""
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise RenderError(f"cannot read the doveadm API key file {path}: "
                          f"{exc.__class__.__name__}") from None
