"""A client of a running gateway's REST API (HTTPS, a token): no LDAP here.

``mailgate account ...``, ``mailgate alias ...`` and ``mailgate domain ...``
(gateway/cli/account.py, alias.py, domain.py) are built on it. It needs only ``requests``.

Configuration, first found wins for each item:

1. command-line options (``--url``, ``--ca-file``, ``--token-file``);
2. the environment: ``MAILGATE_API_URL``, ``MAILGATE_API_TOKEN`` or
   ``MAILGATE_API_TOKEN_FILE`` (not both), ``MAILGATE_API_CA_FILE``,
   ``MAILGATE_API_TIMEOUT``;
3. a TOML file: ``--config PATH``, else ``MAILGATE_CLIENT_CONFIG``, else
   ``$XDG_CONFIG_HOME/mailgate/client.toml`` (``~/.config/...``) if it exists,
   with the keys ``url``, ``token`` or ``token_file``, ``ca_file``, ``timeout``;
4. with no URL from any of those: the development gateway of this machine, if
   its data directory (``MAILGATE_DATA_DIR``, else ``./var``, where ``make run``
   keeps it) holds an admin token: the URL ``mailgate serve`` wrote there
   (``api-url``; else ``MAILGATE_LISTEN`` or its default), its self-signed
   certificate as the CA, its admin token file, each unless configured; the
   client says so on stderr.

The token never comes from the command line (it would show in ``ps`` and in
shell history). TLS is always verified: against the CA file if one is named,
else the system CAs; there is no switch to turn verification off, and a URL
must be ``https://``.

Errors are :class:`ApiError` subclasses carrying an exit code that scripts
can rely on (:data:`EXIT_CODES`).
"""

from __future__ import annotations

import os
import stat
import sys
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urljoin, urlsplit

import requests

# Exit codes of the client commands (also in docs/client.md).
EXIT_OK = 0
EXIT_API = 1           # the API refused the request (400, 409, 413, 415, other 4xx)
EXIT_USAGE = 2         # bad command line or client configuration (argparse uses 2 too)
EXIT_NOT_FOUND = 3     # 404: no such account or alias (or a page past the last)
EXIT_AUTH = 4          # 401, 403, 429: no, a wrong or a too weak token
EXIT_UNAVAILABLE = 5   # no connection, TLS failure, timeout, 5xx (503: LDAP down)
EXIT_CODES = {
    EXIT_OK: "ok",
    EXIT_API: "the API refused the request (400, 409, other 4xx); its message and "
              "each field's error are printed",
    EXIT_USAGE: "bad command line or client configuration",
    EXIT_NOT_FOUND: "not found (404)",
    EXIT_AUTH: "authentication or permission (401, 403, 429)",
    EXIT_UNAVAILABLE: "gateway unreachable, TLS verification failed, timed out, or a "
                      "server error (5xx, 503 while LDAP is down)",
}

DEFAULT_TIMEOUT = 30.0
LOCAL_URL_FILE = "api-url"       # written by mailgate serve into its data directory
DEFAULT_DATA_DIR = "var"
DEFAULT_LISTEN = "127.0.0.1:8443"
CONFIG_NAME = Path("mailgate") / "client.toml"
PAGE_SIZE = 1000


