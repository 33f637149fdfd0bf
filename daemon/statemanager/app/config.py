"""Settings: a TOML file, overridden by `STATEMANAGER_*` environment variables, overridden by
command-line flags (README.md, "Configuration"); a systemd credential stands in for a secret
nobody set. Validated once, at start-up; an invalid value raises ConfigError naming the key in
the form the user wrote it (file key, variable or flag).

Each setting is declared once, as a field of a section dataclass (`Settings.etcd.endpoints` is
`[etcd]` `endpoints`) or as one of a TLS-files group's (`tls_files`): its type, parser,
default, help, flags and credential. The file key, variable, flag, `--help` text and README
row are all derived from that declaration. A value in the file must have the setting's type;
variables and flags are text, parsed (docs/decisions/typed-config.md).
"""

from __future__ import annotations

import math
import socket
import ssl
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar, Generic, TypeVar, get_type_hints
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
# the command uses. A section's settings are every command's unless it says otherwise.
DAEMON_ONLY = frozenset({"run"})
EVERY_COMMAND = frozenset({"run", "evaluate", "status", "triggers", "history", "watch"})


@dataclass(frozen=True, slots=True)
class Credential:
    """Credential names the systemd credential (`LoadCredential=NAME:…`, read from
    `$CREDENTIALS_DIRECTORY/NAME`) that supplies a secret setting nobody set otherwise: its
    text (`text`, a password) or its path (a private key file)."""

    name: str
    text: bool = False


@dataclass(frozen=True, slots=True)
class Declaration(Generic[T]):
    """Declaration is everything about one setting but its name (the section and field it is
    declared as).

    The parser raises ValueError with the reason; `help` is Markdown (the README row's text);
    `commands` are those that take it as a flag (None: its section's); `shown` is how the
    default reads where its value says nothing; `reloadable`: a SIGHUP applies it."""

    parse: Callable[[object], T]
    default: T
    help: str
    commands: frozenset[str] | None
    credential: Credential | None
    shown: str | None
    reloadable: bool


_DECLARATION = "statemanager.setting"  # the key of a declaration in its field's metadata
_GROUP = "statemanager.group"  # the key of a group's declarations in its field's metadata


def setting(
    parse: Callable[[object], T],
    default: T,
    help: str,
    *,
    commands: frozenset[str] | None = None,
    credential: Credential | None = None,
    shown: str | None = None,
    reloadable: bool = False,
    secret: bool = False,
) -> T:
    """Setting declares one setting as a section field. Typed as its value, so mypy checks the
    parser's result and the default against the field's annotation; `secret` keeps it out of
    reprs."""
    declared = Declaration(parse, default, help, commands, credential, shown, reloadable)
    return field(default=default, repr=not secret, metadata={_DECLARATION: declared})


@dataclass(frozen=True, slots=True)
class TlsKeys:
    """TlsKeys are the file keys a section gives a TLS-files group's CA, certificate and key."""

    ca: str
    cert: str
    key: str


CLIENT_TLS_KEYS = TlsKeys("ca_file", "cert_file", "key_file")
SERVER_TLS_KEYS = TlsKeys("tls_client_ca_file", "tls_cert_file", "tls_key_file")


@dataclass(frozen=True, slots=True)
class TlsFileSettings:
    """TlsFileSettings are one connection's PEM files: a CA, and a certificate with its key.

    A client's CA verifies the server (none: the system's CAs) and its certificate is for
    mutual TLS; a server's certificate is what it serves and its CA verifies clients."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def check(self, section: str, keys: TlsKeys) -> None:
        """Check raises ConfigError, naming the settings as `[section]` `keys` in the file,
        unless the certificate and key are set together and every file set loads (the CA as a
        CA, the certificate and key as a pair): a mistake is named at start-up, not at the
        first handshake."""
        ca, cert, key = (f"{section}.{k}" for k in (keys.ca, keys.cert, keys.key))
        if (self.cert is None) != (self.key is None):
            raise ConfigError(f"{cert} and {key} go together")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if self.ca is not None:
            try:
                context.load_verify_locations(cafile=str(self.ca))
            except (ssl.SSLError, OSError) as exc:
                raise ConfigError(f"{ca} {self.ca}: not a PEM CA certificate ({exc})") from None
        if self.cert is None or self.key is None:
            return
        try:
            context.load_cert_chain(str(self.cert), str(self.key))
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"{cert} {self.cert} and {key} {self.key} do not load as a pair"
                f" ({exc.__class__.__name__}: {getattr(exc, 'reason', None) or exc})"
            ) from None

    @property
    def client(self) -> TlsFiles:
        """The files as a client channel takes them."""
        return TlsFiles(self.ca, self.cert, self.key)


@dataclass(frozen=True, slots=True)
class _Group:
    """A TLS-files group field's file keys, and its settings as (attribute, file key,
    declaration) in the README's order."""

    keys: TlsKeys
    settings: tuple[tuple[str, str, Declaration[object]], ...]


