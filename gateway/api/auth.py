"""Request authentication, per-domain authorisation and failure rate limiting.

``Authorization: Bearer <token>``, ``Authorization: <token>`` (the bare token:
what an operator pastes into Swagger UI's "Authorize" field) and HTTP Basic
with the token as password (any user name, so ``curl -u :TOKEN`` works).
Failed attempts are counted per client address (:mod:`gateway.limiter`); past
the limit, a failing attempt from that address gets 429 until its window
passes. A valid token is always accepted: failures from a shared address (a
proxy, a NAT) or an attacker must not lock out the real users behind it. A
failure never says why (unknown token, wrong secret, revoked): one message for
all.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import g, request

from .. import metrics
from ..addresses import WILDCARD, normalize_domain, parse_whitelist
from ..audit import Actor, actor
from ..errors import Forbidden, RateLimited, Unauthorized
from ..mail import MailDirectory
from ..services import current
from ..tokens import Scope

F = TypeVar("F", bound=Callable[..., Any])


def presented_token(authorization: str) -> str | None:
    """The token an ``Authorization`` header value carries, if any."""
    header = authorization.strip()
    scheme, sep, value = header.partition(" ")
    if not sep:
        # One word: the bare token (Swagger UI sends its "Authorize" field as is).
        return header or None
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        _user, sep, password = decoded.partition(":")
        return password if sep and password else None
    return None


def authenticate() -> Scope:
    """The caller's scope; Unauthorized, RateLimited or DirectoryUnavailable."""
    services = current()
    token = presented_token(request.headers.get("Authorization", ""))
    scope: Scope | None = services.tokens.authenticate(token) if token else None
    if scope is not None:
        # A valid token is never locked out: failures from the same address
        # (a proxy, a NAT, an attacker) must not lock out its real users.
        return scope
    client = request.remote_addr or "unknown"
    limiter = services.limiter
    key = limiter.key(client)
    wait, failures = limiter.check(key)
    if wait is not None:
        metrics.get().auth_rate_limited.inc()
        raise RateLimited("too many failed authentication attempts; try again later", wait)
    metrics.get().auth_failures.inc()
    who = Actor("unauthenticated", client, g.get("request_id"))
    # Within the deployment's budget a failure is written (its event and its
    # count); beyond it, counted here and in the interval's aggregate event.
    if services.auth_budget.record("auth.failure", who, scheme=_scheme(),
                                   prefix=None if key == client else key):
        limiter.record_failure(key)
        if failures + 1 >= limiter.limit:
            services.auth_budget.record("auth.lockout", who, window=limiter.window,
                                        prefix=None if key == client else key)
    else:
        limiter.count_here(key)
        services.auth_tally.add("unauthenticated", key, client)
    raise Unauthorized("missing or invalid API token")


def denied(exc: Forbidden) -> None:
    """A 403 in the metrics and in the trail: one event per token and interval
    (:class:`gateway.audit.Tally`), so a probing token cannot flood the trail."""
    metrics.get().authz_denied.inc()
    current_scope = g.get("scope")
    if isinstance(current_scope, Scope):
        current().denials.add(current_scope.name, request.path[:200], request.remote_addr)


def _scheme() -> str:
    """The authentication scheme a request used, for the audit trail (never the token)."""
    scheme = request.headers.get("Authorization", "").partition(" ")[0].lower()
    return scheme if scheme in ("bearer", "basic") else ("none" if not scheme else "other")


def authenticated(func: F) -> F:
    """Resource method decorator: authenticate, then keep the scope on ``g``."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        g.scope = authenticate()
        # Who the changes of this request are by, for the audit trail.
        token = actor.set(Actor(g.scope.name, request.remote_addr, g.get("request_id")))
        try:
            return func(*args, **kwargs)
        finally:
            actor.reset(token)

    return cast(F, wrapper)


def mail() -> MailDirectory:
    return current().mail


def domain_of(entry_id: str) -> str:
    """The domain an id from a URL belongs to (NotFound if it is no address)."""
    return mail().parse_id(entry_id).domain


def scope() -> Scope:
    return cast(Scope, g.scope)


def require_read(domain: str) -> None:
    if not scope().may_read(domain):
        raise Forbidden(f"this token has no rights on {domain}")


def require_write(domain: str) -> None:
    require_read(domain)
    if not scope().may_write(domain):
        raise Forbidden("this token is read-only")


def require_write_to(domain: object) -> None:
    """Authorise a create on the domain a body names (normalised: case, IDN).

    An invalid domain passes here: validation then reports it with every
    other bad field.
    """
    if isinstance(domain, str):
        with contextlib.suppress(ValueError):
            require_write(normalize_domain(domain))


def list_scope(domain: str | None) -> frozenset[str] | None:
    """The domains a list may show: ``domain`` if the token may read it, else
    every domain the token sees (None: all)."""
    if domain is None:
        return scope().visible_domains
    require_read(domain)
    return frozenset([domain])


def require_admin() -> None:
    if not scope().admin:
        raise Forbidden("only the admin token may do this")


def require_whitelist_in_scope(value: object) -> None:
    """A scoped token may let its accounts send only as its own domains.

    Every whitelist item (an address or a domain) must be inside one of the
    token's domains (exactly: a subdomain is another domain); ``*`` never.
    Forbidden (403) names the field. The admin token is unrestricted. An
    invalid whitelist passes here: validation reports it as a 400.
    """
    current = scope()
    if current.admin or not isinstance(value, str):
        return
    try:
        items = parse_whitelist(value)
    except ValueError:
        return
    outside = [item for item in items
               if item == WILDCARD or item.rpartition("@")[2] not in current.domains]
    if outside:
        why = ("'*' is for the admin token only" if WILDCARD in outside else
               f"outside this token's domains: {', '.join(outside)[:300]}")
        raise Forbidden("this token may not let an account send as other domains",
                        {"spoofing_whitelist": why})
