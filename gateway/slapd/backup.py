"""Backing up and restoring the managed directory: configuration, data and secrets."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import SlapdError
from .tools import run, tool, write_secret


class BackingUp:
    """The backup half of :class:`gateway.slapd.ManagedSlapd` (a mixin)."""

    base_dn: str
    data_dir: Path
    root: Path
    config_dir: Path
    db_dir: Path
    run_dir: Path
    secrets_dir: Path
    _proc: Any

    @property
    def initialised(self) -> bool:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        raise NotImplementedError

    def running_pid(self) -> int | None:
        raise NotImplementedError

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
        slapcat = tool("slapcat")
        manifest: dict[str, object] = {
            "format": 1, "base_dn": self.base_dn, "root": str(self.root),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        with tempfile.TemporaryDirectory(prefix="mailgate-backup-") as tmp:
            work = Path(tmp)
            for number, name in ((0, "config.ldif"), (1, "data.ldif")):
                run([slapcat, "-n", str(number), "-F", str(self.config_dir),
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
        slapadd = tool("slapadd")
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
                run([slapadd, "-n0", "-F", str(self.config_dir),
                           "-l", str(work / "config.ldif")])
                run([slapadd, "-n1", "-q", "-F", str(self.config_dir),
                           "-l", str(work / "data.ldif")])
                self.secrets_dir.mkdir(parents=True, exist_ok=True)
                os.chmod(self.secrets_dir, 0o700)
                for secret in (work / "secrets").iterdir():
                    write_secret(self.secrets_dir / secret.name,
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