_CLIENT_CERT = "PEM client certificate for mutual TLS (with `key_file`)"
_CLIENT_KEY = "PEM client key for mutual TLS"


def tls_files(
    keys: TlsKeys,
    *,
    ca: str,
    credential: str,
    cert: str = _CLIENT_CERT,
    key: str = _CLIENT_KEY,
    order: str = "ca cert key",
) -> TlsFileSettings:
    """Declares a section's TLS-files group: its CA, certificate and key settings under `keys`,
    with their help texts (a client's certificate and key by default), the systemd credential
    that may hold the key file, and the order of their rows (attribute names). `load` checks
    the group after its section."""
    helps = {"ca": ca, "cert": cert, "key": key}
    names = {"ca": keys.ca, "cert": keys.cert, "key": keys.key}

    def declared(attribute: str) -> Declaration[object]:
        held = Credential(credential) if attribute == "key" else None
        return Declaration(_readable_file, None, helps[attribute], None, held, None, False)

    group = _Group(keys, tuple((a, names[a], declared(a)) for a in order.split()))
    return field(default=TlsFileSettings(), metadata={_GROUP: group})


def _web_config(value: object) -> WebConfig:
    """The file read and checked now, so a mistake in it stops the start (exit 2)."""
    path = _readable_file(value)
    return webconfig.load(path) if path is not None else WebConfig()


_LAYOUT = KeyLayout()  # its defaults are the prefixes' (README.md, "Keys")


class _Section:
    """A section of the settings, one `[table]` of the file.

    Each setting is one field (or one of a group field's settings): `[section]` `key` in the
    file, STATEMANAGER_SECTION_KEY in the environment, --section-key on the command line, and
    one row of the README's configuration table (tests/test_docs.py checks that table is
    generated from here). COMMANDS are those whose flags its settings are, unless a setting
    says otherwise; `check` tests the settings that go together, naming them as the file does
    (`load` calls every section's, then checks its TLS-files groups)."""

    __slots__ = ()
    COMMANDS: ClassVar[frozenset[str]] = EVERY_COMMAND

    def check(self) -> None:
        """Check raises ConfigError naming the first settings that do not go together."""


@dataclass(frozen=True, slots=True)
class EtcdSettings(_Section):
    """EtcdSettings are `[etcd]`: the cluster's endpoints, TLS, auth and watch timing."""

    endpoints: tuple[str, ...] = setting(
        _endpoints,
        (),
        "etcd client URLs, `http://host:port` or `https://host:port` (one scheme for all), "
        "comma-separated in env/flags. Several: the daemon talks to one and moves to the next "
        "when it is unreachable. None: `run` starts a development etcd.",
    )
    timeout_seconds: float = setting(_positive, 5.0, "deadline of every etcd request")
    files: TlsFileSettings = tls_files(
        CLIENT_TLS_KEYS,
        ca="PEM CA of the etcd members' certificates (https endpoints; none: the system's CAs)",
        credential="etcd-client-key",
    )
    username: str | None = setting(_optional_text, None, "etcd user when auth is enabled")
    password: str | None = setting(
        _optional_text,
        None,
        "its password; under systemd give it as the `etcd-password` credential (see "
        '"Secrets"), not a flag (visible in `ps`) or `Environment=` (visible in '
        "`systemctl show`)",
        credential=Credential("etcd-password", text=True),
        secret=True,
    )
    watch_silence_seconds: float = setting(
        _positive,
        60.0,
        "a watch with neither events nor progress notifications this long is treated as "
        "broken and resumed (progress is requested every third of it)",
        commands=DAEMON_ONLY,
    )
    resync_interval_seconds: float = setting(
        _positive,
        600.0,
        "full relist and re-evaluation as a backstop, jittered ±20%; changes the watch missed "
        "are logged as `resync_drift`",
        commands=DAEMON_ONLY,
    )

    def check(self) -> None:
        """Check raises ConfigError unless the user comes with a password and TLS files are
        set only for https:// endpoints."""
        if (self.username is None) != (self.password is None):
            raise ConfigError("etcd.username and etcd.password go together")
        if self.files.ca is not None and not self.secure:
            raise ConfigError("etcd.ca_file is set but etcd.endpoints are not https://")
        if self.files.cert is not None and not self.secure:
            raise ConfigError("etcd.cert_file is set but TLS is not in use")

    @property
    def secure(self) -> bool:
        """Secure is true when the endpoints are https://."""
        return bool(self.endpoints) and self.endpoints[0].startswith("https://")

    @property
    def tls(self) -> TlsFiles | None:
        """The TLS files of the channel, set exactly when the endpoints are https://."""
        return self.files.client if self.secure else None


