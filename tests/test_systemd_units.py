"""deploy/systemd/: every unit passes `systemd-analyze verify` without a warning.

systemd-analyze comes from Debian's systemd package; when it is missing,
deploy/install-system-packages.sh (which `make test` runs anyway) installs it.
ExecStart= names /opt/mailgate/venv/bin/mailgate, which verify wants to be
executable: the copies checked here point at this environment's mailgate.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT_DIR = ROOT / "deploy" / "systemd"
INSTALLED = "/opt/mailgate/venv/bin/mailgate"
SERVICES = sorted(p.name for p in UNIT_DIR.glob("*.service"))
HARDENING = ("User=mailgate", "NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=",
             "ProtectHome=yes", "PrivateTmp=yes", "CapabilityBoundingSet=\n")


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        subprocess.run(["bash", str(ROOT / "deploy" / "install-system-packages.sh")],
                       check=True, timeout=900)
        found = shutil.which("systemd-analyze")
    assert found, "systemd-analyze missing after deploy/install-system-packages.sh"
    return found


def test_the_units_are_there() -> None:
    assert SERVICES == ["mailgate-directory.service", "mailgate-milter.service",
                        "mailgate-sync.service", "mailgate.service"]
    assert (UNIT_DIR / "mailgate-sync.timer").is_file()


@pytest.mark.parametrize("name", SERVICES)
def test_hardening(name: str) -> None:
    text = (UNIT_DIR / name).read_text(encoding="utf-8")
    for option in HARDENING:
        assert option in text, f"{name}: no {option.strip()}"
    assert "EnvironmentFile=" in text
    assert f"ExecStart={INSTALLED} " in text


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = systemd_analyze()
    mailgate = Path(sys.executable).parent / "mailgate"
    if not mailgate.exists():
        mailgate = Path(shutil.which("true") or "/bin/true")
    for unit in sorted(UNIT_DIR.glob("*.service")) + sorted(UNIT_DIR.glob("*.timer")):
        text = unit.read_text(encoding="utf-8").replace(INSTALLED, str(mailgate))
        (tmp_path / unit.name).write_text(text, encoding="utf-8")
    units = sorted(str(p) for p in tmp_path.iterdir())
    proc = subprocess.run([analyze, "verify", *units], capture_output=True, text=True,
                          timeout=120, check=False, cwd=tmp_path)
    output = proc.stdout + proc.stderr
    ours = [line for line in output.splitlines() if str(tmp_path) in line or "mailgate" in line]
    assert proc.returncode == 0, output
    assert not ours, "\n".join(ours)  # warnings such as "Unknown key ..., ignoring"
