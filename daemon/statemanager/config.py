"""Settings: a TOML file, overridden by `STATEMANAGER_*` environment variables, overridden by
command-line flags (SPEC §8). Validated once, at start-up; an invalid value raises ConfigError
naming the key in the form the user wrote it (file key, variable or flag).

Every setting is `section.key`; its variable is `STATEMANAGER_SECTION_KEY` and its flag
`--section-key`, so one table below defines all three, and which commands show the flag.
"""

from __future__ import annotations

import math
import socket
import ssl
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from statemanager import webconfig
from statemanager.errors import ConfigError
from statemanager.keys import KeyLayout
from statemanager.webconfig import WebConfig

DEFAULT_CONFIG_PATH = Path("/etc/statemanager/statemanager.toml")
LOG_FORMATS = ("auto", "json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")
MAX_CONFIG_BYTES = 1 << 20  # a real config file is a few hundred bytes


def _endpoints(value: object) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise ValueError("must be a list of http(s)://host:port URLs")
    result = tuple(i.strip() for i in items if i.strip())
    for url in result:
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.username or parts.password:
            # Never echo it back: the user part may hold a password.
            raise ValueError("credentials in an endpoint URL are not supported; use etcd.username")
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or not port
            or parts.path not in ("", "/")
            or parts.query
            or parts.fragment
        ):
            raise ValueError(f"{url!r} is not http://host:port or https://host:port")
    if len({urlsplit(url).scheme for url in result}) > 1:
        raise ValueError("mixes http:// and https:// endpoints; use one scheme for all")
    return result


def _optional_text(value: object) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise ValueError("must be text")
    return value


