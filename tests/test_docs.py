"""The documentation stays inside the repository, and tells one version and every route."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import gateway
from gateway.version import __version__

from tests.support.api import Client

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s*\[[^\]\n]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)   # https:, mailto:, ...


def links(text: str) -> list[str]:
    prose = INLINE_CODE.sub("", FENCE.sub("", text))
    return LINK.findall(prose) + REFERENCE.findall(prose)


def broken_links(path: Path, text: str | None = None) -> list[str]:
    """Relative links of ``path`` (or of ``text`` as if it were there) that go wrong."""
    problems = []
    text = path.read_text(encoding="utf-8") if text is None else text
    for target in links(text):
        if EXTERNAL.match(target) or target.startswith("#"):
            continue
        file_part = target.split("#", 1)[0].split("?", 1)[0]
        if file_part.startswith("/"):
            problems.append(f"{target}: absolute path")
            continue
        resolved = (path.parent / file_part).resolve()
        if not resolved.is_relative_to(ROOT):
            problems.append(f"{target}: leaves the repository")
        elif not resolved.exists():
            problems.append(f"{target}: no such file")
    return problems


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_link_leaves_the_repository_or_points_nowhere(path: Path) -> None:
    assert broken_links(path) == []


def test_the_link_check_catches_what_it_should() -> None:
    text = ("[a](../../shared/SPEC.md) [b](missing.md#x) [c](/etc/passwd) [d](api.md#lists)\n"
            "[e]: ../README.md\n[f](https://example.com/x) `[g](nowhere.md)`\n"
            "```\n[h](nowhere.md)\n```\n")
    assert links(text) == ["../../shared/SPEC.md", "missing.md#x", "/etc/passwd",
                           "api.md#lists", "https://example.com/x", "../README.md"]
    # As if the page lived in docs/: the good links pass, three are caught.
    assert broken_links(ROOT / "docs" / "probe.md", text) == [
        "../../shared/SPEC.md: leaves the repository", "missing.md#x: no such file",
        "/etc/passwd: absolute path"]


def test_one_version_everywhere(client: Client) -> None:
    assert gateway.__version__ == __version__
    assert importlib.metadata.version("mailgate") == __version__
    shown = subprocess.run([sys.executable, "-m", "gateway.cli", "--version"],
                           capture_output=True, text=True, timeout=60, check=True)
    assert shown.stdout.strip() == f"mailgate {__version__}"
    spec = client.get("/swagger.json").get_json()  # type: ignore[operator]
    assert spec["info"]["version"] == __version__
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "gateway.version.__version__"}


def test_the_api_reference_has_a_curl_example_for_every_route(client: Client) -> None:
    spec = client.get("/swagger.json").get_json()  # type: ignore[operator]
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    missing = []
    for path, operations in spec["paths"].items():
        route = re.sub(r"\{[^}]+\}", "{id}", path)
        sample = re.sub(r"\{[^}]+\}", "[^/ ]+", re.escape(path).replace(r"\{", "{")
                        .replace(r"\}", "}"))
        for method in operations:
            if method == "parameters":
                continue
            heading = f"`{method.upper()} {route}`"
            if heading not in text:
                missing.append(f"{heading}: no section")
            # GET and POST (with a body) need no -X; the path ends the word.
            verb = "" if method in ("get", "post") else f"-X {method.upper()} "
            if not re.search(rf"curl [^\n]*{re.escape(verb)}\$G{sample}([\s\"?]|$)", text,
                             re.MULTILINE):
                missing.append(f"{heading}: no curl example")
    assert missing == []


def test_the_license_matches_the_package_metadata() -> None:
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert license_text.startswith("MIT License")
    assert "Copyright (c) the mailgate authors" in license_text
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["license"] == "MIT"