@dataclass(frozen=True, slots=True)
class PrefixSettings(_Section):
    """PrefixSettings are `[prefixes]`: where each kind of key lives in etcd."""

    containers: str = setting(_prefix, _LAYOUT.containers, "container info keys")
    packages: str = setting(_prefix, _LAYOUT.packages, "Package spec keys")
    models: str = setting(_prefix, _LAYOUT.models, "Model spec keys")
    scenarios: str = setting(_prefix, _LAYOUT.scenarios, "Scenario spec keys")
    model_states: str = setting(_prefix, _LAYOUT.model_states, "written model states")
    package_states: str = setting(_prefix, _LAYOUT.package_states, "written package states")
    scenario_states: str = setting(
        _prefix,
        _LAYOUT.scenario_states,
        "scenario states (set through SendStateChange, deleted with their Scenario spec)",
    )
    own: str = setting(
        _prefix,
        _LAYOUT.own,
        "the daemon's own keys: leader candidates under `leader/`, pending reconcile triggers "
        "under `triggers/`, dead letters under `deadletters/`, nodes' container lists under "
        "`nodes/`, state histories under `history/`",
    )

    def check(self) -> None:
        """Check raises ConfigError when one prefix lies inside another."""
        named = [(f"prefixes.{f.name}", getattr(self, f.name)) for f in fields(self)]
        for a, pa in named:
            for b, pb in named:
                if a != b and pb.startswith(pa):
                    raise ConfigError(
                        f"{b}: {pb!r} lies inside {a} {pa!r}; prefixes must not overlap"
                    )

    @property
    def layout(self) -> KeyLayout:
        """The key layout these prefixes make."""
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
class ActionControllerSettings(_Section):
    """ActionControllerSettings are `[actioncontroller]`: where Reconcile goes, and its retries."""

    COMMANDS = DAEMON_ONLY

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
    files: TlsFileSettings = tls_files(
        CLIENT_TLS_KEYS,
        ca="PEM CA of ActionController's certificate; set, the channel uses TLS",
        credential="actioncontroller-client-key",
        cert="PEM client certificate for mutual TLS (needs `key_file` and `ca_file`)",
    )

    def check(self) -> None:
        """Check raises ConfigError unless a client certificate comes with a CA (TLS)."""
        if self.files.cert is not None and self.files.ca is None:
            raise ConfigError("actioncontroller.cert_file is set but TLS is not in use")

    @property
    def tls(self) -> TlsFiles | None:
        """The TLS files of the channel, set exactly when a CA is: the channel then uses TLS."""
        return self.files.client if self.files.ca is not None else None


@dataclass(frozen=True, slots=True)
class GrpcSettings(_Section):
    """GrpcSettings are `[grpc]`: Pullpiri's StateManager gRPC service this daemon serves."""

    COMMANDS = DAEMON_ONLY

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
    files: TlsFileSettings = tls_files(
        SERVER_TLS_KEYS,
        cert="PEM certificate (chain) of that service; set with `tls_key_file`, it serves TLS only",
        key="PEM private key of `tls_cert_file`",
        ca="PEM CA: set, only clients presenting a certificate it signed are served (mutual TLS)",
        credential="grpc-server-key",
        order="cert key ca",
    )
    node_identity: bool = setting(
        _flag,
        False,
        "with `tls_client_ca_file`: a container list's `node_name` must be the client "
        "certificate's CN or one of its SANs, else it is refused `PERMISSION_DENIED` (a node "
        "reports only for itself)",
    )

    def check(self) -> None:
        """Check raises ConfigError unless node identity comes with a client CA, and a client
        CA with the server's certificate and key."""
        if self.node_identity and self.files.ca is None:
            raise ConfigError("grpc.node_identity needs grpc.tls_client_ca_file (mutual TLS)")
        if self.files.ca is not None and (self.files.cert is None or self.files.key is None):
            raise ConfigError("grpc.tls_client_ca_file needs grpc.tls_cert_file and tls_key_file")

    @property
    def tls(self) -> ServerTls | None:
        """The files the service serves TLS with; None: it is plaintext."""
        cert, key, ca = self.files.cert, self.files.key, self.files.ca
        return None if cert is None or key is None else ServerTls(cert, key, ca)