def _address(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("must be host:port")
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not host:port")
    return value


def _positive(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int of 400 digits
        raise ValueError(f"{value!r} is not a number") from None
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{value!r} must be a positive, finite number")
    return number


def _positive_int(value: object) -> int:
    number = _positive(value)
    if number != int(number):
        raise ValueError(f"{value!r} must be a whole number")
    return int(number)


def _choice(options: tuple[str, ...]) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if not isinstance(value, str) or value.lower() not in options:
            raise ValueError(f"{value!r} is not one of {', '.join(options)}")
        return value.lower()

    return parse


def _readable_file(value: object) -> Path | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise ValueError("must be a file path")
    path = Path(value)
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot read {value!r}: {exc.strerror}") from None
    return path


def _node_name(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 253:
        raise ValueError(f"{value!r} must be a non-empty name of at most 253 characters")
    return value.strip()


def _lease_ttl(value: object) -> int:
    ttl = _positive_int(value)
    if ttl < 2:
        raise ValueError(f"{value!r} must be at least 2 (etcd's lease granularity is 1 s)")
    return ttl


def _flag(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{value!r} is not true or false")


def _prefix(value: object) -> str:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise ValueError(f"{value!r} must be a non-empty key prefix without spaces")
    return value


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files for a TLS channel: the CA that signs the server (None: the system's trusted
    CAs), and a client certificate and key for mutual TLS."""

    ca_file: Path | None
    cert_file: Path | None = None
    key_file: Path | None = None

    def pem(self) -> tuple[bytes | None, bytes | None, bytes | None]:
        """(root certificates, private key, certificate chain), the order gRPC's
        `ssl_channel_credentials` takes them in."""

        def read(path: Path | None) -> bytes | None:
            return path.read_bytes() if path else None

        return read(self.ca_file), read(self.key_file), read(self.cert_file)


@dataclass(frozen=True, slots=True)
class ServerTls:
    """Serve clients over TLS with this certificate; with `client_ca`, require client
    certificates signed by it (mutual TLS)."""

    cert_file: Path
    key_file: Path
    client_ca: Path | None = None

    def pem(self) -> tuple[bytes, bytes, bytes | None]:
        """(private key, certificate chain, client CA), as gRPC's `ssl_server_credentials`
        takes them."""
        ca = self.client_ca.read_bytes() if self.client_ca else None
        return self.key_file.read_bytes(), self.cert_file.read_bytes(), ca


# The commands whose flags a setting gets. Every command reads the whole configuration (one
# file serves them all, so a bad value is named wherever it is read); the flags only offer what
# the command uses.
DAEMON_ONLY = frozenset({"run"})
EVERY_COMMAND = frozenset({"run", "evaluate", "status", "triggers"})


@dataclass(frozen=True, slots=True)
class Credential:
    """A systemd credential (`LoadCredential=NAME:…`, read from `$CREDENTIALS_DIRECTORY/NAME`)
    that supplies a secret setting nobody set otherwise: its text (`text`, a password) or
    its path (a private key file)."""

    name: str
    text: bool = False


@dataclass(frozen=True, slots=True)
class Option:
    """One setting: its dotted name, parser (raises ValueError with the reason), help, the
    commands that take it as a flag, and the systemd credential that may hold it."""

    name: str
    parse: Callable[[object], Any]
    default: Any
    help: str
    commands: frozenset[str] = DAEMON_ONLY
    credential: Credential | None = None

    @property
    def env(self) -> str:
        return "STATEMANAGER_" + self.name.replace(".", "_").upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace(".", "-").replace("_", "-")


_LAYOUT = KeyLayout()  # the defaults of SPEC §2 and §5

OPTIONS: tuple[Option, ...] = (
    Option(
        "etcd.endpoints",
        _endpoints,
        (),
        "etcd client URLs, comma-separated in the environment and on the command line; "
        "none configured: `run` starts a local development etcd",
        commands=EVERY_COMMAND,
    ),
    Option(
        "etcd.timeout_seconds",
        _positive,
        5.0,
        "deadline of every etcd request",
        commands=EVERY_COMMAND,
    ),
    Option(
        "etcd.ca_file",
        _readable_file,
        None,
        "PEM CA that signs the etcd members' certificates (https endpoints; default: system CAs)",
        commands=EVERY_COMMAND,
    ),
    Option(
        "etcd.cert_file",
        _readable_file,
        None,
        "PEM client certificate for mutual TLS",
        commands=EVERY_COMMAND,
    ),
    Option(
        "etcd.key_file",
        _readable_file,
        None,
        "PEM client key for mutual TLS",
        commands=EVERY_COMMAND,
        credential=Credential("etcd-client-key"),
    ),
    Option(
        "etcd.username", _optional_text, None, "etcd user (auth enabled)", commands=EVERY_COMMAND
    ),
    Option(
        "etcd.password",
        _optional_text,
        None,
        "the etcd user's password; under systemd prefer its credential to a variable",
        commands=EVERY_COMMAND,
        credential=Credential("etcd-password", text=True),
    ),
    Option(
        "etcd.watch_silence_seconds",
        _positive,
        60.0,
        "a watch with neither events nor progress notifications this long is restarted",
    ),
    Option(
        "etcd.resync_interval_seconds",
        _positive,
        600.0,
        "full relist and re-evaluation as a backstop (jittered ±20%)",
    ),
    Option(
        "prefixes.containers",
        _prefix,
        _LAYOUT.containers,
        "container info keys",
        commands=EVERY_COMMAND,
    ),
    Option(
        "prefixes.packages", _prefix, _LAYOUT.packages, "Package spec keys", commands=EVERY_COMMAND
    ),
    Option("prefixes.models", _prefix, _LAYOUT.models, "Model spec keys", commands=EVERY_COMMAND),
    Option(
        "prefixes.scenarios",
        _prefix,
        _LAYOUT.scenarios,
        "Scenario spec keys",
        commands=EVERY_COMMAND,
    ),
    Option(
        "prefixes.model_states",
        _prefix,
        _LAYOUT.model_states,
        "written model states",
        commands=EVERY_COMMAND,
    ),
    Option(
        "prefixes.package_states",
        _prefix,
        _LAYOUT.package_states,
        "written package states",
        commands=EVERY_COMMAND,
    ),
    Option(
        "prefixes.own",
        _prefix,
        _LAYOUT.own,
        "everything else the daemon keeps in etcd",
        commands=EVERY_COMMAND,
    ),
    Option(
        "actioncontroller.address",
        _address,
        "127.0.0.1:47001",
        "ActionController gRPC host:port",
    ),
    Option("actioncontroller.timeout_seconds", _positive, 5.0, "deadline of every Reconcile call"),
    Option(
        "actioncontroller.max_backoff_seconds",
        _positive,
        30.0,
        "longest wait between retries of an undelivered reconcile trigger",
    ),
    Option(
        "actioncontroller.max_refusals",
        _positive_int,
        10,
        "refusals (a refusal gRPC code or non-zero status) after which a trigger moves to the "
        "dead letters",
    ),
    Option(
        "actioncontroller.max_trigger_age_seconds",
        _positive,
        3600.0,
        "a trigger refused when this old (since the delivering daemon took it on) moves to the "
        "dead letters",
    ),
    Option(
        "actioncontroller.ca_file",
        _readable_file,
        None,
        "PEM CA that signs ActionController's certificate; set: TLS",
    ),
    Option(
        "actioncontroller.cert_file",
        _readable_file,
        None,
        "PEM client certificate for mutual TLS (with key_file)",
    ),
    Option(
        "actioncontroller.key_file",
        _readable_file,
        None,
        "PEM client key for mutual TLS",
        credential=Credential("actioncontroller-client-key"),
    ),
    Option(
        "grpc.enabled",
        _flag,
        False,
        "serve Pullpiri's StateManager gRPC service (drop-in for Pullpiri's own)",
    ),
    Option("grpc.address", _address, "127.0.0.1:47006", "host:port of that gRPC service"),
    Option(
        "grpc.tls_cert_file",
        _readable_file,
        None,
        "PEM certificate (chain) of that service; set (with tls_key_file): TLS only",
    ),
    Option(
        "grpc.tls_key_file",
        _readable_file,
        None,
        "PEM private key of tls_cert_file",
        credential=Credential("grpc-server-key"),
    ),
    Option(
        "grpc.tls_client_ca_file",
        _readable_file,
        None,
        "PEM CA; set: only clients with a certificate it signed are served (mutual TLS)",
    ),
    Option("metrics.address", _address, "127.0.0.1:9479", "Prometheus /metrics host:port"),
    Option(
        "metrics.web_config_file",
        _readable_file,
        None,
        "exporter-toolkit web config (YAML): TLS, client certificates, basic auth for the "
        "HTTP server",
    ),
    Option(
        "ha.node_name",
        _node_name,
        socket.gethostname(),
        "this daemon's name in the leader election; unique per daemon (default: hostname)",
    ),
    Option(
        "ha.lease_ttl_seconds",
        _lease_ttl,
        10,
        "leader lease TTL: a dead leader is replaced within it; renewed every third of it",
    ),
    Option(
        "log.format",
        _choice(LOG_FORMATS),
        "auto",
        "auto: console on a terminal, else JSON",
        commands=EVERY_COMMAND,
    ),
    Option("log.level", _choice(LOG_LEVELS), "info", "lowest level logged", commands=EVERY_COMMAND),
    Option(
        "inputs.max_value_bytes",
        _positive_int,
        256 * 1024,
        "larger container or spec values are rejected as bad input",
        commands=EVERY_COMMAND,
    ),
)


@dataclass(frozen=True, slots=True)
class Settings:
    """Validated settings; build with `load` (defaults live in OPTIONS only)."""

    etcd_endpoints: tuple[str, ...]
    etcd_timeout_seconds: float
    etcd_tls: TlsFiles | None  # set exactly when the endpoints are https://
    etcd_username: str | None
    etcd_password: str | None = field(repr=False)
    etcd_watch_silence_seconds: float
    etcd_resync_interval_seconds: float
    layout: KeyLayout
    actioncontroller_address: str
    actioncontroller_timeout_seconds: float
    actioncontroller_max_backoff_seconds: float
    actioncontroller_max_refusals: int
    actioncontroller_max_trigger_age_seconds: float
    actioncontroller_tls: TlsFiles | None
    grpc_enabled: bool
    grpc_address: str
    grpc_tls: ServerTls | None  # None: the service is plaintext
    metrics_address: str
    metrics_web_config: WebConfig
    ha_node_name: str
    ha_lease_ttl_seconds: int
    log_format: str
    log_level: str
    inputs_max_value_bytes: int


def _read_file(path: Path, explicit: bool) -> dict[str, object]:
    """The file's settings flattened to dotted names. A missing default file is fine; any other
    file that is not a valid config, whatever its bytes, is a ConfigError."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)  # bounded: `--config /dev/zero` must not eat memory
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"config file {path}: not found") from None
        return {}
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path}: larger than {MAX_CONFIG_BYTES} bytes")
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path}: not UTF-8 at byte {exc.start}") from None
    except ValueError as exc:  # TOMLDecodeError, or an integer of over 4,300 digits
        raise ConfigError(f"config file {path}: {exc}") from None
    except RecursionError:  # tomllib recurses once per level of nested arrays or tables
        raise ConfigError(f"config file {path}: values nested too deeply") from None
    flat: dict[str, object] = {}
    for section, body in doc.items():
        if not isinstance(body, dict):
            raise ConfigError(f"config file {path}: [{section}] must be a table")
        for key, value in body.items():
            flat[f"{section}.{key}"] = value
    known = {o.name for o in OPTIONS}
    unknown = sorted(set(flat) - known)
    if unknown:
        raise ConfigError(f"config file {path}: unknown key {unknown[0]}")
    return flat


def _tls_files(values: Mapping[str, Any], section: str, required: bool) -> TlsFiles | None:
    """The section's ca/cert/key files, checked to load together (a mismatched key or a file
    that is not PEM is named at start-up, not at the first handshake)."""
    ca, cert, key = (values[f"{section}.{n}"] for n in ("ca_file", "cert_file", "key_file"))
    if (cert is None) != (key is None):
        raise ConfigError(f"{section}.cert_file and {section}.key_file go together")
    if not required:
        if cert is not None:
            raise ConfigError(f"{section}.cert_file is set but TLS is not in use")
        return None
    try:
        context = ssl.create_default_context(cafile=str(ca) if ca else None)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"{section}.ca_file {ca}: not a PEM CA certificate ({exc})") from None
    if cert is not None:
        _load_pair(context, (f"{section}.cert_file", cert), (f"{section}.key_file", key))
    return TlsFiles(ca, cert, key)


