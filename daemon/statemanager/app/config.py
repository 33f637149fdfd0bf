"""Settings: a TOML file, overridden by `STATEMANAGER_*` environment variables, overridden by
command-line flags (README.md, "Configuration"); a systemd credential stands in for a secret
nobody set. Validated once, at start-up; an invalid value raises ConfigError naming the key in
the form the user wrote it (file key, variable or flag).

Each setting is declared once, as a field of a section dataclass (`Settings.etcd.endpoints` is
`[etcd]` `endpoints`): its type, parser, default, help, flags and credential. The file key,
variable, flag, `--help` text and README row are all derived from that declaration.
"""

from __future__ import annotations

import math
import socket
import ssl
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Generic, TypeVar, get_type_hints
from urllib.parse import urlsplit

from statemanager.adapters.tls import ServerTls, TlsFiles
from statemanager.app import webconfig
from statemanager.app.webconfig import WebConfig
from statemanager.core.errors import ConfigError
from statemanager.core.keys import KeyLayout

DEFAULT_CONFIG_PATH = Path("/etc/statemanager/statemanager.toml")
LOG_FORMATS = ("auto", "json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")
MAX_CONFIG_BYTES = 1 << 20  # a real config file is a few hundred bytes

T = TypeVar("T")
S = TypeVar("S")


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


def _count(value: object) -> int:
    if value in (0, "0"):
        return 0
    return _positive_int(value)


def _seconds_or_off(value: object) -> float:
    if value in (0, "0", "off"):
        return 0.0
    return _positive(value)


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


# The commands whose flags a setting gets. Every command reads the whole configuration (one
# file serves them all, so a bad value is named wherever it is read); the flags only offer what
# the command uses.
DAEMON_ONLY = frozenset({"run"})
EVERY_COMMAND = frozenset({"run", "evaluate", "status", "triggers", "history"})


@dataclass(frozen=True, slots=True)
class Credential:
    """A systemd credential (`LoadCredential=NAME:…`, read from `$CREDENTIALS_DIRECTORY/NAME`)
    that supplies a secret setting nobody set otherwise: its text (`text`, a password) or
    its path (a private key file)."""

    name: str
    text: bool = False


@dataclass(frozen=True, slots=True)
class Declaration(Generic[T]):
    """Everything about one setting but its name, which is the section and field it is declared
    as: parser (raises ValueError with the reason), default, help (Markdown: the README row's
    text), the commands that take it as a flag, the systemd credential that may hold it, how
    the default reads where its value says nothing (`shown`), and whether SIGHUP applies it."""

    parse: Callable[[object], T]
    default: T
    help: str
    commands: frozenset[str]
    credential: Credential | None
    shown: str | None
    reloadable: bool


_DECLARATION = "statemanager.setting"  # the key of a declaration in its field's metadata


def setting(
    parse: Callable[[object], T],
    default: T,
    help: str,
    *,
    commands: frozenset[str] = DAEMON_ONLY,
    credential: Credential | None = None,
    shown: str | None = None,
    reloadable: bool = False,
    secret: bool = False,
) -> T:
    """A section field declaring one setting. Typed as its value, so mypy checks the parser's
    result and the default against the field's annotation; `secret` keeps it out of reprs."""
    declared = Declaration(parse, default, help, commands, credential, shown, reloadable)
    return field(default=default, repr=not secret, metadata={_DECLARATION: declared})


def _check_client_tls(section: str, files: TlsFiles, required: bool) -> None:
    """A section's ca/cert/key files, checked to load together (a mismatched key or a file
    that is not PEM is named at start-up, not at the first handshake)."""
    ca, cert, key = files.ca_file, files.cert_file, files.key_file
    if (cert is None) != (key is None):
        raise ConfigError(f"{section}.cert_file and {section}.key_file go together")
    if not required:
        if cert is not None:
            raise ConfigError(f"{section}.cert_file is set but TLS is not in use")
        return
    try:
        context = ssl.create_default_context(cafile=str(ca) if ca else None)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"{section}.ca_file {ca}: not a PEM CA certificate ({exc})") from None
    if cert is not None and key is not None:
        _load_pair(context, (f"{section}.cert_file", cert), (f"{section}.key_file", key))