class ClientError(Exception):
    """Something the client command reports on one line, with its exit code."""

    exit_code = EXIT_API

    def __init__(self, message: str, errors: Mapping[str, Any] | None = None,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = dict(errors or {})
        self.status = status


class ConfigError(ClientError):
    exit_code = EXIT_USAGE


class ApiError(ClientError):
    """The API answered with an error status."""

    exit_code = EXIT_API


class NotFound(ApiError):
    exit_code = EXIT_NOT_FOUND


class AuthError(ApiError):
    exit_code = EXIT_AUTH


class Unavailable(ClientError):
    exit_code = EXIT_UNAVAILABLE


@dataclass(frozen=True)
class ClientConfig:
    url: str
    token: str = field(repr=False)
    ca_file: Path | None = None
    timeout: float = DEFAULT_TIMEOUT


def default_config_path(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / CONFIG_NAME


def _read_toml(path: Path, required: bool) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if required:
            raise ConfigError(f"config file {path}: no such file") from None
        return {}
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read it ({exc.strerror})") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path}: not valid TOML ({exc})") from None
    unknown = sorted(set(data) - {"url", "token", "token_file", "ca_file", "timeout"})
    if unknown:
        raise ConfigError(f"config file {path}: unknown key(s) {', '.join(unknown)} "
                          "(known: url, token, token_file, ca_file, timeout)")
    for key in ("url", "token", "token_file", "ca_file"):
        if key in data and not isinstance(data[key], str):
            raise ConfigError(f"config file {path}: {key} must be a string")
    if "token" in data and os.name == "posix":
        mode = path.stat().st_mode
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            print(f"mailgate: warning: {path} holds a token and others may read it "
                  f"(chmod 600 {path})", file=sys.stderr)
    return data


def _read_token_file(path: str, where: str) -> str:
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read {path} ({exc.__class__.__name__})") from None
    if not token:
        raise ConfigError(f"{where}: {path} is empty")
    return token


@dataclass(frozen=True)
class LocalGateway:
    """A gateway this machine runs from a data directory (``make run``)."""

    data_dir: Path
    url: str
    token_file: Path
    ca_file: Path | None


def local_gateway(environ: Mapping[str, str]) -> LocalGateway | None:
    """The development gateway whose data directory is here, or None."""
    data_dir = Path(environ.get("MAILGATE_DATA_DIR", "").strip() or DEFAULT_DATA_DIR)
    token = data_dir / "admin-token"
    if not token.is_file():
        return None
    try:
        url = (data_dir / LOCAL_URL_FILE).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        url = ""
    if not url:
        host, _, port = (environ.get("MAILGATE_LISTEN", "").strip()
                         or DEFAULT_LISTEN).rpartition(":")
        host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "": "127.0.0.1"}.get(host, host)  # noqa: S104
        url = f"https://{host}:{port}"
    cert = data_dir / "tls" / "cert.pem"
    return LocalGateway(data_dir, url, token, cert if cert.is_file() else None)


def load_config(environ: Mapping[str, str] | None = None, *, config: Path | None = None,
                url: str | None = None, ca_file: Path | None = None,
                token_file: Path | None = None) -> ClientConfig:
    """The client's configuration (module docstring); ConfigError names what is wrong."""
    env = os.environ if environ is None else environ

    def get(name: str) -> str | None:
        value = env.get(name, "").strip()
        return value or None

    config_path = config or (Path(p) if (p := get("MAILGATE_CLIENT_CONFIG")) else None)
    required = config_path is not None
    config_path = config_path or default_config_path(env)
    data = _read_toml(config_path, required)
    shown = str(config_path)

    final_url = url or get("MAILGATE_API_URL") or data.get("url")
    local = None if final_url else local_gateway(env)
    if local is not None:
        final_url = local.url
    if not final_url:
        raise ConfigError("no gateway URL: set MAILGATE_API_URL, pass --url or put url = "
                          f"\"https://...\" in {shown}")
    parts = urlsplit(final_url)
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError(f"the gateway URL must be https://host[:port]: {final_url!r} "
                          "(the token is never sent in the clear)")
    try:
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError:
        raise ConfigError(f"bad port in the gateway URL {final_url!r}") from None

    token_from = "as configured"  # noqa: S105 (where the token came from)
    if token_file is not None:
        token = _read_token_file(str(token_file), "--token-file")
    else:
        direct, from_file = get("MAILGATE_API_TOKEN"), get("MAILGATE_API_TOKEN_FILE")
        if direct and from_file:
            raise ConfigError("set either MAILGATE_API_TOKEN or MAILGATE_API_TOKEN_FILE")
        if direct:
            token = direct
        elif from_file:
            token = _read_token_file(from_file, "MAILGATE_API_TOKEN_FILE")
        elif "token" in data and "token_file" in data:
            raise ConfigError(f"{shown}: set either token or token_file")
        elif data.get("token"):
            token = str(data["token"]).strip()
        elif data.get("token_file"):
            token = _read_token_file(str(data["token_file"]), f"{shown}: token_file")
        elif local is not None:
            token = _read_token_file(str(local.token_file), "the local gateway's admin token")
            token_from = str(local.token_file)
        else:
            raise ConfigError("no API token: set MAILGATE_API_TOKEN or MAILGATE_API_TOKEN_FILE, "
                              f"pass --token-file or put token_file = \"...\" in {shown}")

    ca_raw = str(ca_file) if ca_file else get("MAILGATE_API_CA_FILE") or data.get("ca_file")
    if not ca_raw and local is not None and local.ca_file is not None:
        ca_raw = str(local.ca_file)
    ca = Path(ca_raw) if ca_raw else None
    if ca is not None and not ca.is_file():
        raise ConfigError(f"CA file {ca}: no such file")

    timeout_raw = get("MAILGATE_API_TIMEOUT") or data.get("timeout") or DEFAULT_TIMEOUT
    try:
        timeout = float(timeout_raw)
    except (TypeError, ValueError):
        raise ConfigError(f"timeout: not a number: {timeout_raw!r}") from None
    if not 0 < timeout <= 3600:
        raise ConfigError("timeout: must be between 0 and 3600 seconds")
    if local is not None:
        print(f"mailgate: no gateway configured: using the local one at {local.url} "
              f"(data directory {local.data_dir}; CA {ca or 'the system CAs'}; "
              f"token {token_from})", file=sys.stderr)
    return ClientConfig(final_url.rstrip("/"), token, ca, timeout)


