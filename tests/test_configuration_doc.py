"""docs/configuration.md is generated from gateway/settings.py and says what from_env does."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from gateway import configdoc, settings
from gateway.settings import HELP, ConfigError, Settings

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "configuration.md"


def test_the_committed_file_is_what_the_code_generates() -> None:
    assert DOC.read_text(encoding="utf-8") == configdoc.render(), (
        "docs/configuration.md is out of date: run "
        ".venv/bin/python -m gateway.configdoc -o docs/configuration.md")
    assert configdoc.main(["--check", str(DOC)]) == 0


def test_check_reports_a_drifted_file(tmp_path: Path) -> None:
    stale = tmp_path / "configuration.md"
    stale.write_text(configdoc.render().replace("LDAP connections", "Connections"))
    assert configdoc.main(["--check", str(stale)]) == 1


def test_every_setting_and_every_variable_read_is_documented() -> None:
    fields = {f.name for f in dataclasses.fields(Settings)}
    assert set(HELP) == fields
    source = Path(settings.__file__).read_text(encoding="utf-8")
    read = set(re.findall(r'env\.get_\w+\(\s*"([A-Z_]+)"', source))
    assert read, "no env.get_*(...) calls found"
    assert {name.lower() for name in read} <= fields, read
    text = DOC.read_text(encoding="utf-8")
    for name in read:
        assert f"`MAILGATE_{name}`" in text


@pytest.mark.parametrize("name", sorted(n for n, h in HELP.items() if h.low is not None))
def test_documented_ranges_are_the_enforced_ones(name: str) -> None:
    doc = HELP[name]
    assert doc.low is not None and doc.high is not None
    variable = name.upper()
    integer = isinstance(Settings.__dataclass_fields__[name].default, int)
    step = 1 if integer else 0.01

    def value(number: float) -> str:
        return str(int(number)) if integer else repr(number)

    # The smallest JSON timeout, so MAILGATE_JSON_TOTAL_TIMEOUT's own range shows.
    base = {"MAILGATE_JSON_TIMEOUT": "0.1"}
    for inside in (doc.low, doc.high):
        Settings.from_env({**base, f"MAILGATE_{variable}": value(inside)})
    for outside in (doc.low - step, doc.high + step):
        with pytest.raises(ConfigError) as refused:
            Settings.from_env({**base, f"MAILGATE_{variable}": value(outside)})
        assert refused.value.variable == f"MAILGATE_{variable}"


@pytest.mark.parametrize("name", sorted(n for n, h in HELP.items() if h.values))
def test_documented_values_are_accepted(name: str) -> None:
    for value in HELP[name].values:
        Settings.from_env({f"MAILGATE_{name.upper()}": value})
    with pytest.raises(ConfigError):
        Settings.from_env({f"MAILGATE_{name.upper()}": "surely-not-valid"})
