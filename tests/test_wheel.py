"""A wheel installed outside the checkout runs every command that reads package data.

The wheel is built from a copy of the checkout (``python -m build
--no-isolation``, offline) and installed, without dependencies, into a fresh
virtualenv; the dependencies come from the test's own environment through a
``.pth`` line, so nothing is downloaded. Every command then runs with the
working directory outside any checkout: ``ldif/`` and the Postfix and Dovecot
templates must come from inside the installed package.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from gateway.slapd import free_port, listening

from tests.support.process import terminate
from tests.support.wait import wait_until

ROOT = Path(__file__).resolve().parent.parent
BASE_DN = "dc=wheel,dc=test"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin directory of a fresh virtualenv with the mailgate wheel installed."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "var", "build", "*.egg-info", "__pycache__", ".*_cache", "dist"))
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir",
                    str(work / "dist"), str(source)], check=True, capture_output=True,
                   timeout=300)
    wheel, = (work / "dist").glob("mailgate-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    site = Path(subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True).stdout.strip())
    # The test environment's packages, but not its editable mailgate: a path
    # added by a .pth line is searched, its own .pth files are not run.
    (site / "zz_test_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                    "--no-deps", "--no-index", str(wheel)], check=True, timeout=300)
    return venv / "bin"


def _env(data: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MAILGATE_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(MAILGATE_DATA_DIR=str(data), MAILGATE_LDAP_BASE_DN=BASE_DN,
               MAILGATE_EMBEDDED_LDAP_URL=f"ldap://127.0.0.1:{free_port()}",
               MAILGATE_PASSWORD_ROUNDS="1000", **extra)
    return env


def _run(bin_dir: Path, cwd: Path, env: dict[str, str], *args: str) \
        -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(bin_dir / "mailgate"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_package_is_the_installed_one(installed: Path, tmp_path: Path) -> None:
    found = subprocess.run([str(installed / "python"), "-c",
                            "import gateway, gateway.resources as r; print(gateway.__file__); "
                            "print(len(r.ldif('schema/mailgate.ldif')))"],
                           cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True,
                           check=True)
    where, size = found.stdout.split()
    assert Path(where).is_relative_to(installed.parent), where
    assert int(size) == len((ROOT / "ldif" / "schema" / "mailgate.ldif").read_text())
    assert not (Path(where).parent / "data" / "ldif").is_symlink()   # files, not links


def test_render_config_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    env = _env(tmp_path / "var")
    for server, expect in (("postfix", "ldap-mailboxes.cf"),
                           ("dovecot", "dovecot-ldap-passdb.conf.ext")):
        out = tmp_path / server
        done = _run(installed, tmp_path, env, "render-config", server, "--out", str(out))
        assert done.returncode == 0, done.stderr
        text = (out / expect).read_text()
        assert BASE_DN in text and f"cn={server},ou=services,{BASE_DN}" in text


@pytest.fixture
def process() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        terminate(proc)


def test_directory_from_the_wheel(installed: Path, tmp_path: Path,
                                  process: list[subprocess.Popen[str]]) -> None:
    env = _env(tmp_path / "var")
    url = env["MAILGATE_EMBEDDED_LDAP_URL"]
    proc = subprocess.Popen([str(installed / "mailgate"), "directory"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    process.append(proc)
    wait_until(lambda: listening(url) or proc.poll() is not None, "slapd to listen",
               timeout=30, interval=0.1)
    assert proc.poll() is None
    secret = tmp_path / "var" / "secrets" / "ldap-gateway.password"
    whoami = subprocess.run(["ldapwhoami", "-x", "-H", url, "-D",
                             f"cn=gateway,ou=services,{BASE_DN}", "-y", str(secret)],
                            capture_output=True, text=True, timeout=30, check=False)
    assert whoami.returncode == 0, whoami.stderr
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    assert "created the directory" in output


def test_serve_from_the_wheel(installed: Path, tmp_path: Path,
                              process: list[subprocess.Popen[str]]) -> None:
    port = free_port()
    env = _env(tmp_path / "var", MAILGATE_LISTEN=f"127.0.0.1:{port}", MAILGATE_WORKERS="1")
    proc = subprocess.Popen([str(installed / "mailgate"), "serve"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    process.append(proc)
    url = f"https://127.0.0.1:{port}"
    wait_until(lambda: listening(url) or proc.poll() is not None, "mailgate serve to listen",
               timeout=60, interval=0.1)
    assert proc.poll() is None
    cert = str(tmp_path / "var" / "tls" / "cert.pem")
    token = (tmp_path / "var" / "admin-token").read_text().strip()
    created = requests.post(f"{url}/mail/account/", verify=cert, timeout=30,
                            auth=("", token),
                            json={"name": "wheel", "domain": "example.com", "password": "pw1"})
    assert created.status_code == 201, created.text
    assert requests.get(f"{url}/docs/", verify=cert, timeout=30).status_code == 200
