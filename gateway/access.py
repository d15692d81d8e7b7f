"""How a process reaches the directory: the configured server or the embedded slapd.

Every command that needs LDAP (``serve``, ``token``, ``sync``, ``export``,
``milter``, ``render-config``) resolves it here, so the rules live once:

* With ``MAILGATE_LDAP_URL`` set, the settings say everything.
* Without it (embedded mode), the managed slapd under ``MAILGATE_DATA_DIR``
  is the directory: an instance already running (``mailgate serve`` or
  ``mailgate directory``) is used, otherwise one is started for the duration,
  and each service's password comes from ``<data dir>/secrets``.

Raises :class:`~gateway.errors.AccessError` when a service's way in cannot be
known, :class:`~gateway.errors.SlapdError` when the managed slapd fails.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import AccessError
from .settings import Settings
from .slapd import ManagedSlapd, listening


@dataclass(frozen=True)
class LdapAccess:
    """How one service (postfix, dovecot, milter, ...) binds to the directory."""

    url: str
    base_dn: str
    bind_dn: str
    password: str
    starttls: bool = False
    ca_file: Path | None = None


def embedded_slapd(settings: Settings) -> ManagedSlapd:
    """The managed slapd of ``settings``'s data dir (not started)."""
    return ManagedSlapd(settings.data_dir, settings.ldap_base_dn, url=settings.embedded_ldap_url)


@contextlib.contextmanager
def reachable(settings: Settings, keep_running: bool = False) \
        -> Iterator[tuple[Settings, ManagedSlapd | None]]:
    """Settings with a reachable LDAP server, and the slapd started for it (or None).

    In embedded mode an already running embedded slapd is used (only one of
    this data dir: its pid file and a bind with our own credentials prove it;
    anything else on the port is refused with AccessError); otherwise one is
    started and, unless ``keep_running``, stopped again on exit.
    """
    if not settings.embedded:
        yield settings, None
        return
    slapd = embedded_slapd(settings)
    slapd.ensure_initialised()
    started = False
    if not listening(settings.embedded_ldap_url):
        slapd.start()
        started = True
    elif not slapd.owns_listener():
        raise AccessError(
            f"MAILGATE_EMBEDDED_LDAP_URL: {settings.embedded_ldap_url} is taken by another "
            f"server, not the directory of {settings.data_dir} (no slapd of ours runs there, "
            "or it refuses our credentials): stop it, or set MAILGATE_EMBEDDED_LDAP_URL to a "
            "free port")
    resolved = settings.replace(ldap_url=settings.embedded_ldap_url,
                                ldap_password=slapd.password("gateway"))
    try:
        yield resolved, slapd if started else None
    finally:
        if started and not keep_running:
            slapd.stop()


def service_access(settings: Settings, service: str, *, url: str | None = None,
                   base_dn: str | None = None, bind_dn: str | None = None,
                   password_file: Path | None = None, starttls: bool | None = None,
                   ca_file: Path | None = None) -> LdapAccess:
    """How ``service`` binds: explicit values, else the settings, else the embedded slapd."""
    base = base_dn or settings.ldap_base_dn
    if password_file is None:
        if url is not None or not settings.embedded:
            raise AccessError("--password-file is required unless the directory is the "
                              "embedded one (MAILGATE_LDAP_URL unset)")
        slapd = embedded_slapd(settings.replace(ldap_base_dn=base))
        slapd.ensure_initialised()
        password_file = slapd.password_file(service)
    try:
        password = password_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise AccessError(f"cannot read {password_file}: {exc.strerror}") from None
    return LdapAccess(
        url=url or settings.ldap_url or settings.embedded_ldap_url,
        base_dn=base,
        bind_dn=bind_dn or f"cn={service},ou=services,{base}",
        password=password,
        starttls=settings.ldap_starttls if starttls is None else starttls,
        ca_file=ca_file or settings.ldap_ca_file,
    )


def as_settings(settings: Settings, access: LdapAccess) -> Settings:
    """``settings`` that bind as ``access`` says (for a service's own process)."""
    return settings.replace(ldap_url=access.url, ldap_base_dn=access.base_dn,
                            ldap_bind_dn=access.bind_dn, ldap_password=access.password,
                            ldap_starttls=access.starttls, ldap_ca_file=access.ca_file)


def admin_token(settings: Settings) -> tuple[str, Path | None]:
    """The configured admin token, or the embedded one (made once, mode 0600) and its file."""
    if settings.admin_token:
        return settings.admin_token, None
    path = settings.data_dir / "admin-token"
    if not path.is_file():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(secrets.token_urlsafe(32))
    return path.read_text(encoding="utf-8").strip(), path
