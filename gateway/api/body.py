"""Reading request bodies (JSON or form) and list query parameters.

Clients of the original service send JSON and form bodies alike, so both are
accepted; either way unknown fields are refused, so a typo never passes
silently as "success".
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from flask import request

from ..addresses import normalize_domain
from ..errors import Invalid, UnsupportedMediaType
from ..mail import LAST_PAGE, MAX_PAGE_SIZE

_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def read_body(allowed: Collection[str]) -> dict[str, Any]:
    """The request's fields, only names from ``allowed``; Invalid otherwise."""
    mimetype = request.mimetype
    if mimetype == "application/json" or (mimetype.endswith("+json")):
        try:
            data = request.get_json(silent=True)
        except RecursionError:
            # json.loads recurses once per nesting level: 100 000 "[" would
            # otherwise be a 500.
            raise Invalid("malformed JSON body", {"body": "nested too deeply"}) from None
        if data is None and request.get_data():
            raise Invalid("malformed JSON body", {"body": "not valid JSON"})
        data = {} if data is None else data
        if not isinstance(data, dict):
            raise Invalid("the JSON body must be an object")
    elif mimetype in _FORM_TYPES:
        form = request.form
        repeated = [key for key in form if len(form.getlist(key)) > 1]
        if repeated:
            raise Invalid("invalid input", {key: "given more than once" for key in repeated})
        data = form.to_dict()
        if request.files:
            raise Invalid("invalid input", {key: "file uploads are not accepted"
                                            for key in request.files})
    elif not request.get_data():
        data = {}
    else:
        raise UnsupportedMediaType(
            "send application/json, application/x-www-form-urlencoded or multipart/form-data")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise Invalid("invalid input", {_shown(key): "unknown field" for key in unknown})
    # "\ud800" is valid JSON but no text: it cannot be encoded for LDAP or
    # hashed, so it is refused here, by field, for every route.
    broken = {key: "not valid Unicode text (lone surrogate)" for key, value in data.items()
              if isinstance(value, str) and not _encodable(value)}
    if broken:
        raise Invalid("invalid input", broken)
    return data


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(key: str) -> str:
    key = key[:100]
    return key if _encodable(key) else key.encode("utf-8", "replace").decode("utf-8")


def as_bool(field: str, value: Any, default: bool) -> bool:
    """A boolean from JSON (true/false) or form text (true/false, 1/0, yes/no, on/off)."""
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE:
        return True
    if isinstance(value, str) and value.strip().lower() in _FALSE:
        return False
    raise Invalid("invalid input", {field: "must be a boolean (true or false)"})


def _int_arg(name: str, default: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    # isdigit() alone accepts "²" and Arabic-Indic digits (int() then fails or reads them):
    # only ASCII digits are a page number.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
        raise Invalid("invalid query parameter", {name: "must be a positive whole number"})
    return int(raw)


def list_args() -> tuple[str | None, int | str, int]:
    """``domain``, ``page`` and ``page_size`` from the query string.

    As the original service: ``page=last`` is the last page (LAST_PAGE), and
    a ``page_size`` above the maximum is the maximum.
    """
    domain = request.args.get("domain") or None
    if domain is not None:
        try:
            domain = normalize_domain(domain)
        except ValueError as exc:
            raise Invalid("invalid query parameter", {"domain": str(exc)}) from None
    page = LAST_PAGE if request.args.get("page") == "last" else _int_arg("page", 1)
    return domain, page, min(_int_arg("page_size", 100), MAX_PAGE_SIZE)
