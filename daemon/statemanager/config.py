"""Settings: a TOML file, overridden by `STATEMANAGER_*` environment variables, overridden by
command-line flags (SPEC §8). Validated once, at start-up; an invalid value raises ConfigError
naming the key in the form the user wrote it (file key, variable or flag).

Every setting is `section.key`; its variable is `STATEMANAGER_SECTION_KEY` and its flag
`--section-key`, so one table below defines all three.
"""

from __future__ import annotations

import math
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from statemanager.errors import ConfigError
from statemanager.keys import KeyLayout

DEFAULT_CONFIG_PATH = Path("/etc/statemanager/statemanager.toml")
LOG_FORMATS = ("auto", "json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")


def _endpoints(value: object) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise ValueError("must be a list of http://host:port URLs")
    result = tuple(i.strip() for i in items if i.strip())
    for url in result:
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            port = None
        if (
            parts.scheme != "http"
            or not parts.hostname
            or not port
            or parts.path not in ("", "/")
            or parts.query
            or parts.fragment
        ):
            raise ValueError(f"{url!r} is not http://host:port (https comes with TLS support)")
    return result


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
    except (TypeError, ValueError):
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


def _prefix(value: object) -> str:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise ValueError(f"{value!r} must be a non-empty key prefix without spaces")
    return value


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files for a TLS channel: the CA that signs the server; a client pair for mutual TLS."""

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass(frozen=True, slots=True)
class Option:
    """One setting: its dotted name, parser (raises ValueError with the reason) and help."""

    name: str
    parse: Callable[[object], Any]
    default: Any
    help: str

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
    ),
    Option("etcd.timeout_seconds", _positive, 5.0, "deadline of every etcd request"),
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
    Option("prefixes.containers", _prefix, _LAYOUT.containers, "container info keys"),
    Option("prefixes.packages", _prefix, _LAYOUT.packages, "Package spec keys"),
    Option("prefixes.models", _prefix, _LAYOUT.models, "Model spec keys"),
    Option("prefixes.scenarios", _prefix, _LAYOUT.scenarios, "Scenario spec keys"),
    Option("prefixes.model_states", _prefix, _LAYOUT.model_states, "written model states"),
    Option("prefixes.package_states", _prefix, _LAYOUT.package_states, "written package states"),
    Option("prefixes.own", _prefix, _LAYOUT.own, "everything else the daemon keeps in etcd"),
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
    Option("actioncontroller.key_file", _readable_file, None, "PEM client key for mutual TLS"),
    Option("metrics.address", _address, "127.0.0.1:9479", "Prometheus /metrics host:port"),
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
    Option("log.format", _choice(LOG_FORMATS), "auto", "auto: console on a terminal, else JSON"),
    Option("log.level", _choice(LOG_LEVELS), "info", "lowest level logged"),
    Option(
        "inputs.max_value_bytes",
        _positive_int,
        256 * 1024,
        "larger container or spec values are rejected as bad input",
    ),
)


@dataclass(frozen=True, slots=True)
class Settings:
    """Validated settings; build with `load` (defaults live in OPTIONS only)."""

    etcd_endpoints: tuple[str, ...]
    etcd_timeout_seconds: float
    etcd_watch_silence_seconds: float
    etcd_resync_interval_seconds: float
    layout: KeyLayout
    actioncontroller_address: str
    actioncontroller_timeout_seconds: float
    actioncontroller_max_backoff_seconds: float
    actioncontroller_tls: TlsFiles | None
    metrics_address: str
    ha_node_name: str
    ha_lease_ttl_seconds: int
    log_format: str
    log_level: str
    inputs_max_value_bytes: int


def _read_file(path: Path, explicit: bool) -> dict[str, object]:
    """The file's settings flattened to dotted names. A missing default file is fine."""
    try:
        with path.open("rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"config file {path}: not found") from None
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
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


def _tls(values: Mapping[str, Any]) -> TlsFiles | None:
    ca, cert, key = (values[f"actioncontroller.{n}"] for n in ("ca_file", "cert_file", "key_file"))
    if (cert is None) != (key is None):
        raise ConfigError("actioncontroller.cert_file and actioncontroller.key_file go together")
    if ca is None:
        if cert is not None:
            raise ConfigError("actioncontroller.cert_file needs actioncontroller.ca_file (TLS)")
        return None
    return TlsFiles(ca, cert, key)


def load(
    path: Path | None,
    env: Mapping[str, str],
    flags: Mapping[str, object],
) -> Settings:
    """Merge file < environment < flags (`flags` maps option names to given values)."""
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
    return Settings(
        etcd_endpoints=values["etcd.endpoints"],
        etcd_timeout_seconds=values["etcd.timeout_seconds"],
        etcd_watch_silence_seconds=values["etcd.watch_silence_seconds"],
        etcd_resync_interval_seconds=values["etcd.resync_interval_seconds"],
        layout=layout,
        actioncontroller_address=values["actioncontroller.address"],
        actioncontroller_timeout_seconds=values["actioncontroller.timeout_seconds"],
        actioncontroller_max_backoff_seconds=values["actioncontroller.max_backoff_seconds"],
        actioncontroller_tls=_tls(values),
        metrics_address=values["metrics.address"],
        ha_node_name=values["ha.node_name"],
        ha_lease_ttl_seconds=values["ha.lease_ttl_seconds"],
        log_format=values["log.format"],
        log_level=values["log.level"],
        inputs_max_value_bytes=values["inputs.max_value_bytes"],
    )
