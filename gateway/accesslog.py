"""gunicorn's access log, same lines, made for less, and never a secret.

No token or password reaches a log line, whatever form it came in: the
user-name atom (gunicorn decodes it from a Basic ``Authorization``, where
``curl -u TOKEN:`` puts the token) is always ``-``, and the value of every
query parameter but ``domain``, ``page`` and ``page_size`` is masked.

gunicorn loads this class in the arbiter before it forks the workers, which
makes it the place to set the ``Server`` header too: gunicorn 27 has no
setting for it and writes ``Server: gunicorn`` (``gunicorn.http.wsgi.SERVER``,
read per response); mailgate answers ``Server: mailgate``.

For every request gunicorn turns each request header, response header and
WSGI environ variable into a log "atom", then copies and escapes them all,
while its default format uses nine: under load that was about 0.1 ms of the
0.8 ms of CPU a ``GET /mail/account/{id}/`` costs (B5 in docs/benchmarks.md).
With the default format this logger computes only those nine; any other
format keeps gunicorn's way.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from gunicorn import glogging
from gunicorn.http import wsgi as _gunicorn_wsgi

DEFAULT_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
SERVER_NAME = "mailgate"
SHOWN_PARAMETERS = frozenset({"domain", "page", "page_size"})
MASK = "***"


def redact_query(query: str) -> str:
    """The query string with every value but those of SHOWN_PARAMETERS masked."""
    if not query:
        return query
    items = []
    for item in query.split("&"):
        name, sep, _value = item.partition("=")
        if name in SHOWN_PARAMETERS and sep:
            items.append(item)
        else:
            items.append(f"{quote(name[:40], safe='%')}={MASK}" if sep else MASK)
    return "&".join(items)


def redact_uri(uri: str) -> str:
    path, sep, query = uri.partition("?")
    return f"{path}?{redact_query(query)}" if sep else path


class AccessLogger(glogging.Logger):  # type: ignore[misc]
    _now: tuple[int, str] = (-1, "")

    def __init__(self, cfg: Any) -> None:
        _gunicorn_wsgi.SERVER = SERVER_NAME
        super().__init__(cfg)

    def _get_user(self, environ: dict[str, Any]) -> None:
        """Never the Basic user name: clients put tokens there."""
        return None

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any],
              request_time: Any) -> dict[str, Any]:
        if self.cfg.access_log_format != DEFAULT_FORMAT:
            atoms = dict(super().atoms(resp, req, environ, request_time))
            atoms["r"] = f"{environ['REQUEST_METHOD']} {redact_uri(environ['RAW_URI'])} " \
                         f"{environ['SERVER_PROTOCOL']}"
            atoms["q"] = redact_query(environ.get("QUERY_STRING", ""))
            for name in list(atoms):   # header atoms: {authorization}i and the like
                if name.startswith("{") and name[1:].split("}")[0] in (
                        "authorization", "cookie", "x-api-key", "proxy-authorization"):
                    atoms[name] = MASK
            return atoms
        status = resp.status
        if isinstance(status, str):
            status = status.split(None, 1)[0]
        sent = getattr(resp, "sent", None)
        return {
            "h": environ.get("REMOTE_ADDR", "-"),
            "l": "-",
            "u": "-",
            "t": self.now(),
            "r": f"{environ['REQUEST_METHOD']} {redact_uri(environ['RAW_URI'])} "
                 f"{environ['SERVER_PROTOCOL']}",
            "s": status,
            "b": "-" if sent is None else str(sent),
            "f": environ.get("HTTP_REFERER", "-"),
            "a": environ.get("HTTP_USER_AGENT", "-"),
        }

    def now(self) -> str:
        """The time as gunicorn writes it, formatted once a second."""
        second = int(time.time())
        cached, stamp = self._now
        if second != cached:
            stamp = time.strftime("[%d/%b/%Y:%H:%M:%S %z]")
            self._now = (second, stamp)
        return stamp
