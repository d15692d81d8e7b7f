"""A directory made by the previous mailgate (its ldif/ from git, before the
SPEC.md section 7 schema) is upgraded in place when the new code starts it:
new attributes, classes, indexes and ACL lines usable, old data intact."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import resources
from gateway.directory import Directory
from gateway.mail import MailDirectory
from gateway.settings import Settings
from gateway.slapd import ManagedSlapd, free_port

REPO = Path(__file__).resolve().parent.parent
BASE = "dc=mail,dc=old"
PREVIOUS_FILES = ("config.ldif", "base.ldif", "schema/mailgate.ldif")


# The previous release's directory files, as git has them at the parent of the
# commit that added mailgateSubaddress. Kept here so that the test does not need
# the repository's history (a shallow clone has none); the test below checks
# them against git whenever the history is there.
PREVIOUS = Path(__file__).parent / "data" / "ldif-before-subaddress"


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                          check=False)


def previous_ldif(name: str) -> str:
    return (PREVIOUS / name).read_text(encoding="utf-8")


def test_the_kept_previous_files_are_the_ones_in_git() -> None:
    found = _git("log", "--format=%H", "--reverse", "-S", "mailgateSubaddress", "--",
                 "ldif/schema/mailgate.ldif")
    commits = found.stdout.split()
    if found.returncode != 0 or not commits:
        # A clone without history: nothing to compare with, and nothing depends
        # on it (the kept files are what the upgrade test uses).
        assert (PREVIOUS / "schema" / "mailgate.ldif").is_file()
        return
    for name in PREVIOUS_FILES:
        shown = _git("show", f"{commits[0]}^:ldif/{name}")
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout == previous_ldif(name), name


@pytest.fixture
def old_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ManagedSlapd]:
    """A managed directory built from the previous ldif/ files, with entries in it."""
    # The files a directory is made of; the replication templates came later
    # and are not part of a directory.
    old = {name: previous_ldif(name) if name in PREVIOUS_FILES else resources.ldif(name)
           for name in resources.LDIF_FILES}
    assert "mailgateSubaddress" not in old["schema/mailgate.ldif"]
    slapd = ManagedSlapd(tmp_path / "data", BASE, url=f"ldap://127.0.0.1:{free_port()}",
                         nosync=True, debug_level="filter")
    with monkeypatch.context() as patch:
        # Started while the previous files are in place: nothing to upgrade yet.
        patch.setattr(resources, "ldif", old.__getitem__)
        slapd.start()
    try:
        ldif = f"""\
dn: dc=example.com,ou=domains,{BASE}
objectClass: mailgateDomain
dc: example.com
mailgateOrigin: api

dn: mail=alice@example.com,dc=example.com,ou=domains,{BASE}
objectClass: mailgateAccount
mail: alice@example.com
userPassword: {{CRYPT}}$1$9hW1N3SC$J6vfo890zc50GC1jYHP211
mailgateSenderAllowed: example.org
mailgateSubmissionDisabled: TRUE
mailgateOrigin: api

dn: mail=office@example.com,dc=example.com,ou=domains,{BASE}
objectClass: mailgateAlias
mail: office@example.com
mailgateAliasTarget: alice@example.com
mailgateOrigin: sync
"""
        subprocess.run(["ldapadd", "-x", "-H", slapd.url, "-D", slapd.admin_dn,
                        "-w", slapd.password("admin")], input=ldif, text=True,
                       capture_output=True, check=True)
    finally:
        slapd.stop()
    yield slapd
    slapd.stop()


def config(slapd: ManagedSlapd) -> str:
    return subprocess.run(["slapcat", "-n0", "-F", str(slapd.config_dir), "-o",
                           "ldif-wrap=no"], capture_output=True, text=True, check=True).stdout


def test_a_previous_directory_is_upgraded_on_start(old_directory: ManagedSlapd,
                                                   tmp_path: Path) -> None:
    slapd = old_directory
    before = config(slapd)
    assert "mailgateSubaddress" not in before
    text, index = slapd.upgrade_changes()
    assert "add: olcAttributeTypes" in text and "mailgateForwarding" in text
    assert index == ["mailgateSubaddress", "mailgateQuota", "mailgateMaxAccounts",
                     "mailgateMaxAliases", "mailgateMaxQuota"]

    # The directory predates the replicator identity: no password file for it.
    slapd.password_file("replicator").unlink()
    slapd.start()          # upgrades first
    after = config(slapd)
    assert "olcDbIndex: mailgateSubaddress eq" in after
    assert "olcDbIndex: mailgateQuota eq" in after
    (quota_acl,) = [line for line in after.splitlines() if "attrs=mailgateQuota " in line]
    assert 'dn.exact="cn=dovecot,ou=services,dc=mail,dc=old" read' in quota_acl
    assert "mailgateSubmissionDisabled,mailgateSubaddress" in after   # the ACL line
    assert "NAME 'mailgateForwarding'" in after
    assert list((slapd.root).glob("slapd.d-before-upgrade-*.ldif"))   # a backup
    settings = Settings(ldap_url=slapd.url, ldap_base_dn=BASE,
                        ldap_password=slapd.password("gateway"), password_rounds=1000,
                        data_dir=tmp_path)
    directory = Directory(settings)
    try:
        mail = MailDirectory(directory, 1000)
        # Old data intact ...
        alice = mail.get_account("alice@example.com")
        assert alice.password == "$1$9hW1N3SC$J6vfo890zc50GC1jYHP211"
        assert alice.spoofing_whitelist == "example.org" and alice.submission_disabled
        assert mail.get_alias("office@example.com").to == "alice@example.com"
        assert directory.compare_password(
            f"mail=alice@example.com,dc=example.com,ou=domains,{BASE}", "x") is False
        # ... and the new attributes and classes usable on old entries.
        assert mail.set_subaddress_extension("alice@example.com", True).subaddress_extension
        mail.create_alias("alice", "example.com", "bob@example.org")
        assert mail.get_alias("alice@example.com").to == "bob@example.org"
        mail.create_account("office", "example.com", "pw", subaddress_extension=True)
        assert mail.get_account("office@example.com").subaddress_extension
        assert mail.get_alias("office@example.com").to == "alice@example.com"
        # The old domain entry had no counters: counted at its first change.
        domain = mail.domains.get("example.com")
        assert (domain.accounts, domain.aliases, domain.quota_allocated) == (2, 2, 0)
        assert mail.set_quota("alice@example.com", 1000).quota == 1000
        assert mail.domains.get("example.com").quota_allocated == 1000
    finally:
        directory.close()
    # The identity added since has a password and an entry, and binds.
    assert slapd.binds("replicator")
    # The new filters are indexed on the upgraded directory.
    subprocess.run(["ldapsearch", "-x", "-H", slapd.url, "-D", slapd.admin_dn, "-w",
                    slapd.password("admin"), "-b", f"ou=domains,{BASE}",
                    "(&(objectClass=mailgateAccount)(mailgateSubaddress=TRUE)"
                    "(mail=alice@example.com))", "1.1"], capture_output=True, check=True)
    assert "not indexed" not in slapd.log_path.read_text(errors="replace")
    slapd.stop()
    # A second start changes nothing.
    assert slapd.upgrade_changes() == ("", [])
