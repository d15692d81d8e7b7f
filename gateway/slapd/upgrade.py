"""Upgrading a directory made by an earlier mailgate, in place and offline.

On every start, before slapd runs, the stored cn=config is compared with the
shipped files and changed with ``slapmodify -n0``: new or changed schema
elements by OID, missing indexes (then ``slapindex`` for them), and the ACLs
when they differ. Entries are never touched; a copy of the old configuration
is kept beside it.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import subprocess
import time
from pathlib import Path

from .. import resources
from ..errors import SlapdError
from .tools import run, tool

_log = logging.getLogger("gateway.slapd")
MDB_DN = "olcDatabase={1}mdb,cn=config"
_ORDER = re.compile(r"^\{-?\d+\}")
_OID = re.compile(r"^\(\s*([0-9.]+)")


class Upgrading:
    """The upgrade half of :class:`gateway.slapd.ManagedSlapd` (a mixin)."""

    config_dir: Path
    root: Path
    url: str

    @property
    def admin_dn(self) -> str:
        raise NotImplementedError

    def password_file(self, name: str) -> Path:
        raise NotImplementedError

    def _template_values(self, ldif_dir: Path) -> dict[str, str]:
        raise NotImplementedError

    @staticmethod
    def render(name: str, values: dict[str, str]) -> str:
        raise NotImplementedError

    def _slapcat_config(self) -> dict[str, dict[str, list[str]]]:
        proc = subprocess.run([tool("slapcat"), "-n0", "-F", str(self.config_dir),
                               "-o", "ldif-wrap=no"], capture_output=True, check=False)
        if proc.returncode != 0:
            raise SlapdError(f"slapcat -n0 failed: {proc.stderr.decode(errors='replace')}")
        return _parse_ldif(proc.stdout.decode("utf-8"))

    def upgrade_changes(self) -> tuple[str, list[str]]:
        """(LDIF for ``slapmodify -n0``, attributes to index) that bring this
        directory's cn=config to the shipped files; ('', []) when it is current."""
        stored = self._slapcat_config()
        shipped_schema = _parse_ldif(resources.ldif("schema/mailgate.ldif"))
        (shipped_schema_entry,) = shipped_schema.values()
        schema_dn = next((dn for dn in stored if dn.lower().startswith("cn={")
                          and dn.lower().endswith("}mailgate,cn=schema,cn=config")), None)
        if schema_dn is None:
            raise SlapdError("the directory has no mailgate schema: not made by mailgate")
        changes: list[str] = []
        mods: list[str] = []
        deletes: list[str] = []
        for attr in ("olcAttributeTypes", "olcObjectClasses"):
            have = {_oid(v): v for v in stored[schema_dn].get(attr, [])}
            changed: list[str] = []
            for value in shipped_schema_entry.get(attr, []):
                old = have.get(_oid(value))
                if old is not None and _norm(_ORDER.sub("", old)) == _norm(value):
                    continue
                if old is not None:
                    changed.append(old)
                mods.append(f"add: {attr}\n{attr}: {_norm(value)}\n-")
            # Deleting the value {N} renumbers those after it: the highest go
            # first, so that each {N} still names the value read; classes
            # before the attribute types they use. All deletes come before the
            # adds, in the same atomic modify.
            changed.sort(key=_position, reverse=True)
            deletes[:0] = [f"delete: {attr}\n{attr}: {old}\n-" for old in changed]
        mods[:0] = deletes
        if mods:
            changes.append(f"dn: {schema_dn}\nchangetype: modify\n" + "\n".join(mods))
        values = self._template_values(ldif_dir=self.root / "rendered")
        rendered = self.render("config.ldif", values)
        block = next(b for b in rendered.split("\n\n") if f"dn: {MDB_DN}" in b)
        shipped_db = _parse_ldif(block)[MDB_DN]
        stored_db = stored.get(MDB_DN, {})
        mods = []
        have_index = {_norm(v).lower() for v in stored_db.get("olcDbIndex", [])}
        missing = [v for v in shipped_db.get("olcDbIndex", [])
                   if _norm(v).lower() not in have_index]
        if missing:
            mods.append("add: olcDbIndex\n" + "".join(f"olcDbIndex: {v}\n" for v in missing)
                        + "-")
        stored_acl = [_norm(_ORDER.sub("", v)) for v in stored_db.get("olcAccess", [])]
        shipped_acl = [_norm(_ORDER.sub("", v)) for v in shipped_db.get("olcAccess", [])]
        if stored_acl != shipped_acl:
            mods.append("replace: olcAccess\n" + "".join(f"olcAccess: {{{i}}}{v}\n"
                                                         for i, v in enumerate(shipped_acl))
                        + "-")
        if mods:
            changes.append(f"dn: {MDB_DN}\nchangetype: modify\n" + "\n".join(mods))
        index_attrs = [a for v in missing for a in v.split()[0].split(",")]
        return "\n\n".join(changes) + ("\n" if changes else ""), index_attrs

    def upgrade(self) -> bool:
        """Bring an existing directory's schema, indexes and ACLs to the shipped
        ones, offline (slapd must not run); True if anything changed."""
        text, index_attrs = self.upgrade_changes()
        if not text:
            return False
        _log.warning("upgrading the directory's cn=config in %s to this mailgate's schema, "
                    "indexes and ACLs", self.config_dir)
        backup = self.root / f"slapd.d-before-upgrade-{int(time.time())}.ldif"
        proc = subprocess.run([tool("slapcat"), "-n0", "-F", str(self.config_dir),
                               "-l", str(backup)], capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            os.chmod(backup, 0o600)
        proc = subprocess.run([tool("slapmodify"), "-n0", "-F", str(self.config_dir)],
                              input=text, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SlapdError(f"upgrading cn=config failed (slapmodify -n0):\n{proc.stderr}"
                             f"\nchanges:\n{text}")
        if index_attrs:
            run([tool("slapindex"), "-n1", "-q", "-F", str(self.config_dir),
                       *index_attrs])
        return True


    def add_missing_entries(self) -> None:
        """Add the entries of the shipped base.ldif that the directory lacks (a
        service identity newer than the directory), as the rootdn; existing
        entries are left as they are."""
        base = self.render("base.ldif", self._template_values(ldif_dir=self.root / "rendered"))
        proc = subprocess.run(
            [tool("ldapadd"), "-c", "-x", "-H", self.url, "-D", self.admin_dn,
             "-y", str(self.password_file("admin"))],
            input=base, capture_output=True, text=True, check=False)
        refused = [line for line in proc.stderr.splitlines()
                   if line.startswith("ldap_add:") and "Already exists (68)" not in line]
        if refused:
            raise SlapdError("adding the new base entries failed:\n" + proc.stderr)
        added = proc.stdout.count("adding new entry")
        if added:
            _log.warning("upgrade: added %d new base entries (service identities)",
                         added - proc.stderr.count("Already exists (68)"))


def _parse_ldif(text: str) -> dict[str, dict[str, list[str]]]:
    """DN -> attribute -> values of an LDIF text (content records, as slapcat and
    ldif/ write them: comments, folded lines, base64 values)."""
    records: dict[str, dict[str, list[str]]] = {}
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
        lines: list[str] = []
        for line in block.split("\n"):
            if line.startswith("#"):
                continue
            if line.startswith(" ") and lines:
                lines[-1] += line[1:]
            elif line:
                lines.append(line)
        attrs: dict[str, list[str]] = {}
        dn = None
        for line in lines:
            name, _, value = line.partition(":")
            if value.startswith(":"):
                value = base64.b64decode(value[1:].strip()).decode("utf-8")
            else:
                value = value.strip()
            if name.lower() == "dn":
                dn = value
            else:
                attrs.setdefault(name, []).append(value)
        if dn is not None:
            records[dn] = attrs
    return records


def _norm(value: str) -> str:
    return " ".join(value.split())


def _position(value: str) -> int:
    """N of a cn=config ordered value ``{N}...`` (-1 without one)."""
    found = _ORDER.match(value)
    return int(found.group(0)[1:-1]) if found else -1


def _oid(value: str) -> str:
    found = _OID.match(_ORDER.sub("", value))
    return found.group(1) if found else value