def _load_pair(context: ssl.SSLContext, cert: tuple[str, Path], key: tuple[str, Path]) -> None:
    """Load a (setting name, path) certificate and key into `context`, or name both settings."""
    try:
        context.load_cert_chain(str(cert[1]), str(key[1]))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"{cert[0]} {cert[1]} and {key[0]} {key[1]} do not load as a pair"
            f" ({exc.__class__.__name__}: {getattr(exc, 'reason', None) or exc})"
        ) from None


def _web_config(value: object) -> WebConfig:
    """The file read and checked now, so a mistake in it stops the start (exit 2)."""
    path = _readable_file(value)
    return webconfig.load(path) if path is not None else WebConfig()


_LAYOUT = KeyLayout()  # its defaults are the prefixes' (README.md, "Keys")

# Each setting is one field of a section below: `[section]` `key` in the file,
# STATEMANAGER_SECTION_KEY in the environment, --section-key on the command line, and one row
# of the README's configuration table (tests/test_docs.py checks that table is generated from
# here). A section's `check` tests the settings that go together (`load` calls it), naming
# them as the file does.


@dataclass(frozen=True, slots=True)
class EtcdSettings:
    endpoints: tuple[str, ...] = setting(
        _endpoints,
        (),
        "etcd client URLs, `http://host:port` or `https://host:port` (one scheme for all), "
        "comma-separated in env/flags. Several: the daemon talks to one and moves to the next "
        "when it is unreachable. None: `run` starts a development etcd.",
        commands=EVERY_COMMAND,
    )
    timeout_seconds: float = setting(
        _positive, 5.0, "deadline of every etcd request", commands=EVERY_COMMAND
    )
    ca_file: Path | None = setting(
        _readable_file,
        None,
        "PEM CA of the etcd members' certificates (https endpoints; none: the system's CAs)",
        commands=EVERY_COMMAND,
    )
    cert_file: Path | None = setting(
        _readable_file,
        None,
        "PEM client certificate for mutual TLS (with `key_file`)",
        commands=EVERY_COMMAND,
    )
    key_file: Path | None = setting(
        _readable_file,
        None,
        "PEM client key for mutual TLS",
        commands=EVERY_COMMAND,
        credential=Credential("etcd-client-key"),
    )
    username: str | None = setting(
        _optional_text, None, "etcd user when auth is enabled", commands=EVERY_COMMAND
    )
    password: str | None = setting(
        _optional_text,
        None,
        "its password; under systemd give it as the `etcd-password` credential (see "
        '"Secrets"), not a flag (visible in `ps`) or `Environment=` (visible in '
        "`systemctl show`)",
        commands=EVERY_COMMAND,
        credential=Credential("etcd-password", text=True),
        secret=True,
    )
    watch_silence_seconds: float = setting(
        _positive,
        60.0,
        "a watch with neither events nor progress notifications this long is treated as "
        "broken and resumed (progress is requested every third of it)",
    )
    resync_interval_seconds: float = setting(
        _positive,
        600.0,
        "full relist and re-evaluation as a backstop, jittered ±20%; changes the watch missed "
        "are logged as `resync_drift`",
    )

    def check(self) -> None:
        if (self.username is None) != (self.password is None):
            raise ConfigError("etcd.username and etcd.password go together")
        if self.ca_file is not None and not self.secure:
            raise ConfigError("etcd.ca_file is set but etcd.endpoints are not https://")
        _check_client_tls("etcd", self._files, self.secure)

    @property
    def secure(self) -> bool:
        return bool(self.endpoints) and self.endpoints[0].startswith("https://")

    @property
    def _files(self) -> TlsFiles:
        return TlsFiles(self.ca_file, self.cert_file, self.key_file)

    @property
    def tls(self) -> TlsFiles | None:
        """Set exactly when the endpoints are https://."""
        return self._files if self.secure else None