def _load_pair(context: ssl.SSLContext, cert: tuple[str, Path], key: tuple[str, Path]) -> None:
    """Load a (setting name, path) certificate and key into `context`, or name both settings."""
    try:
        context.load_cert_chain(str(cert[1]), str(key[1]))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"{cert[0]} {cert[1]} and {key[0]} {key[1]} do not load as a pair"
            f" ({exc.__class__.__name__}: {getattr(exc, 'reason', None) or exc})"
        ) from None


def _grpc_tls(values: Mapping[str, Any]) -> ServerTls | None:
    """The gRPC service's certificate, key and client CA, checked to load at start-up."""
    cert, key, ca = (values[f"grpc.tls_{n}_file"] for n in ("cert", "key", "client_ca"))
    if (cert is None) != (key is None):
        raise ConfigError("grpc.tls_cert_file and grpc.tls_key_file go together")
    if cert is None:
        if ca is not None:
            raise ConfigError("grpc.tls_client_ca_file needs grpc.tls_cert_file and tls_key_file")
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _load_pair(context, ("grpc.tls_cert_file", cert), ("grpc.tls_key_file", key))
    if ca is not None:
        try:
            context.load_verify_locations(cafile=str(ca))
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"grpc.tls_client_ca_file {ca}: not a PEM CA certificate ({exc})"
            ) from None
    return ServerTls(cert, key, ca)