@dataclass(frozen=True, slots=True)
class MetricsSettings(_Section):
    """MetricsSettings are `[metrics]`: the HTTP server of `/metrics` and the status page."""

    COMMANDS = DAEMON_ONLY

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
class HaSettings(_Section):
    """HaSettings are `[ha]`: this daemon's part in the leader election."""

    COMMANDS = DAEMON_ONLY

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
class LogSettings(_Section):
    """LogSettings are `[log]`: the format and level of the log lines."""

    format: str = setting(
        _choice(LOG_FORMATS),
        "auto",
        "`json`, `console`, or `auto` (console on a terminal, JSON otherwise and under systemd)",
        reloadable=True,
    )
    level: str = setting(
        _choice(LOG_LEVELS),
        "info",
        "`debug`, `info`, `warning`, `error`",
        reloadable=True,
    )


@dataclass(frozen=True, slots=True)
class InputSettings(_Section):
    """InputSettings are `[inputs]`: the limits on values read from etcd."""

    max_value_bytes: int = setting(
        _positive_int, 256 * 1024, "larger values are rejected as bad input"
    )


@dataclass(frozen=True, slots=True)
class HistorySettings(_Section):
    """HistorySettings are `[history]`: how much of each resource's state history is kept."""

    keep: int = setting(
        _count,
        100,
        "state changes kept per model, package and scenario "
        "([History](docs/contract.md#history)); older ones are deleted by the write that adds "
        "one. 0 records no history",
    )
    max_age_seconds: float = setting(
        _seconds_or_off,
        30 * 24 * 3600.0,
        "records older than this are removed by the leader (hourly, or every quarter of it "
        "when shorter), all but each resource's newest unless that records its deletion; "
        "0 keeps them until `history.keep` retires them",
        commands=DAEMON_ONLY,
    )


@dataclass(frozen=True, slots=True)
class Settings:
    """Settings are the validated settings, one section per `[table]` of the file; build them
    with `load`. A section is registered by being a field here."""

    etcd: EtcdSettings
    prefixes: PrefixSettings
    actioncontroller: ActionControllerSettings
    grpc: GrpcSettings
    metrics: MetricsSettings
    ha: HaSettings
    log: LogSettings
    inputs: InputSettings
    history: HistorySettings


_SECTIONS: dict[str, type[_Section]] = get_type_hints(Settings)


@dataclass(frozen=True, slots=True)
class _FileType:
    """What a TOML file must hold for a setting (docs/decisions/typed-config.md)."""

    name: str  # as an error says it: "a number"
    holds: Callable[[object], bool]


