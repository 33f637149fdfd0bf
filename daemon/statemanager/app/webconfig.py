"""The HTTP server's web configuration file, in the format of Prometheus' exporter-toolkit:

    tls_server_config:
      cert_file: server.pem            # relative paths are relative to this file
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert
      client_ca_file: clients-ca.pem
      min_version: TLS13               # TLS12 (default) or TLS13
    basic_auth_users:
      prometheus: $2y$10$...           # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':\\n')

Read and checked at start-up and on every reload (SIGHUP): an unknown key, a file that cannot
be read, a certificate and key that do not belong together, a value that is not a bcrypt hash
or an unknown client_auth_type raises ConfigError naming it, so the daemon exits 2 (or keeps
its previous configuration on reload) instead of serving something weaker than asked for.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import ssl
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import yaml

from statemanager.core.errors import ConfigError

_TLS_KEYS = ("cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version")
_FILE_KEYS = ("cert_file", "key_file", "client_ca_file")
_TOP_KEYS = ("tls_server_config", "basic_auth_users")
_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
# exporter-toolkit's names (Go's tls.ClientAuthType). RequestClientCert asks for a certificate
# and neither verifies nor uses it, so who gets in is exactly as with NoClientCert: both turn
# client certificates off. RequireAnyClientCert demands a certificate nobody verifies, which
# Python's ssl module cannot do (it verifies every certificate it receives): refused.
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_BCRYPT = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
# Checked against when the user is unknown, so a wrong user name costs as long as a wrong
# password and response times do not tell which user names exist.
_DUMMY_HASH = b"$2b$10$qn1ZMMynvjGMzvcEMDmwKuW6g8/uKLLFPTLsR07dE/fQP28zBeF/i"
_CACHE_SIZE = 256


class BasicAuth:
    """BasicAuth checks `Authorization: Basic` headers against bcrypt hashes.

    bcrypt is slow on purpose (tens to hundreds of milliseconds at cost 10), and Prometheus sends
    the same credentials with every scrape, so outcomes are cached (as exporter-toolkit does),
    keyed by an HMAC of user and password under a key made at start-up: the cache never holds a
    password. Failures are cached too, so a client stuck on a wrong password costs one bcrypt
    check, not one per request. A lock serialises bcrypt itself: a flood of guesses then uses
    at most one core, leaving the other to the event loop.
    """

    def __init__(self, users: Mapping[str, bytes]) -> None:
        self._users = dict(users)
        self._key = secrets.token_bytes(32)
        self._cache: OrderedDict[bytes, bool] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, header: str | None) -> bool:
        """Check is true when `header` (an Authorization header value, or None) names a
        configured user with the right password."""
        if header is None:
            return False
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user, sep, password = decoded.partition(b":")
        if not sep:
            return False
        digest = hmac.new(self._key, user + b"\0" + password, hashlib.sha256).digest()
        with self._lock:
            known = self._cache.get(digest)
            if known is not None:
                self._cache.move_to_end(digest)
                return known
            hashed = self._users.get(user.decode("utf-8", "replace"))
            try:
                ok = bcrypt.checkpw(password, hashed or _DUMMY_HASH) and hashed is not None
            except ValueError:  # over bcrypt's 72 bytes: no configured password is that long
                ok = False
            self._cache[digest] = ok
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
            return ok


@dataclass(frozen=True, slots=True)
class WebConfig:
    """WebConfig is what the web configuration file asks for: TLS (None: plain HTTP) and basic
    auth (None: no authentication). Two are equal when read from the same bytes (the file and
    every file it names), so a reload can tell whether anything changed."""

    tls: ssl.SSLContext | None = field(default=None, compare=False, repr=False)
    auth: BasicAuth | None = field(default=None, compare=False, repr=False)
    fingerprint: str = ""  # a digest of those bytes (shortened: it covers a private key)


def load(path: Path) -> WebConfig:
    """Read and check the file at `path`; raises ConfigError naming the first problem."""
    where = f"metrics.web_config_file {path}"
    try:
        raw = path.read_bytes()
        doc = yaml.safe_load(raw.decode())
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not YAML: {exc}") from None
    digest = hashlib.sha256(raw)
    if doc is None:  # an empty file: exporter-toolkit's default, plain HTTP
        return WebConfig(fingerprint=digest.hexdigest()[:12])
    body = _mapping(doc, where, "the file", _TOP_KEYS)
    tls_body, users_body = body.get("tls_server_config"), body.get("basic_auth_users")
    context = None
    if tls_body is not None:
        tls = _mapping(tls_body, where, "tls_server_config", _TLS_KEYS)
        context, files = _tls(tls, path.parent, where)
        for file in files:
            digest.update(file.read_bytes())
    users = _users(users_body, where) if users_body is not None else {}
    # No users listed: no authentication, as with exporter-toolkit.
    auth = BasicAuth(users) if users else None
    return WebConfig(context, auth, digest.hexdigest()[:12])


def _mapping(value: object, where: str, what: str, known: tuple[str, ...]) -> dict[str, object]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ConfigError(f"{where}: {what} must be a mapping of names to values")
    for key in value:
        if key not in known:
            prefix = "" if what == "the file" else f"{what}."
            raise ConfigError(f"{where}: unknown key {prefix}{key} (supported: {', '.join(known)})")
    return value


def _text(body: Mapping[str, object], key: str, where: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: tls_server_config.{key} must be non-empty text")
    return value


def _tls(body: Mapping[str, object], base: Path, where: str) -> tuple[ssl.SSLContext, list[Path]]:
    """The server's TLS context, and the files it was built from."""
    cert, key, client_ca = (_file(body, k, base, where) for k in _FILE_KEYS)
    if cert is None or key is None:
        raise ConfigError(f"{where}: tls_server_config needs both cert_file and key_file")
    verify = _client_verification(body, client_ca is not None, where)
    version = _text(body, "min_version", where) or "TLS12"
    if version not in _VERSIONS:
        raise ConfigError(
            f"{where}: tls_server_config.min_version {version!r} is not one of "
            f"{', '.join(_VERSIONS)}"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[version]
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"{where}: tls_server_config.cert_file {cert} and key_file {key} do not load as "
            f"a pair ({getattr(exc, 'reason', None) or exc})"
        ) from None
    if client_ca is not None:
        try:
            context.load_verify_locations(cafile=client_ca)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"{where}: tls_server_config.client_ca_file {client_ca}: not a PEM CA "
                f"certificate ({getattr(exc, 'reason', None) or exc})"
            ) from None
    context.verify_mode = verify
    return context, [f for f in (cert, key, client_ca) if f is not None]