@dataclass(frozen=True, slots=True)
class PrefixSettings:
    containers: str = setting(
        _prefix, _LAYOUT.containers, "container info keys", commands=EVERY_COMMAND
    )
    packages: str = setting(_prefix, _LAYOUT.packages, "Package spec keys", commands=EVERY_COMMAND)
    models: str = setting(_prefix, _LAYOUT.models, "Model spec keys", commands=EVERY_COMMAND)
    scenarios: str = setting(
        _prefix, _LAYOUT.scenarios, "Scenario spec keys", commands=EVERY_COMMAND
    )
    model_states: str = setting(
        _prefix, _LAYOUT.model_states, "written model states", commands=EVERY_COMMAND
    )
    package_states: str = setting(
        _prefix, _LAYOUT.package_states, "written package states", commands=EVERY_COMMAND
    )
    scenario_states: str = setting(
        _prefix,
        _LAYOUT.scenario_states,
        "scenario states (set through SendStateChange, deleted with their Scenario spec)",
        commands=EVERY_COMMAND,
    )
    own: str = setting(
        _prefix,
        _LAYOUT.own,
        "the daemon's own keys: leader candidates under `leader/`, pending reconcile triggers "
        "under `triggers/`, dead letters under `deadletters/`, nodes' container lists under "
        "`nodes/`, state histories under `history/`",
        commands=EVERY_COMMAND,
    )

    def check(self) -> None:
        named = [(f"prefixes.{f.name}", getattr(self, f.name)) for f in fields(self)]
        for a, pa in named:
            for b, pb in named:
                if a != b and pb.startswith(pa):
                    raise ConfigError(
                        f"{b}: {pb!r} lies inside {a} {pa!r}; prefixes must not overlap"
                    )

    @property
    def layout(self) -> KeyLayout:
        return KeyLayout(
            containers=self.containers,
            packages=self.packages,
            models=self.models,
            scenarios=self.scenarios,
            model_states=self.model_states,
            package_states=self.package_states,
            scenario_states=self.scenario_states,
            own=self.own,
        )


@dataclass(frozen=True, slots=True)
class ActionControllerSettings:
    address: str = setting(_address, "127.0.0.1:47001", "ActionController gRPC `host:port`")
    timeout_seconds: float = setting(
        _positive, 5.0, "deadline of every Reconcile and OffloadModel call"
    )
    max_backoff_seconds: float = setting(
        _positive,
        30.0,
        "longest wait between retries of an undelivered trigger (exponential from 0.5 s, jittered)",
    )
    max_refusals: int = setting(
        _positive_int,
        10,
        "refusals (see [Reconcile delivery](#reconcile-delivery)) after which a trigger moves "
        "to the dead letters",
    )
    max_trigger_age_seconds: float = setting(
        _positive,
        3600.0,
        "a trigger refused when this old (counted from when the delivering daemon took it on) "
        "moves to the dead letters",
    )
    ca_file: Path | None = setting(
        _readable_file,
        None,
        "PEM CA of ActionController's certificate; set, the channel uses TLS",
    )
    cert_file: Path | None = setting(
        _readable_file,
        None,
        "PEM client certificate for mutual TLS (needs `key_file` and `ca_file`)",
    )
    key_file: Path | None = setting(
        _readable_file,
        None,
        "PEM client key for mutual TLS",
        credential=Credential("actioncontroller-client-key"),
    )

    def check(self) -> None:
        _check_client_tls("actioncontroller", self._files, self.ca_file is not None)

    @property
    def _files(self) -> TlsFiles:
        return TlsFiles(self.ca_file, self.cert_file, self.key_file)

    @property
    def tls(self) -> TlsFiles | None:
        """Set exactly when a CA is: the channel then uses TLS."""
        return self._files if self.ca_file is not None else None


