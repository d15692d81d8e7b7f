"""Fetching the Basic JSON documents over HTTPS.

* TLS is always verified: against ``MAILGATE_JSON_CA_FILE`` if set, else the
  system CAs. ``verify=`` is passed on every request because requests lets the
  ``REQUESTS_CA_BUNDLE`` environment variable override ``Session.verify``.
* Conditional requests: the ETag and Last-Modified of the last applied
  document are sent back (``If-None-Match`` / ``If-Modified-Since``); a 304, or
  a 200 whose body has the same SHA-256 as last time, means "unchanged".
* Redirects are followed by hand, at most ``MAILGATE_JSON_MAX_REDIRECTS``,
  https only. The auth header goes only to the origin (scheme, host, port) of
  the configured URL, never to a host a redirect names.
* The size limit holds while streaming (after decompression), so a lying or
  missing Content-Length cannot make the gateway read more.
* A whole fetch (every redirect, headers and body) must end within
  ``MAILGATE_JSON_TOTAL_TIMEOUT`` (default 10 x ``MAILGATE_JSON_TIMEOUT``).
  The body is read as it arrives (``read1``: whatever one receive brings, at
  most 1 MiB), and the limit is checked after every receive, so a server that
  trickles a byte now and then is cut off at most one ``MAILGATE_JSON_TIMEOUT``
  after the limit; each request's read timeout is also cut to the time left.
* Secrets never leave this module: URLs are shown through :func:`redact_url`
  (no user info, every query value and fragment masked), errors carry
  messages written here, never requests' own (which quote the URL), and a log
  filter masks the query strings urllib3 writes at DEBUG level.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
import time
from dataclasses import dataclass
from typing import BinaryIO, Protocol
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests

from ..settings import Settings

log = logging.getLogger(__name__)

# Chunks of 1 MiB: each is its own mapping, which the parser gives back to the
# system as soon as it is read (docs/benchmarks.md, B8).
CHUNK = 1024 * 1024
_REDIRECTS = (301, 302, 303, 307, 308)
MASK = "***"


class FetchError(Exception):
    """A source could not be fetched; the message is safe to log and show."""


@dataclass(frozen=True)
class Validators:
    """What identifies the last applied version of a source."""

    etag: str | None = None
    last_modified: str | None = None
    sha256: str | None = None

    def as_json(self) -> dict[str, str]:
        return {k: v for k, v in (("etag", self.etag), ("last_modified", self.last_modified),
                                  ("sha256", self.sha256)) if v}

    @classmethod
    def from_json(cls, data: object) -> Validators:
        if not isinstance(data, dict):
            return cls()
        return cls(*(data.get(k) if isinstance(data.get(k), str) else None
                     for k in ("etag", "last_modified", "sha256")))


@dataclass(frozen=True)
class Fetched:
    """One source's answer. ``chunks`` is None when the source is unchanged.

    The document stays in the chunks it arrived in, so the parser can let each
    go once read (:func:`gateway.sync.document.build_desired` with
    ``consume=True``); ``body`` joins them (for tests and tools).
    """

    key: str            # stable id of the configured URL (a hash: URLs may hold secrets)
    url: str            # redacted, for logs and status
    chunks: list[bytes] | None
    validators: Validators
    size: int = 0       # bytes received

    @property
    def unchanged(self) -> bool:
        return self.chunks is None

    @property
    def body(self) -> bytes | None:
        return None if self.chunks is None else b"".join(self.chunks)


def source_key(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:32]


def redact_url(url: str) -> str:
    """The URL with user info, query values and fragment masked."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparsable URL>"
    if ":" in host:
        host = f"[{host}]"
    netloc = (f"{MASK}@" if parts.username or parts.password else "") + host
    if port is not None:
        netloc += f":{port}"
    # Keys stay (they say what is masked); every value, and any bare item
    # (``?s3cret``), is masked.
    query = "&".join(f"{item.partition('=')[0]}={MASK}" if "=" in item else MASK
                     for item in parts.query.split("&")) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, MASK if parts.fragment else ""))