class _Bearer(requests.auth.AuthBase):
    """The token as a Bearer header (an auth object, so ~/.netrc cannot replace it)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or 443


def _quote_id(item_id: str) -> str:
    """An address or a domain as one path segment of a route."""
    if not item_id or "/" in item_id:
        raise ConfigError(f"not an address or a domain: {item_id!r}")
    return quote(item_id, safe="@+")


class ApiClient:
    """The gateway's REST API; every method returns the decoded JSON answer."""

    def __init__(self, config: ClientConfig, session: requests.Session | None = None) -> None:
        self.config = config
        self.session = session or requests.Session()
        self.session.headers["Accept"] = "application/json"
        self.session.headers["User-Agent"] = "mailgate-client"
        self._auth = _Bearer(config.token)
        # verify= goes on every request: requests lets REQUESTS_CA_BUNDLE
        # override Session.verify, but never an explicit argument.
        self._verify: str | bool = str(config.ca_file) if config.ca_file else True

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ---------------------------------------------------------------

    def request(self, method: str, path: str, *, json: Any = None,
                params: Mapping[str, Any] | None = None) -> Any:
        return self._send(method, self.config.url + path, json=json, params=params)

    def _send(self, method: str, url: str, *, json: Any = None,
              params: Mapping[str, Any] | None = None) -> Any:
        if _origin(url) != _origin(self.config.url):
            raise Unavailable(f"refusing to send the token to another origin: {url}")
        try:
            response = self.session.request(
                method, url, json=json, params=params, auth=self._auth,
                verify=self._verify, timeout=self.config.timeout, allow_redirects=False)
        except requests.exceptions.SSLError:
            hint = "" if self.config.ca_file else \
                " (a self-signed gateway needs --ca-file or MAILGATE_API_CA_FILE)"
            raise Unavailable(f"{self.config.url}: TLS handshake or certificate "
                              f"verification failed{hint}") from None
        except requests.exceptions.Timeout:
            raise Unavailable(f"{self.config.url}: no answer within "
                              f"{self.config.timeout:g} s") from None
        except requests.exceptions.ConnectionError:
            raise Unavailable(f"{self.config.url}: cannot connect") from None
        except requests.exceptions.RequestException as exc:
            raise Unavailable(f"{self.config.url}: request failed "
                              f"({exc.__class__.__name__})") from None
        with response:
            return self._answer(response)

    @staticmethod
    def _answer(response: requests.Response) -> Any:
        status = response.status_code
        if status == 204:
            return None
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        if 200 <= status < 300:
            if body is None:
                raise Unavailable(f"HTTP {status} without a JSON body")
            return body
        message = f"HTTP {status}"
        errors: dict[str, Any] = {}
        if isinstance(body, dict):
            if isinstance(body.get("message"), str):
                message = body["message"]
            if isinstance(body.get("errors"), dict):
                errors = body["errors"]
        if 300 <= status < 400:
            raise ApiError(f"HTTP {status}: unexpected redirect to "
                           f"{response.headers.get('Location', '?')}", status=status)
        if status == 429:
            retry = response.headers.get("Retry-After")
            message += f" (retry after {retry} s)" if retry else ""
        cls: type[ClientError]
        if status == 404:
            cls = NotFound
        elif status in (401, 403, 429):
            cls = AuthError
        elif status >= 500:
            cls = Unavailable
        else:
            cls = ApiError
        raise cls(message, errors, status)

    def list_all(self, path: str, *, domain: str | None = None, page: int | None = None,
             page_size: int | None = None) -> Iterator[dict[str, Any]]:
        """Every item of a list route, following its ``next`` links.

        With ``page``, only that page. A ``next`` link (absolute, or an
        absolute path) is followed when it names this route at the configured
        URL; otherwise (another origin, a proxy's path prefix lost) its page
        number is asked of the configured URL, so the token never goes anywhere
        else.
        """
        params: dict[str, Any] = {}
        if domain:
            params["domain"] = domain
        if page is not None:
            params["page"] = page
        params["page_size"] = page_size or PAGE_SIZE
        answer = self.request("GET", path, params=params)
        while True:
            if not isinstance(answer, dict) or not isinstance(answer.get("results"), list):
                raise Unavailable(f"GET {path}: not a list envelope")
            yield from answer["results"]
            following = answer.get("next")
            if page is not None or not following:
                return
            route = self.config.url + path
            joined = urljoin(route, following)    # the links may be absolute paths
            if joined.startswith(route + "?") and _origin(joined) == _origin(route):
                answer = self._send("GET", joined)
            else:
                number = parse_qs(urlsplit(following).query).get("page", [""])[0]
                if not number.isdigit():
                    raise Unavailable(f"GET {path}: a next link without a page number")
                answer = self.request("GET", path, params={**params, "page": int(number)})

    # -- domains -----------------------------------------------------------------

    def domains(self, page: int | None = None,
                page_size: int | None = None) -> Iterator[dict[str, Any]]:
        return self.list_all("/mail/domain/", page=page, page_size=page_size)

    def domain(self, name: str) -> Any:
        return self.request("GET", f"/mail/domain/{_quote_id(name)}/")

    def create_domain(self, name: str, limits: Mapping[str, int]) -> Any:
        return self.request("POST", "/mail/domain/", json={"name": name, **limits})

    def set_domain_limits(self, name: str, limits: Mapping[str, int]) -> Any:
        return self.request("PUT", f"/mail/domain/{_quote_id(name)}/", json=dict(limits))

    def delete_domain(self, name: str, cascade: bool = False) -> None:
        self.request("DELETE", f"/mail/domain/{_quote_id(name)}/",
                     params={"cascade": "true"} if cascade else None)

    def domain_usage(self, name: str) -> Any:
        return self.request("GET", f"/mail/domain/{_quote_id(name)}/usage/")

    # -- accounts ----------------------------------------------------------------

    def accounts(self, domain: str | None = None, page: int | None = None,
                 page_size: int | None = None) -> Iterator[dict[str, Any]]:
        return self.list_all("/mail/account/", domain=domain, page=page, page_size=page_size)

    def account(self, account_id: str) -> Any:
        return self.request("GET", f"/mail/account/{_quote_id(account_id)}/")

    def create_account(self, name: str, domain: str, password: str,
                       submission_disabled: bool | None = None,
                       spoofing_whitelist: str | None = None,
                       quota: int | None = None) -> Any:
        """``quota`` None: the domain's default_quota."""
        body: dict[str, Any] = {"name": name, "domain": domain, "password": password}
        for key, value in (("submission_disabled", submission_disabled),
                           ("spoofing_whitelist", spoofing_whitelist), ("quota", quota)):
            if value is not None:
                body[key] = value
        return self.request("POST", "/mail/account/", json=body)

    def account_usage(self, account_id: str) -> Any:
        return self.request("GET", f"/mail/account/{_quote_id(account_id)}/usage/")

    def account_action(self, account_id: str, action: str,
                       body: Mapping[str, Any] | None = None) -> Any:
        return self.request("POST", f"/mail/account/{_quote_id(account_id)}/{action}/",
                            json=dict(body) if body is not None else None)

    def delete_account(self, account_id: str) -> None:
        self.request("DELETE", f"/mail/account/{_quote_id(account_id)}/")

    # -- aliases -----------------------------------------------------------------

    def aliases(self, domain: str | None = None, page: int | None = None,
                page_size: int | None = None) -> Iterator[dict[str, Any]]:
        return self.list_all("/mail/alias/", domain=domain, page=page, page_size=page_size)

    def alias(self, alias_id: str) -> Any:
        return self.request("GET", f"/mail/alias/{_quote_id(alias_id)}/")

    def create_alias(self, name: str, domain: str, to: str) -> Any:
        return self.request("POST", "/mail/alias/", json={"name": name, "domain": domain,
                                                          "to": to})

    def set_alias(self, alias_id: str, to: str) -> Any:
        return self.request("PUT", f"/mail/alias/{_quote_id(alias_id)}/", json={"to": to})

    def delete_alias(self, alias_id: str) -> None:
        self.request("DELETE", f"/mail/alias/{_quote_id(alias_id)}/")

    # -- explain -----------------------------------------------------------------

    def explain(self, address: str, sender: str | None = None) -> Any:
        params = {"address": address}
        if sender is not None:
            params["from"] = sender
        return self.request("GET", "/mail/explain/", params=params)
