"""Files that ship inside the package: the directory's LDIF and the mail servers' templates.

The repository keeps them where operators look for them: ``ldif/`` and
``deploy/postfix``, ``deploy/dovecot``. ``gateway/data/`` holds links to those
folders, and the build follows the links (``[tool.setuptools.package-data]``
in ``pyproject.toml``), so a wheel carries the files themselves and a
checkout reads the originals: one copy, never a second one kept by hand.
Everything reads them through :mod:`importlib.resources`, so an installed
wheel and an editable checkout behave the same.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable

LDIF_FILES = ("config.ldif", "base.ldif", "schema/mailgate.ldif", "replica.ldif",
              "provider-pair.ldif")


def _data() -> Traversable:
    return files(__package__ or "gateway") / "data"


def _read(path: Traversable, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} is missing from the installed package "
                                f"({path}); reinstall mailgate") from None


def ldif(name: str) -> str:
    """The text of one of :data:`LDIF_FILES` (``config.ldif`` and ``base.ldif`` are templates)."""
    if name not in LDIF_FILES:
        raise ValueError(f"no LDIF file {name!r}")
    return _read(_data() / "ldif" / name, f"ldif/{name}")


def template(service: str, name: str) -> str:
    """The text of ``deploy/<service>/<name>.in`` (``service``: postfix or dovecot)."""
    if service not in ("postfix", "dovecot") or "/" in name:
        raise ValueError(f"no template {service}/{name}")
    return _read(_data() / service / f"{name}.in", f"deploy/{service}/{name}.in")