_QUERY = re.compile(r"\?[^\s\"']*")
_USERINFO = re.compile(r"//[^/\s\"'@]*@")


class _RedactUrllib3(logging.Filter):
    """urllib3 logs request lines with their query string at DEBUG: mask it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg = _USERINFO.sub(f"//{MASK}@", _QUERY.sub(f"?{MASK}", message))
        record.args = ()
        return True


def _redact_urllib3_logs() -> None:
    logger = logging.getLogger("urllib3.connectionpool")
    if not any(isinstance(f, _RedactUrllib3) for f in logger.filters):
        logger.addFilter(_RedactUrllib3())


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or 443


class Fetcher:
    """Fetches sources with the limits and credentials of ``settings``."""

    def __init__(self, settings: Settings, session: requests.Session | None = None) -> None:
        self.verify: str | bool = str(settings.json_ca_file) if settings.json_ca_file else True
        self.timeout = settings.json_timeout
        self.total_timeout = settings.json_fetch_limit
        self.max_bytes = settings.json_max_bytes
        self.max_redirects = settings.json_max_redirects
        self.session = session or requests.Session()
        _redact_urllib3_logs()
        self._auth: tuple[str, str] | None = None
        if settings.json_auth_header:
            name, _, value = settings.json_auth_header.partition(":")
            self._auth = (name.strip(), value.strip())

    def close(self) -> None:
        self.session.close()

    def fetch(self, url: str, known: Validators | None = None) -> Fetched:
        """Fetch ``url``; conditional when ``known`` validators are given.

        Raises FetchError (message already redacted).
        """
        shown = redact_url(url)
        try:
            return self._fetch(url, shown, known)
        except FetchError as exc:
            raise FetchError(f"{shown}: {exc}") from None
        except requests.exceptions.SSLError:
            raise FetchError(f"{shown}: TLS handshake or certificate verification failed") \
                from None
        except requests.exceptions.Timeout:
            raise FetchError(f"{shown}: timed out after {self.timeout:g} s") from None
        except requests.exceptions.ConnectionError:
            raise FetchError(f"{shown}: connection failed") from None
        except requests.exceptions.RequestException as exc:
            raise FetchError(f"{shown}: request failed ({exc.__class__.__name__})") from None

    def _fetch(self, url: str, shown: str, known: Validators | None) -> Fetched:
        deadline = time.monotonic() + self.total_timeout
        origin = _origin(url)
        conditional: dict[str, str] = {}
        if known is not None:
            if known.etag:
                conditional["If-None-Match"] = known.etag
            if known.last_modified:
                conditional["If-Modified-Since"] = known.last_modified
        target = url
        for _hop in range(self.max_redirects + 1):
            headers = {"Accept": "application/json", **conditional}
            if self._auth is not None and _origin(target) == origin:
                headers[self._auth[0]] = self._auth[1]
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._too_slow()
            response = self.session.get(target, headers=headers,
                                        timeout=(min(self.timeout, left),
                                                 min(self.timeout, max(left, 0.1))),
                                        verify=self.verify, allow_redirects=False, stream=True)
            with response:
                if response.status_code in _REDIRECTS:
                    location = response.headers.get("Location")
                    if not location:
                        raise FetchError(f"HTTP {response.status_code} without Location")
                    target = urljoin(target, location)
                    if urlsplit(target).scheme != "https":
                        raise FetchError(f"redirect to a non-https URL refused "
                                         f"({redact_url(target)})")
                    continue
                if response.status_code == 304 and conditional:
                    log.debug("%s: not modified", shown)
                    assert known is not None
                    return Fetched(source_key(url), shown, None, known)
                if response.status_code != 200:
                    raise FetchError(f"HTTP {response.status_code}")
                chunks, digest = self._read(response, deadline)
                size = sum(len(c) for c in chunks)
                validators = Validators(response.headers.get("ETag"),
                                        response.headers.get("Last-Modified"), digest)
                if known is not None and known.sha256 == digest:
                    log.debug("%s: same content as last applied", shown)
                    return Fetched(source_key(url), shown, None, validators, size)
                log.info("%s: fetched %d bytes", shown, size)
                return Fetched(source_key(url), shown, chunks, validators, size)
        raise FetchError(f"more than {self.max_redirects} redirects")

    def _read(self, response: requests.Response, deadline: float) -> tuple[list[bytes], str]:
        """The body as chunks, and its SHA-256 (hex)."""
        length = response.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            raise FetchError(f"document larger than the limit of {self.max_bytes} bytes "
                             "(MAILGATE_JSON_MAX_BYTES)")
        chunks: list[bytes] = []
        digest = hashlib.sha256()
        size = 0
        pending: list[bytes] = []
        pending_size = 0
        raw = response.raw
        while True:
            # read1: what one receive brought (iter_content would block until a
            # whole chunk arrived, so a trickle was never checked).
            piece = raw.read1(CHUNK, decode_content=True)
            if time.monotonic() > deadline:
                raise self._too_slow()
            if not piece:
                break   # read1 returns b"" only at the end of the body
            size += len(piece)
            if size > self.max_bytes:
                raise FetchError(f"document larger than the limit of {self.max_bytes} bytes "
                                 "(MAILGATE_JSON_MAX_BYTES)")
            digest.update(piece)
            # Kept in chunks of about CHUNK bytes (the parser lets each go once read).
            pending.append(piece)
            pending_size += len(piece)
            if pending_size >= CHUNK:
                chunks.append(b"".join(pending))
                pending, pending_size = [], 0
        if pending:
            chunks.append(b"".join(pending))
        return chunks, digest.hexdigest()

    def _too_slow(self) -> FetchError:
        return FetchError(f"document not complete after {self.total_timeout:g} s "
                          "(MAILGATE_JSON_TOTAL_TIMEOUT)")

class SourceFetcher(Protocol):
    """What the runner fetches its sources with: :class:`Fetcher` or :class:`FileFetcher`."""

    def fetch(self, url: str, known: Validators | None = None) -> Fetched: ...

    def close(self) -> None: ...


class FileFetcher:
    """Local documents (``mailgate sync --file``), under the rules of fetched ones.

    The source is a path (``-``: standard input). The same size limit holds
    (``MAILGATE_JSON_MAX_BYTES``), the document arrives in the same chunks and
    goes through the same validation, plan, guard and apply; its SHA-256 is
    its validator, so applying the same file twice is ``unchanged``.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    def close(self) -> None:
        pass

    def fetch(self, url: str, known: Validators | None = None) -> Fetched:
        shown = "<stdin>" if url == "-" else url
        try:
            if url == "-":
                chunks = self._read(sys.stdin.buffer)
            else:
                with open(url, "rb") as handle:
                    chunks = self._read(handle)
        except OSError as exc:
            raise FetchError(f"{shown}: cannot read it ({exc.strerror or exc})") from None
        except FetchError as exc:
            raise FetchError(f"{shown}: {exc}") from None
        digest = hashlib.sha256()
        for chunk in chunks:
            digest.update(chunk)
        validators = Validators(sha256=digest.hexdigest())
        size = sum(len(c) for c in chunks)
        if known is not None and known.sha256 == validators.sha256:
            return Fetched(source_key(url), shown, None, validators, size)
        return Fetched(source_key(url), shown, chunks, validators, size)

    def _read(self, handle: BinaryIO) -> list[bytes]:
        chunks: list[bytes] = []
        size = 0
        while chunk := handle.read(CHUNK):
            size += len(chunk)
            if size > self.max_bytes:
                raise FetchError(f"document larger than the limit of {self.max_bytes} bytes "
                                 "(MAILGATE_JSON_MAX_BYTES)")
            chunks.append(chunk)
        return chunks