_TEXT = _FileType("text (a string)", lambda v: isinstance(v, str))
_FILE_TYPES = {
    bool: _FileType("true or false", lambda v: isinstance(v, bool)),
    int: _FileType("a whole number", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    float: _FileType("a number", lambda v: isinstance(v, int | float) and not isinstance(v, bool)),
    tuple[str, ...]: _FileType(
        "a list of text", lambda v: isinstance(v, list) and all(isinstance(i, str) for i in v)
    ),
}
# TOML's names for the types tomllib reads, for the error.
_TOML_TYPES = {
    bool: "a boolean",
    int: "an integer",
    float: "a float",
    str: "a string",
    list: "an array",
    dict: "a table",
}


@dataclass(frozen=True, slots=True)
class Option:
    """Option is one declared setting under its dotted name `section.key`."""

    section: str
    key: str
    declared: Declaration[object]
    commands: frozenset[str]  # those whose flags it is
    file_type: _FileType
    path: tuple[str, ...]  # the attributes that hold it in its section's value

    @property
    def name(self) -> str:
        """The name of the setting: `section.key`, as the file has it."""
        return f"{self.section}.{self.key}"

    @property
    def env(self) -> str:
        """The environment variable that sets it."""
        return "STATEMANAGER_" + self.name.replace(".", "_").upper()

    @property
    def flag(self) -> str:
        """The command-line flag that sets it."""
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
        """Its value in `settings`."""
        held: object = getattr(settings, self.section)
        for attribute in self.path:
            held = getattr(held, attribute)
        return held


def _options(section: str, cls: type[_Section]) -> Iterator[Option]:
    """The options a section's fields declare, group fields' in their order."""
    hints = get_type_hints(cls)
    for f in fields(cls):  # type: ignore[arg-type]  # every section is a dataclass
        if _GROUP in f.metadata:
            group_hints = get_type_hints(hints[f.name])
            for attribute, key, declared in f.metadata[_GROUP].settings:
                kind = _FILE_TYPES.get(group_hints[attribute], _TEXT)
                commands = declared.commands or cls.COMMANDS
                yield Option(section, key, declared, commands, kind, (f.name, attribute))
            continue
        declared = f.metadata[_DECLARATION]
        kind = _FILE_TYPES.get(hints[f.name], _TEXT)
        yield Option(section, f.name, declared, declared.commands or cls.COMMANDS, kind, (f.name,))


OPTIONS: tuple[Option, ...] = tuple(
    option for section, cls in _SECTIONS.items() for option in _options(section, cls)
)
# (section, field, file keys) of every TLS-files group.
_TLS_GROUPS = tuple(
    (section, f.name, f.metadata[_GROUP].keys)
    for section, cls in _SECTIONS.items()
    for f in fields(cls)  # type: ignore[arg-type]  # every section is a dataclass
    if _GROUP in f.metadata
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
    credential; else its default. A file's value must be of the option's type; the others
    are text, parsed."""
    raw: object
    if flags.get(option.name) is not None:
        raw, where = flags[option.name], option.flag
    elif option.env in env:
        raw, where = env[option.env], option.env
    elif option.name in from_file:
        raw, where = from_file[option.name], f"{option.name} in {path}"
        if not option.file_type.holds(raw):
            toml_type = next((n for t, n in _TOML_TYPES.items() if isinstance(raw, t)), "a date")
            raise ConfigError(f"{where}: expected {option.file_type.name}, not {toml_type}")
    elif (given := _systemd_credential(option, env)) is not None:
        raw, where = given
    else:
        return option.declared.default
    try:
        return option.declared.parse(raw)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


@dataclass(slots=True)
class _Fields:
    """The values of a dataclass's fields (the settings, a section, a group in it): plain
    values, and those of nested dataclasses by field name."""

    values: dict[str, object] = field(default_factory=dict)
    nested: dict[str, _Fields] = field(default_factory=dict)

    def child(self, name: str) -> _Fields:
        """The fields of the dataclass in field `name`."""
        return self.nested.setdefault(name, _Fields())


def _build(cls: Callable[..., S], given: _Fields) -> S:
    """A dataclass from its fields' values, nested dataclasses built first. The one step mypy
    does not follow; sound because each value comes from its own field's declared parser or
    default, whose type `setting` ties to the field's annotation."""
    hints = get_type_hints(cls)
    nested = {name: _build(hints[name], inner) for name, inner in given.nested.items()}
    return cls(**given.values, **nested)


def _assemble(value_of: Callable[[Option], object]) -> Settings:
    """Settings holding `value_of(option)` for every option."""
    given = _Fields()
    for option in OPTIONS:
        held = given.child(option.section)
        for attribute in option.path[:-1]:
            held = held.child(attribute)
        held.values[option.path[-1]] = value_of(option)
    return _build(Settings, given)


def load(
    path: Path | None,
    env: Mapping[str, str],
    flags: Mapping[str, object],
) -> Settings:
    """Load merges systemd credential < file < environment < flags (`flags` maps option names
    to given values) and checks every section; ConfigError names the first problem."""
    where = path or DEFAULT_CONFIG_PATH
    from_file = _read_file(where, explicit=path is not None)
    settings = _assemble(lambda option: _value(option, flags, env, from_file, where))
    for name in _SECTIONS:
        section: _Section = getattr(settings, name)
        section.check()
    for name, group, keys in _TLS_GROUPS:
        files: TlsFileSettings = getattr(getattr(settings, name), group)
        files.check(name, keys)
    return settings


def reloaded(current: Settings, fresh: Settings) -> tuple[Settings, list[Option]]:
    """Reloaded returns `current` with the reloadable settings of `fresh` applied, and every
    option whose value differs between the two (those not reloadable need a restart).

    Both were checked when loaded, and no check spans a reloadable setting, so the mix is not
    checked again."""
    changed = [o for o in OPTIONS if o.value(current) != o.value(fresh)]
    applied = _assemble(lambda o: o.value(fresh if o.declared.reloadable else current))
    return applied, changed
