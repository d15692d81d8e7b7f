"""No input, however malformed, produces a 500 or a traceback.

Hypothesis throws arbitrary JSON values, form fields, ids and query strings at
every route of the real app (on the real slapd) and checks that each answer
is a 2xx/4xx with the JSON error format.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.api import Client

FIELDS = ["name", "domain", "password", "to", "spoofing_whitelist", "submission_disabled",
          "id", "x"]
INTERESTING = st.sampled_from(["*", "(", ")", "\\", "\x00", ",", "=", "+", "@", "a@b.c",
                               "example.com", "alice", "", " ", "ü", "xn--", "\ud7ff", "%00",
                               "true", "1", "a" * 300])
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                    st.text(max_size=40), INTERESTING)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)
bodies = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), values, max_size=6)
ids = st.one_of(st.text(max_size=60), INTERESTING,
                st.builds(lambda a, b: f"{a}@{b}", st.text(max_size=20), st.text(max_size=20)))
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


def check(response: Any) -> None:
    assert response.status_code < 500, (response.status_code, response.get_data(as_text=True))
    if response.status_code >= 400:
        body = response.get_json()
        assert isinstance(body, dict) and isinstance(body.get("message"), str)
        assert "Traceback" not in response.get_data(as_text=True)


@FUZZ
@given(body=bodies, kind=st.sampled_from(["account", "alias"]), as_form=st.booleans())
def test_create_with_arbitrary_bodies(client: Client, body: dict[str, Any], kind: str,
                                      as_form: bool) -> None:
    if as_form:
        form = {k: v if isinstance(v, str) else str(v) for k, v in body.items()}
        check(client.post(f"/mail/{kind}/", data=form))
    else:
        check(client.post(f"/mail/{kind}/", json=body))


@FUZZ
@given(entry_id=ids, body=bodies, action=st.sampled_from(
    ["", "set_password/", "disable_submission/", "enable_submission/",
     "set_spoofing_whitelist/"]))
def test_item_routes_with_arbitrary_ids(client: Client, entry_id: str, body: dict[str, Any],
                                        action: str) -> None:
    path = quote(entry_id, safe="@")
    check(client.get(f"/mail/account/{path}/"))
    check(client.post(f"/mail/account/{path}/{action}", json=body))
    check(client.put(f"/mail/alias/{path}/", json=body))
    check(client.delete(f"/mail/alias/{path}/"))


@FUZZ
@given(query=st.dictionaries(st.sampled_from(["domain", "page", "page_size", "x"]),
                             st.text(max_size=12) | INTERESTING, max_size=3),
       kind=st.sampled_from(["account", "alias"]))
def test_lists_with_arbitrary_queries(client: Client, query: dict[str, str], kind: str) -> None:
    check(client.get(f"/mail/{kind}/", query_string=query))


@FUZZ
@given(raw=st.binary(max_size=200), content_type=st.sampled_from(
    ["application/json", "application/x-www-form-urlencoded", "multipart/form-data",
     "text/plain", "application/json; charset=latin-1", ""]))
def test_raw_bytes_bodies(client: Client, raw: bytes, content_type: str) -> None:
    check(client.post("/mail/account/", data=raw, content_type=content_type))
    check(client.put("/mail/alias/a@example.com/", data=raw, content_type=content_type))