def _etcd_tls(values: Mapping[str, Any]) -> TlsFiles | None:
    endpoints = values["etcd.endpoints"]
    secure = bool(endpoints) and endpoints[0].startswith("https://")
    if values["etcd.ca_file"] is not None and not secure:
        raise ConfigError("etcd.ca_file is set but etcd.endpoints are not https://")
    return _tls_files(values, "etcd", secure)


def _credentials(values: Mapping[str, Any]) -> tuple[str | None, str | None]:
    user, password = values["etcd.username"], values["etcd.password"]
    if (user is None) != (password is None):
        raise ConfigError("etcd.username and etcd.password go together")
    return user, password


def _systemd_credential(option: Option, env: Mapping[str, str]) -> tuple[str, str] | None:
    """(raw value, where) from the option's credential when systemd passed it to the service;
    a setting given any other way wins (see README.md, "Secrets")."""
    directory = env.get("CREDENTIALS_DIRECTORY")
    if option.credential is None or not directory:
        return None
    path = Path(directory) / option.credential.name
    if not path.is_file():
        return None
    where = f"credential {option.credential.name} for {option.name}"
    if not option.credential.text:
        return str(path), where
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc}") from None
    # `echo secret > file` adds a newline that is no part of the secret.
    return text.removesuffix("\n"), where


