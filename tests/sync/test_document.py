"""Validation of Basic JSON documents (pure: no LDAP, no network)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from passlib.hash import sha256_crypt

from gateway.sync.document import build_desired
from gateway.sync.jsonstream import parse_document
from gateway.sync.records import DocumentError, WantAccount, WantAlias, WantBoth

from tests.support.sync import BOB_HASH, CHEAP_HASH, SEED_HASH, spec_document

BCRYPT = "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy"
YESCRYPT = "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7"


def desired(*documents: Any) -> Any:
    return build_desired([(f"doc{i}", parse_document(json.dumps(d).encode(), f"doc{i}"))
                          for i, d in enumerate(documents)])


def reasons(result: Any) -> dict[tuple[str, str], str]:
    return {(s.domain, s.name): s.reason for s in result.skipped}


def test_the_spec_document() -> None:
    result = desired(spec_document())
    assert result.domains == {"example.com"}
    assert result.skipped == []
    alice = result.entries["alice@example.com"]
    assert isinstance(alice, WantAccount) and alice.password == SEED_HASH
    assert alice.whitelist is None and alice.submission_disabled is None  # not stated
    assert result.entries["bob@example.com"].password == BOB_HASH  # type: ignore[union-attr]
    office = result.entries["office@example.com"]
    assert isinstance(office, WantAlias)
    assert office.targets == ("alice@example.com", "bob@example.com")


@pytest.mark.parametrize("crypt_hash", [
    SEED_HASH, BOB_HASH, CHEAP_HASH, "$6$saltsalt$" + "a" * 86,
    sha256_crypt.using(rounds=5000).hash("x"), sha256_crypt.using(rounds=10_000).hash("x"),
    BCRYPT, BCRYPT.replace("$2a$", "$2b$"), BCRYPT.replace("$2a$", "$2y$"), YESCRYPT,
])
def test_crypt_hashes_are_accepted(crypt_hash: str) -> None:
    result = desired({"example.com": {"account": [{"name": "a", "password": crypt_hash}]}})
    assert result.entries["a@example.com"].password == crypt_hash  # type: ignore[union-attr]


@pytest.mark.parametrize("password", [
    "secret", "", None, 42, "{CRYPT}" + SEED_HASH, "{SSHA}abcdefgh", "$1$short$x",
])
def test_anything_else_is_refused_and_never_quoted(password: object) -> None:
    result = desired({"example.com": {"account": [{"name": "a", "password": password}]}})
    assert result.entries == {}
    assert result.protected == {"a@example.com"}
    (skip,) = result.skipped
    assert skip.domain == "example.com" and skip.name == "a"
    assert skip.reason.startswith("password:")
    if isinstance(password, str) and password:
        assert password not in skip.reason


def test_names_are_normalised_like_the_api() -> None:
    result = desired({"EXAMPLE.com": {"account": [
        {"name": "Alice.Smith", "password": CHEAP_HASH},
        {"name": "bad name", "password": CHEAP_HASH},
        {"name": "x" * 65, "password": CHEAP_HASH},
        {"name": "", "password": CHEAP_HASH},
        {"password": CHEAP_HASH},
    ]}})
    assert set(result.entries) == {"alice.smith@example.com"}
    found = reasons(result)
    assert "name:" in found[("example.com", "bad name")]
    assert "64" in found[("example.com", "x" * 65)]
    assert found[("example.com", "")].startswith("name:")


def test_a_bad_name_protects_the_entry_it_most_likely_means() -> None:
    result = desired({"example.com": {"account": [{"name": " bob ", "password": CHEAP_HASH}]}})
    assert "bob@example.com" in result.protected


def test_duplicates_across_documents_are_all_skipped() -> None:
    one = {"example.com": {"account": [{"name": "bob", "password": CHEAP_HASH}]}}
    two = {"Example.COM": {"account": [{"name": "Bob", "password": BOB_HASH}],
                           "alias": [{"name": "x", "to": "bob@example.com"}]}}
    result = desired(one, two)
    assert set(result.entries) == {"x@example.com"}
    assert "bob@example.com" in result.protected
    bob_skips = [s for s in result.skipped if s.name.lower() == "bob"]
    assert {s.source for s in bob_skips} == {"doc0", "doc1"}
    assert all("more than once" in s.reason for s in bob_skips)


def test_an_address_both_account_and_alias_in_one_document_is_both() -> None:
    result = desired({"example.com": {"account": [{"name": "info", "password": CHEAP_HASH}],
                                      "alias": [{"name": "Info", "to": "a@example.org"}]}})
    both = result.entries["info@example.com"]
    assert isinstance(both, WantBoth) and both.kind == "both"
    assert both.account.password == CHEAP_HASH and both.alias.targets == ("a@example.org",)
    assert result.skipped == [] and result.protected == set()
    # A second alias (or account) of it: every occurrence is skipped, the address protected.
    result = desired({"example.com": {"account": [{"name": "info", "password": CHEAP_HASH}],
                                      "alias": [{"name": "info", "to": "a@example.org"},
                                                {"name": "info", "to": "b@example.org"}]}})
    assert result.entries == {} and result.protected == {"info@example.com"}
    assert len(result.skipped) == 3
    assert all("account and as alias" in s.reason for s in result.skipped)


def test_alias_recipients_and_whitelists_are_validated() -> None:
    result = desired({"example.com": {
        "account": [
            {"name": "a", "password": CHEAP_HASH,
             "spoofing_whitelist": "Office@Example.com, skylime.net"},
            {"name": "b", "password": CHEAP_HASH, "spoofing_whitelist": "*,x.org"},
            {"name": "c", "password": CHEAP_HASH, "submission_disabled": "yes"},
            {"name": "d", "password": CHEAP_HASH, "spoofing_whitelist": "",
             "submission_disabled": False},
        ],
        "alias": [
            {"name": "ok", "to": "A@Example.com, b@bücher.example"},
            {"name": "self", "to": "self@example.com"},
            {"name": "bad", "to": "not an address"},
            {"name": "empty", "to": ""},
        ]}})
    a = result.entries["a@example.com"]
    assert a.whitelist == ("office@example.com", "skylime.net")  # type: ignore[union-attr]
    d = result.entries["d@example.com"]
    assert d.whitelist == () and d.submission_disabled is False  # type: ignore[union-attr]
    assert result.entries["ok@example.com"].targets == (  # type: ignore[union-attr]
        "a@example.com", "b@xn--bcher-kva.example")
    found = reasons(result)
    assert found[("example.com", "b")].startswith("spoofing_whitelist:")
    assert found[("example.com", "c")].startswith("submission_disabled:")
    assert "itself" in found[("example.com", "self")]
    assert found[("example.com", "bad")].startswith("to:")
    assert found[("example.com", "empty")].startswith("to:")


def test_unknown_keys_are_ignored_and_reported_once_per_key() -> None:
    result = desired({"example.com": {
        "account": [{"name": "a", "password": CHEAP_HASH, "submision_disabled": True,
                     "storage": 5},
                    {"name": "b", "password": CHEAP_HASH, "storage": 8},
                    {"name": "c", "password": "plain", "storage": 1}],
        "alias": [{"name": "o", "to": "a@example.com", "storage": 1}]}})
    # The entries are applied from the keys mailgate knows.
    assert set(result.entries) == {"a@example.com", "b@example.com", "o@example.com"}
    assert result.entries["a@example.com"].submission_disabled is None  # type: ignore[union-attr]
    # c is skipped for its password, not for the unknown key.
    (skip,) = result.skipped
    assert skip.name == "c" and skip.reason.startswith("password:")
    found = {(u.kind, u.key): u for u in result.unknown_keys}
    assert set(found) == {("account", "storage"), ("account", "submision_disabled"),
                          ("alias", "storage")}
    storage = found[("account", "storage")]
    assert storage.count == 3 and (storage.domain, storage.name, storage.source) == (
        "example.com", "a", "doc0")
    assert storage.as_json() == {"key": "storage", "kind": "account", "count": 3, "example": {
        "domain": "example.com", "name": "a", "source": "doc0"}}
    assert found[("alias", "storage")].count == 1


def test_unknown_keys_reported_are_bounded() -> None:
    accounts = [{"name": f"a{i}", "password": CHEAP_HASH, f"k{i}": 1} for i in range(60)]
    result = desired({"example.com": {"account": accounts}})
    assert len(result.entries) == 60
    assert len(result.unknown_keys) == 51
    assert result.unknown_keys[-1].key == "(more keys)" and result.unknown_keys[-1].count == 10


@pytest.mark.parametrize("value, why", [
    ([], "must be an object"),
    ({"accounts": []}, "unknown key 'accounts'"),
    ({"account": {"name": "a"}}, "'account' must be a list"),
    ({"alias": None}, "'alias' must be a list"),
])
def test_a_malformed_domain_is_skipped_whole_in_every_document(value: object, why: str) -> None:
    good = {"example.com": {"account": [{"name": "a", "password": CHEAP_HASH}]},
            "example.org": {"account": [{"name": "b", "password": CHEAP_HASH}]}}
    result = desired(good, {"example.com": value})
    assert result.domains == {"example.org"}        # example.com is left untouched
    assert set(result.entries) == {"b@example.org"}
    (skip,) = result.skipped
    assert skip.domain == "example.com" and skip.name == "" and why in skip.reason


def test_invalid_domain_keys_are_reported() -> None:
    result = desired({"not a domain": {}, "localhost": {}, "example.com": {}})
    assert result.domains == {"example.com"}
    assert {s.domain for s in result.skipped} == {"not a domain", "localhost"}


def test_duplicate_keys_in_one_document() -> None:
    body = (b'{"example.com": {"account": []}, "example.com": {"account": []},'
            b' "example.org": {"account": [{"name": "a", "name": "b", "password": "x"}]}}')
    result = build_desired([("doc", parse_document(body, "doc"))])
    assert "example.com" not in result.domains
    assert "given twice" in reasons(result)[("example.org", "b")]


@pytest.mark.parametrize("body, why", [
    (b"", "not valid JSON"),
    (b"[1, 2]", "top level must be an object"),
    (b'{"a": ', "not valid JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b"[" * 100_000, "nested too deeply"),
])
def test_unusable_documents_raise(body: bytes, why: str) -> None:
    with pytest.raises(DocumentError, match=why):
        parse_document(body, "https://example.net/x.json")


def test_a_utf8_bom_is_tolerated() -> None:
    assert parse_document(b'\xef\xbb\xbf{"example.com": {}}') == {"example.com": {}}


# -- raw documents: the streaming parser a sync uses ---------------------------------


TRICKY = (b'{"example.com": {"account": [{"name": "Alice", "password": "' + CHEAP_HASH.encode()
          + b'"}, {"name": "bob", "password": "plain"}, {"name": "c", "name": "d", '
          b'"password": "x"}, 5, {"name": ["x"]}], "alias": [{"name": "alice", '
          b'"to": "a@example.org"}, {"name": "o", "to": "b@b\xc3\xbccher.example"}]},'
          b' "example.org": {"account": [], "x": {"deep": [[1]]}}, "example.net": [], '
          b'"not a domain": {}, "example.edu": {"alias": []}, "example.edu": {}}')


def comparable(result: Any) -> tuple[Any, ...]:
    return (result.domains, result.entries, result.protected,
            sorted(s.as_json().items().__repr__() for s in result.skipped))


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1 << 20])
def test_raw_documents_give_what_parsed_ones_give(chunk: int) -> None:
    parsed = build_desired([("doc", parse_document(TRICKY, "doc"))])
    chunks = [TRICKY[i:i + chunk] for i in range(0, len(TRICKY), chunk)]
    streamed = build_desired([("doc", chunks)], consume=True)
    assert chunks == []                                  # each chunk let go once parsed
    assert comparable(streamed) == comparable(parsed)
    assert comparable(build_desired([("doc", TRICKY)])) == comparable(parsed)
    assert set(parsed.entries) == {"alice@example.com", "o@example.com"}
    assert parsed.domains == {"example.com"}


def test_raw_documents_across_sources() -> None:
    one = json.dumps({"example.com": {"account": [{"name": "Bob", "password": CHEAP_HASH}]}})
    two = json.dumps({"example.com": {"alias": [{"name": "bob", "to": "x@example.org"}]},
                      "example.org": {"account": [{"name": "x", "password": CHEAP_HASH}]}})
    result = build_desired([("one", one.encode()), ("two", two.encode())])
    assert set(result.entries) == {"x@example.org"}
    bob = sorted((s.source, s.name) for s in result.skipped)
    assert bob == [("one", "Bob"), ("two", "bob")]
    assert all("as account and as alias" in s.reason for s in result.skipped)


@pytest.mark.parametrize("body, why", [
    (b"", "not valid JSON"),
    (b"[1, 2]", "top level must be an object"),
    (b'{"a": ', "not valid JSON"),
    (b'{"example.com": {}} x', "not valid JSON"),
    (b"\xff\xfe{}", "not UTF-8 (byte 0)"),
    (b'{"example.com": {"account": [{"name": "\xc3\xa9\xff"}]}}', "not UTF-8 (byte 41)"),
    (b"[" * 100_000, "nested too deeply"),
    (b'{"example.com": {"account": [{"name": ' + b"[" * 1000 + b"]" * 1000 + b"}]}}",
     "nested too deeply"),
])
@pytest.mark.parametrize("chunk", [2, 1 << 20])
def test_unusable_raw_documents_raise(body: bytes, why: str, chunk: int) -> None:
    chunks = [body[i:i + chunk] for i in range(0, len(body), chunk)] or [b""]
    with pytest.raises(DocumentError, match=why.replace("(", r"\(").replace(")", r"\)")):
        build_desired([("https://example.net/x.json", chunks)], consume=True)


def test_a_utf8_bom_is_tolerated_in_raw_documents() -> None:
    body = b'\xef\xbb\xbf{"example.com": {"account": [{"name": "a", "password": "' + \
        CHEAP_HASH.encode() + b'"}]}}'
    for chunk in (1, 2, 1 << 20):
        chunks = [body[i:i + chunk] for i in range(0, len(body), chunk)]
        assert set(build_desired([("d", chunks)]).entries) == {"a@example.com"}


def test_quota_is_a_size_in_bytes_as_the_api_takes_it() -> None:
    good = {"a": 0, "b": 5_000_000, "c": "1024", "d": 2**50}
    bad = {"n": -1, "f": 1.0, "t": True, "s": "5 GB", "big": 2**50 + 1, "null": None,
           "list": [1]}
    items = [{"name": n, "password": CHEAP_HASH, "quota": v} for n, v in {**good, **bad}.items()]
    result = desired({"example.com": {"account": [
        *items, {"name": "absent", "password": CHEAP_HASH}]}})
    assert {a.rpartition("@")[0]: w.quota for a, w in result.entries.items()} == {
        "a": 0, "b": 5_000_000, "c": 1024, "d": 2**50, "absent": None}
    found = reasons(result)
    assert set(found) == {("example.com", n) for n in bad}
    assert all(r.startswith("quota: ") for r in found.values()), found
    assert found[("example.com", "big")] == f"quota: must be at most {2**50}"
    # A skipped entry's address is protected: LDAP's entry stays as it is.
    assert "n@example.com" in result.protected