@dataclass(frozen=True, slots=True)
class GrpcSettings:
    enabled: bool = setting(
        _flag,
        False,
        "serve Pullpiri's StateManager gRPC service (`true`/`false`)",
    )
    address: str = setting(_address, "127.0.0.1:47006", "where that service listens")
    max_concurrent_rpcs: int = setting(
        _positive_int,
        10_000,
        "calls that service handles at once (more are answered `RESOURCE_EXHAUSTED`); 10 times "
        "as many may wait in gRPC's queue (see [Bursts](#bursts))",
    )
    tls_cert_file: Path | None = setting(
        _readable_file,
        None,
        "PEM certificate (chain) of that service; set with `tls_key_file`, it serves TLS only",
    )
    tls_key_file: Path | None = setting(
        _readable_file,
        None,
        "PEM private key of `tls_cert_file`",
        credential=Credential("grpc-server-key"),
    )
    tls_client_ca_file: Path | None = setting(
        _readable_file,
        None,
        "PEM CA: set, only clients presenting a certificate it signed are served (mutual TLS)",
    )
    node_identity: bool = setting(
        _flag,
        False,
        "with `tls_client_ca_file`: a container list's `node_name` must be the client "
        "certificate's CN or one of its SANs, else it is refused `PERMISSION_DENIED` (a node "
        "reports only for itself)",
    )

    def check(self) -> None:
        """The certificate, key and client CA, checked to load at start-up."""
        cert, key, ca = self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file
        if self.node_identity and ca is None:
            raise ConfigError("grpc.node_identity needs grpc.tls_client_ca_file (mutual TLS)")
        if (cert is None) != (key is None):
            raise ConfigError("grpc.tls_cert_file and grpc.tls_key_file go together")
        if cert is None or key is None:
            if ca is not None:
                raise ConfigError(
                    "grpc.tls_client_ca_file needs grpc.tls_cert_file and tls_key_file"
                )
            return
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        _load_pair(context, ("grpc.tls_cert_file", cert), ("grpc.tls_key_file", key))
        if ca is not None:
            try:
                context.load_verify_locations(cafile=str(ca))
            except (ssl.SSLError, OSError) as exc:
                raise ConfigError(
                    f"grpc.tls_client_ca_file {ca}: not a PEM CA certificate ({exc})"
                ) from None

    @property
    def tls(self) -> ServerTls | None:
        """None: the service is plaintext."""
        if self.tls_cert_file is None or self.tls_key_file is None:
            return None
        return ServerTls(self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file)


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    address: str = setting(
        _address,
        "127.0.0.1:9479",
        "where the HTTP server (`/metrics`, `/healthz`, `/readyz`, `/status`, `/`) listens",
    )
    # The file's contents, read and checked: a SIGHUP applies them when they changed.
    web_config_file: WebConfig = setting(
        _web_config,
        WebConfig(),
        "web configuration file (Prometheus exporter-toolkit format) for that server: TLS, "
        "client certificates, basic auth; see "
        "[Securing the HTTP server](#securing-the-http-server). None: plain HTTP, no "
        "authentication",
        shown="none",
        reloadable=True,
    )


@dataclass(frozen=True, slots=True)
class HaSettings:
    node_name: str = setting(
        _node_name,
        socket.gethostname(),
        "this daemon's name in the leader election; must be unique per daemon",
        shown="the hostname",
    )
    lease_ttl_seconds: int = setting(
        _lease_ttl,
        10,
        "leader lease TTL (≥ 2): a dead leader is replaced within it; renewed every third of it",
    )


@dataclass(frozen=True, slots=True)
class LogSettings:
    format: str = setting(
        _choice(LOG_FORMATS),
        "auto",
        "`json`, `console`, or `auto` (console on a terminal, JSON otherwise and under systemd)",
        commands=EVERY_COMMAND,
        reloadable=True,
    )
    level: str = setting(
        _choice(LOG_LEVELS),
        "info",
        "`debug`, `info`, `warning`, `error`",
        commands=EVERY_COMMAND,
        reloadable=True,
    )


@dataclass(frozen=True, slots=True)
class InputSettings:
    max_value_bytes: int = setting(
        _positive_int,
        256 * 1024,
        "larger values are rejected as bad input",
        commands=EVERY_COMMAND,
    )


@dataclass(frozen=True, slots=True)
class HistorySettings:
    keep: int = setting(
        _count,
        100,
        "transition records kept per model, package and scenario "
        "([History](docs/contract.md#history)); older ones are deleted by the write that adds "
        "one. 0 records no history",
        commands=EVERY_COMMAND,
    )
    max_age_seconds: float = setting(
        _seconds_or_off,
        30 * 24 * 3600.0,
        "records older than this are removed by the leader (hourly, or every quarter of it "
        "when shorter), all but each resource's newest unless that records its deletion; "
        "0 keeps them until `history.keep` retires them",
    )


@dataclass(frozen=True, slots=True)
class Settings:
    """Validated settings, one section per `[table]` of the file; build with `load`."""

    etcd: EtcdSettings
    prefixes: PrefixSettings
    actioncontroller: ActionControllerSettings
    grpc: GrpcSettings
    metrics: MetricsSettings
    ha: HaSettings
    log: LogSettings
    inputs: InputSettings
    history: HistorySettings