def _web_config(path: Path | None) -> WebConfig:
    """The file read and checked now, so a mistake in it stops the start (exit 2)."""
    return webconfig.load(path) if path is not None else WebConfig()


def load(
    path: Path | None,
    env: Mapping[str, str],
    flags: Mapping[str, object],
) -> Settings:
    """Merge systemd credential < file < environment < flags (`flags` maps option names to
    given values)."""
    from_file = _read_file(path or DEFAULT_CONFIG_PATH, explicit=path is not None)
    values: dict[str, Any] = {}
    for option in OPTIONS:
        raw: object
        if flags.get(option.name) is not None:
            raw, where = flags[option.name], option.flag
        elif option.env in env:
            raw, where = env[option.env], option.env
        elif option.name in from_file:
            raw, where = from_file[option.name], f"{option.name} in {path or DEFAULT_CONFIG_PATH}"
        elif (given := _systemd_credential(option, env)) is not None:
            raw, where = given
        else:
            values[option.name] = option.default
            continue
        try:
            values[option.name] = option.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    prefixes = {n: v for n, v in values.items() if n.startswith("prefixes.")}
    for a, pa in prefixes.items():
        for b, pb in prefixes.items():
            if a != b and pb.startswith(pa):
                raise ConfigError(f"{b}: {pb!r} lies inside {a} {pa!r}; prefixes must not overlap")
    layout = KeyLayout(**{n.split(".", 1)[1]: v for n, v in prefixes.items()})
    username, password = _credentials(values)
    return Settings(
        etcd_endpoints=values["etcd.endpoints"],
        etcd_timeout_seconds=values["etcd.timeout_seconds"],
        etcd_tls=_etcd_tls(values),
        etcd_username=username,
        etcd_password=password,
        etcd_watch_silence_seconds=values["etcd.watch_silence_seconds"],
        etcd_resync_interval_seconds=values["etcd.resync_interval_seconds"],
        layout=layout,
        actioncontroller_address=values["actioncontroller.address"],
        actioncontroller_timeout_seconds=values["actioncontroller.timeout_seconds"],
        actioncontroller_max_backoff_seconds=values["actioncontroller.max_backoff_seconds"],
        actioncontroller_max_refusals=values["actioncontroller.max_refusals"],
        actioncontroller_max_trigger_age_seconds=values["actioncontroller.max_trigger_age_seconds"],
        actioncontroller_tls=_tls_files(
            values, "actioncontroller", values["actioncontroller.ca_file"] is not None
        ),
        grpc_enabled=values["grpc.enabled"],
        grpc_address=values["grpc.address"],
        grpc_tls=_grpc_tls(values),
        metrics_address=values["metrics.address"],
        metrics_web_config=_web_config(values["metrics.web_config_file"]),
        ha_node_name=values["ha.node_name"],
        ha_lease_ttl_seconds=values["ha.lease_ttl_seconds"],
        log_format=values["log.format"],
        log_level=values["log.level"],
        inputs_max_value_bytes=values["inputs.max_value_bytes"],
    )
