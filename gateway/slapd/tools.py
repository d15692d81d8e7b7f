"""What the managed slapd's pieces share: OpenLDAP's tools and secret files."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from ..errors import SlapdError


def tool(name: str) -> str:
    """The path of an OpenLDAP tool; SlapdError naming the packages if it is missing."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")
    if not found:
        raise SlapdError(f"{name} not found: install the Debian packages slapd and ldap-utils "
                         "(make run and make test do it)")
    return found


def run(cmd: list[str]) -> None:
    """Run a tool; SlapdError with its output if it fails."""
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SlapdError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                         f"{proc.stdout}{proc.stderr}")


def write_secret(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value)  # no newline: ldapsearch -y reads the file verbatim