_SECTIONS: dict[str, type] = get_type_hints(Settings)


@dataclass(frozen=True, slots=True)
class Option:
    """One declared setting under its dotted name `section.key`."""

    section: str
    key: str
    declared: Declaration[object]

    @property
    def name(self) -> str:
        return f"{self.section}.{self.key}"

    @property
    def env(self) -> str:
        return "STATEMANAGER_" + self.name.replace(".", "_").upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace(".", "-").replace("_", "-")

    @property
    def shown_default(self) -> str:
        """The default as the README shows it (Markdown)."""
        default = self.declared.default
        if self.declared.shown is not None:
            return self.declared.shown
        if default is None or default == ():
            return "none"
        if isinstance(default, bool):
            return f"`{str(default).lower()}`"
        if isinstance(default, float) and default.is_integer():
            return f"`{int(default)}`"
        return f"`{default}`"

    def value(self, settings: Settings) -> object:
        return getattr(getattr(settings, self.section), self.key)


OPTIONS: tuple[Option, ...] = tuple(
    Option(section, f.name, f.metadata[_DECLARATION])
    for section, cls in _SECTIONS.items()
    for f in fields(cls)
)


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


def _systemd_credential(option: Option, env: Mapping[str, str]) -> tuple[str, str] | None:
    """(raw value, where) from the option's credential when systemd passed it to the service;
    a setting given any other way wins (see README.md, "Secrets")."""
    credential = option.declared.credential
    directory = env.get("CREDENTIALS_DIRECTORY")
    if credential is None or not directory:
        return None
    path = Path(directory) / credential.name
    if not path.is_file():
        return None
    where = f"credential {credential.name} for {option.name}"
    if not credential.text:
        return str(path), where
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc}") from None
    # `echo secret > file` adds a newline that is no part of the secret.
    return text.removesuffix("\n"), where


def _value(
    option: Option,
    flags: Mapping[str, object],
    env: Mapping[str, str],
    from_file: Mapping[str, object],
    path: Path,
) -> object:
    """The option parsed from the first source that gives it: flag, variable, file, systemd
    credential; else its default."""
    raw: object
    if flags.get(option.name) is not None:
        raw, where = flags[option.name], option.flag
    elif option.env in env:
        raw, where = env[option.env], option.env
    elif option.name in from_file:
        raw, where = from_file[option.name], f"{option.name} in {path}"
    elif (given := _systemd_credential(option, env)) is not None:
        raw, where = given
    else:
        return option.declared.default
    try:
        return option.declared.parse(raw)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _build(cls: Callable[..., S], values: Mapping[str, object]) -> S:
    """A section (or the settings) from values keyed by field name. The one step mypy does not
    follow; sound because each value comes from its own field's declared parser or default,
    whose type `setting` ties to the field's annotation."""
    return cls(**values)


def _assemble(value_of: Callable[[Option], object]) -> Settings:
    """Settings holding `value_of(option)` for every option."""
    sections: dict[str, dict[str, object]] = {name: {} for name in _SECTIONS}
    for option in OPTIONS:
        sections[option.section][option.key] = value_of(option)
    return _build(Settings, {name: _build(_SECTIONS[name], v) for name, v in sections.items()})


def load(
    path: Path | None,
    env: Mapping[str, str],
    flags: Mapping[str, object],
) -> Settings:
    """Merge systemd credential < file < environment < flags (`flags` maps option names to
    given values)."""
    where = path or DEFAULT_CONFIG_PATH
    from_file = _read_file(where, explicit=path is not None)
    settings = _assemble(lambda option: _value(option, flags, env, from_file, where))
    settings.prefixes.check()
    settings.etcd.check()
    settings.actioncontroller.check()
    settings.grpc.check()
    return settings


def reloaded(current: Settings, fresh: Settings) -> tuple[Settings, list[Option]]:
    """`current` with the reloadable settings of `fresh` applied, and every option whose value
    differs between the two (those not reloadable need a restart). Both were checked when
    loaded, and no check spans a reloadable setting, so the mix is not checked again."""
    changed = [o for o in OPTIONS if o.value(current) != o.value(fresh)]
    applied = _assemble(lambda o: o.value(fresh if o.declared.reloadable else current))
    return applied, changed
