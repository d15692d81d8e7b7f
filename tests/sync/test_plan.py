"""The sync's pure diff: desired + current -> plan (no LDAP)."""

from __future__ import annotations

from gateway.sync.plan import Existing, make_plan, refusal
from gateway.sync.records import Desired, Skip, WantAccount, WantAlias

H1 = "$1$aaaaaaaa$" + "a" * 22
H2 = "$1$bbbbbbbb$" + "b" * 22


def account(name: str, password: str = H1, whitelist: tuple[str, ...] | None = None,
            disabled: bool | None = None, domain: str = "example.com") -> WantAccount:
    return WantAccount(f"{name}@{domain}", name, domain, password, whitelist, disabled)


def alias(name: str, *targets: str, domain: str = "example.com") -> WantAlias:
    return WantAlias(f"{name}@{domain}", name, domain, tuple(targets))


def existing(address: str, kind: str = "account", origin: str | None = "sync",
             **fields: object) -> Existing:
    if kind == "account":
        fields.setdefault("password", H1)
    return Existing(dn=f"mail={address},dc=x", address=address, kind=kind, origin=origin,
                    **fields)  # type: ignore[arg-type]


def wanted(*wants: WantAccount | WantAlias, domains: set[str] | None = None,
           protected: set[str] | None = None) -> Desired:
    return Desired(domains=domains or {"example.com"}, entries={w.address: w for w in wants},
                   protected=protected or set())


def test_creates_and_domain_entries() -> None:
    plan = make_plan(wanted(account("a"), alias("b", "a@example.com"),
                            domains={"example.com", "example.org"}), [], {"example.com"})
    assert plan.domains == ["example.org"]
    assert [c.want.address for c in plan.creates] == ["a@example.com", "b@example.com"]
    assert plan.writes == 3 and plan.managed == 0


def test_identical_state_plans_nothing() -> None:
    current = [existing("a@example.com", password=H1, whitelist=("X.org",)),
               existing("b@example.com", "alias", targets=("b2@example.net", "a@example.com"))]
    desired = wanted(account("a", whitelist=("x.org",)),
                     alias("b", "a@example.com", "b2@example.net"))
    plan = make_plan(desired, current, {"example.com"})
    assert plan.writes == 0 and plan.unchanged == 2 and plan.managed == 2


def test_updates_carry_only_differing_fields() -> None:
    current = [existing("a@example.com", password=H1, whitelist=("x.org",),
                        submission_disabled=True),
               existing("b@example.com", "alias", targets=("a@example.com",))]
    desired = wanted(account("a", password=H2, whitelist=("x.org",)),
                     alias("b", "c@example.com"))
    plan = make_plan(desired, current, {"example.com"})
    changes = {u.existing.address: u.changes for u in plan.updates}
    assert changes == {"a@example.com": {"password": H2},
                       "b@example.com": {"to": ("c@example.com",)}}


def test_unstated_fields_keep_their_value_stated_ones_win() -> None:
    current = [existing("a@example.com", submission_disabled=True, whitelist=("*",))]
    assert make_plan(wanted(account("a")), current, {"example.com"}).updates == []
    plan = make_plan(wanted(account("a", whitelist=(), disabled=False)), current,
                     {"example.com"})
    assert plan.updates[0].changes == {"spoofing_whitelist": (), "submission_disabled": False}


def test_api_and_hand_made_entries_are_taken_over_never_deleted() -> None:
    current = [existing("a@example.com", origin="api"),
               existing("b@example.com", origin=None),
               existing("c@example.com", origin="api"),
               existing("d@example.com", origin=None),
               existing("e@example.com", origin="sync")]
    plan = make_plan(wanted(account("a"), account("b")), current, {"example.com"})
    assert {u.existing.address: u.changes for u in plan.updates} == {
        "a@example.com": {"origin": "sync"}, "b@example.com": {"origin": "sync"}}
    assert plan.takeovers == 2
    assert [d.existing.address for d in plan.deletes] == ["e@example.com"]
    assert plan.managed == 1


def test_unlisted_domains_and_protected_addresses_are_left_alone() -> None:
    current = [existing("x@example.org"), existing("p@example.com", password=H2),
               existing("q@example.com")]
    desired = wanted(account("p", password=H1), protected={"p@example.com", "q@example.com"})
    del desired.entries["p@example.com"]
    plan = make_plan(desired, current, {"example.com", "example.org"})
    assert plan.writes == 0
    assert plan.managed == 2  # p and q count (example.org is not listed)


def test_kind_change_replaces_only_what_the_sync_owns() -> None:
    current = [existing("a@example.com", "alias", "sync", targets=("z@example.net",)),
               existing("b@example.com", "alias", "api", targets=("z@example.net",)),
               existing("c@example.com", "account", None)]
    desired = wanted(account("a"), account("b"), alias("c", "z@example.net"))
    plan = make_plan(desired, current, {"example.com"})
    assert [r.existing.address for r in plan.replaces] == ["a@example.com"]
    assert plan.writes == 2
    skipped = {s.name: s.reason for s in plan.skipped}
    assert "through the API" in skipped["b"] and "by hand" in skipped["c"]
    assert plan.deletes == [] and plan.creates == [] and plan.updates == []


def test_an_address_held_by_several_entries_is_left_alone() -> None:
    current = [existing("a@example.com"), existing("A@example.com".lower(), origin="api")]
    plan = make_plan(wanted(), current, {"example.com"})
    assert plan.deletes == []
    assert "2 LDAP entries" in plan.skipped[0].reason


def test_validation_skips_are_carried_into_the_plan() -> None:
    desired = wanted(account("a"))
    desired.skipped.append(Skip("example.com", "zz", "name: bad"))
    assert make_plan(desired, [], set()).skipped == desired.skipped


def test_delete_guard() -> None:
    current = [existing(f"u{i}@example.com") for i in range(8)]
    keep_six = wanted(*(account(f"u{i}") for i in range(6)))
    plan = make_plan(keep_six, current, {"example.com"})
    assert len(plan.deletes) == 2 and plan.managed == 8
    assert refusal(plan, 0.25) is None                  # 2 of 8 = 25 %: allowed
    keep_five = wanted(*(account(f"u{i}") for i in range(5)))
    why = refusal(make_plan(keep_five, current, {"example.com"}), 0.25)
    assert why is not None and "3 of 8" in why
    assert refusal(make_plan(wanted(), current, {"example.com"}), 1.0) is None
    assert refusal(make_plan(wanted(), current, {"example.com"}), 0.0) is not None
    # API entries do not count as managed and are never deleted.
    api_only = [existing(f"u{i}@example.com", origin="api") for i in range(8)]
    assert refusal(make_plan(wanted(), api_only, {"example.com"}), 0.0) is None


def test_quota_is_compared_only_when_the_document_states_it() -> None:
    current = [existing(f"{n}@example.com", quota=100) for n in ("same", "absent", "other")]
    stated = WantAccount("same@example.com", "same", "example.com", H1, None, None, None, 100)
    absent = account("absent")
    other = WantAccount("other@example.com", "other", "example.com", H1, None, None, None, 0)
    plan = make_plan(wanted(stated, absent, other), current, {"example.com"})
    assert [(u.existing.address, u.changes) for u in plan.updates] == [
        ("other@example.com", {"quota": 0})]
    assert plan.unchanged == 2
    # What the read found, per listed domain: accounts, aliases, quota allocated.
    assert plan.held == {"example.com": [3, 0, 300]}