def _file(body: Mapping[str, object], key: str, base: Path, where: str) -> Path | None:
    """The existing file `key` names, relative to `base` (an absolute name replaces it)."""
    name = _text(body, key, where)
    if name is None:
        return None
    path = base / name
    if not path.is_file():
        raise ConfigError(f"{where}: tls_server_config.{key} {path}: no such file")
    return path


def _client_verification(body: Mapping[str, object], has_ca: bool, where: str) -> ssl.VerifyMode:
    """How client certificates are verified, as client_auth_type asks and client_ca_file
    allows."""
    auth_type = _text(body, "client_auth_type", where) or "NoClientCert"
    if auth_type == "RequireAnyClientCert":
        raise ConfigError(
            f"{where}: tls_server_config.client_auth_type RequireAnyClientCert (a certificate "
            "nobody verifies) is not supported; use RequireAndVerifyClientCert with client_ca_file"
        )
    if auth_type not in _CLIENT_AUTH:
        raise ConfigError(
            f"{where}: tls_server_config.client_auth_type {auth_type!r} is not one of "
            f"{', '.join(_CLIENT_AUTH)}"
        )
    verify = _CLIENT_AUTH[auth_type]
    if verify is ssl.CERT_NONE and has_ca:
        raise ConfigError(
            f"{where}: tls_server_config.client_ca_file is set but client_auth_type "
            f"{auth_type} does not verify client certificates"
        )
    if verify is not ssl.CERT_NONE and not has_ca:
        raise ConfigError(
            f"{where}: tls_server_config.client_auth_type {auth_type} needs client_ca_file"
        )
    return verify


def _users(value: object, where: str) -> dict[str, bytes]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: basic_auth_users must be a mapping of users to bcrypt hashes")
    users: dict[str, bytes] = {}
    for user, hashed in value.items():
        if not isinstance(user, str) or not user or ":" in user:
            # Basic auth splits "user:password" at the first colon: such a user could never log in.
            raise ConfigError(f"{where}: basic_auth_users: {user!r} is not a user name")
        if not isinstance(hashed, str) or not _BCRYPT.fullmatch(hashed):
            raise ConfigError(
                f"{where}: basic_auth_users.{user}: not a bcrypt hash ($2a$, $2b$ or $2y$, "
                "cost 04-31, 53 characters of salt and hash)"
            )
        users[user] = hashed.encode()
    return users
