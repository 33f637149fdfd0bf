"""Settings: file < environment < flags, validation errors that name the offending key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from statemanager.app import config
from statemanager.app.config import DEFAULT_CONFIG_PATH, load
from statemanager.core.errors import ConfigError
from statemanager.core.keys import KeyLayout


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "statemanager.toml"
    path.write_text(text)
    return path


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return write(
        tmp_path,
        '[etcd]\nendpoints = ["http://file:2379"]\ntimeout_seconds = 2\n'
        '[log]\nlevel = "warning"\nformat = "json"\n',
    )


@pytest.fixture
def no_default_file() -> None:
    if DEFAULT_CONFIG_PATH.exists():
        pytest.skip(f"{DEFAULT_CONFIG_PATH} exists on this machine")


def test_defaults(no_default_file: None) -> None:
    """With no file, variables or flags, every setting has its documented default."""
    settings = load(None, {}, {})
    assert settings.etcd.endpoints == ()
    assert settings.prefixes.layout == KeyLayout()
    assert settings.actioncontroller.address == "127.0.0.1:47001"
    assert settings.metrics.address.startswith("127.0.0.1:")
    assert (settings.log.format, settings.log.level) == ("auto", "info")
    assert settings.inputs.max_value_bytes == 256 * 1024


def test_file_values_used(config_file: Path) -> None:
    """Values in the TOML file override the defaults."""
    settings = load(config_file, {}, {})
    assert settings.etcd.endpoints == ("http://file:2379",)
    assert settings.etcd.timeout_seconds == 2.0
    assert (settings.log.level, settings.log.format) == ("warning", "json")


def test_env_overrides_file(config_file: Path) -> None:
    """A STATEMANAGER_* variable overrides the file; settings it does not name keep the file's."""
    env = {"STATEMANAGER_LOG_LEVEL": "debug"}
    settings = load(config_file, env, {})
    assert settings.log.level == "debug"
    assert settings.log.format == "json"


def test_flags_override_env_and_file(config_file: Path) -> None:
    """A flag overrides both the variable and the file."""
    env = {"STATEMANAGER_LOG_LEVEL": "debug", "STATEMANAGER_ETCD_ENDPOINTS": "http://env:2379"}
    flags = {"log.level": "error", "etcd.endpoints": "http://flag:2379"}
    settings = load(config_file, env, flags)
    assert settings.log.level == "error"
    assert settings.etcd.endpoints == ("http://flag:2379",)


def test_unset_flag_falls_through(config_file: Path) -> None:
    """A flag given as None (not passed on the command line) does not override anything."""
    settings = load(config_file, {"STATEMANAGER_LOG_LEVEL": "debug"}, {"log.level": None})
    assert settings.log.level == "debug"


def test_env_endpoints_comma_separated(no_default_file: None) -> None:
    """STATEMANAGER_ETCD_ENDPOINTS takes several comma-separated URLs, spaces trimmed."""
    env = {"STATEMANAGER_ETCD_ENDPOINTS": "http://a:2379, http://b:2379/,http://10.0.0.3:2379"}
    settings = load(None, env, {})
    assert settings.etcd.endpoints == ("http://a:2379", "http://b:2379/", "http://10.0.0.3:2379")


def test_prefixes_build_the_layout(no_default_file: None) -> None:
    """Prefix settings end up in the key layout."""
    settings = load(None, {"STATEMANAGER_PREFIXES_OWN": "/sm/"}, {"prefixes.models": "M/"})
    assert settings.prefixes.layout.own == "/sm/"
    assert settings.prefixes.layout.models == "M/"
    assert settings.prefixes.layout.packages == KeyLayout().packages


def _error(path: Path | None, env: dict[str, str], flags: dict[str, object]) -> str:
    with pytest.raises(ConfigError) as info:
        load(path, env, flags)
    return str(info.value)


@pytest.mark.parametrize(
    ("env", "names"),
    [
        pytest.param(
            {"STATEMANAGER_ETCD_ENDPOINTS": "https://a:2379,http://b:2379"},
            "STATEMANAGER_ETCD_ENDPOINTS",
            id="mixed-schemes",
        ),
        pytest.param(
            {"STATEMANAGER_ETCD_ENDPOINTS": "http://root:secret@a:2379"},
            "STATEMANAGER_ETCD_ENDPOINTS",
            id="credentials-in-url",
        ),
        pytest.param(
            {"STATEMANAGER_ETCD_ENDPOINTS": "http://a"},
            "STATEMANAGER_ETCD_ENDPOINTS",
            id="endpoint-no-port",
        ),
        pytest.param(
            {"STATEMANAGER_ETCD_ENDPOINTS": "a:2379"},
            "STATEMANAGER_ETCD_ENDPOINTS",
            id="endpoint-no-scheme",
        ),
        pytest.param(
            {"STATEMANAGER_ETCD_ENDPOINTS": "http://a:99999"},
            "STATEMANAGER_ETCD_ENDPOINTS",
            id="endpoint-port-range",
        ),
        pytest.param(
            {"STATEMANAGER_ETCD_ENDPOINTS": "http://a:2379/v3"},
            "STATEMANAGER_ETCD_ENDPOINTS",
            id="endpoint-path",
        ),
        pytest.param(
            {"STATEMANAGER_METRICS_ADDRESS": "nonsense"},
            "STATEMANAGER_METRICS_ADDRESS",
            id="metrics-address",
        ),
        pytest.param(
            {"STATEMANAGER_ACTIONCONTROLLER_ADDRESS": "host:0"},
            "STATEMANAGER_ACTIONCONTROLLER_ADDRESS",
            id="actioncontroller-port-zero",
        ),
        pytest.param(
            {"STATEMANAGER_LOG_FORMAT": "xml"}, "STATEMANAGER_LOG_FORMAT", id="log-format"
        ),
        pytest.param({"STATEMANAGER_LOG_LEVEL": "loud"}, "STATEMANAGER_LOG_LEVEL", id="log-level"),
        pytest.param(
            {"STATEMANAGER_ETCD_TIMEOUT_SECONDS": "-1"},
            "STATEMANAGER_ETCD_TIMEOUT_SECONDS",
            id="negative-timeout",
        ),
        pytest.param(
            {"STATEMANAGER_INPUTS_MAX_VALUE_BYTES": "1.5"},
            "STATEMANAGER_INPUTS_MAX_VALUE_BYTES",
            id="fractional-bytes",
        ),
        pytest.param(
            {"STATEMANAGER_PREFIXES_OWN": ""}, "STATEMANAGER_PREFIXES_OWN", id="empty-prefix"
        ),
    ],
)
def test_invalid_env_value_names_variable(
    no_default_file: None, env: dict[str, str], names: str
) -> None:
    """An invalid value from the environment raises ConfigError naming the variable."""
    assert names in _error(None, env, {})


@pytest.mark.parametrize(
    ("flags", "names"),
    [
        pytest.param({"metrics.address": "nonsense"}, "--metrics-address", id="metrics-address"),
        pytest.param({"log.format": "xml"}, "--log-format", id="log-format"),
        pytest.param({"etcd.endpoints": "ftp://a:1"}, "--etcd-endpoints", id="endpoints"),
        pytest.param(
            {"prefixes.model_states": "a b"}, "--prefixes-model-states", id="prefix-space"
        ),
    ],
)
def test_invalid_flag_names_flag(
    no_default_file: None, flags: dict[str, object], names: str
) -> None:
    """An invalid flag value raises ConfigError naming the flag as typed."""
    assert names in _error(None, {}, flags)


def test_invalid_file_value_names_key(tmp_path: Path) -> None:
    """An invalid value in the file raises ConfigError naming the dotted key and the file."""
    path = write(tmp_path, '[log]\nformat = "xml"\n')
    message = _error(path, {}, {})
    assert "log.format" in message
    assert str(path) in message


@pytest.mark.parametrize(
    ("text", "named", "expected", "given"),
    [
        ('[etcd]\ntimeout_seconds = "5"', "etcd.timeout_seconds", "a number", "a string"),
        ('[grpc]\nenabled = "yes"', "grpc.enabled", "true or false", "a string"),
        ("[grpc]\nenabled = 1", "grpc.enabled", "true or false", "an integer"),
        (
            "[actioncontroller]\nmax_refusals = 10.0",
            "actioncontroller.max_refusals",
            "a whole number",
            "a float",
        ),
        ("[ha]\nlease_ttl_seconds = true", "ha.lease_ttl_seconds", "a whole number", "a boolean"),
        (
            "[etcd]\nwatch_silence_seconds = false",
            "etcd.watch_silence_seconds",
            "a number",
            "a boolean",
        ),
        ('[etcd]\nendpoints = "http://a:2379"', "etcd.endpoints", "a list of text", "a string"),
        ("[etcd]\nendpoints = [2379]", "etcd.endpoints", "a list of text", "an array"),
        ("[log]\nlevel = 3", "log.level", "text (a string)", "an integer"),
        ("[etcd]\nca_file = {path = 'ca.pem'}", "etcd.ca_file", "text (a string)", "a table"),
        ("[grpc]\ntls_cert_file = 1979-05-27", "grpc.tls_cert_file", "text (a string)", "a date"),
    ],
)
def test_a_file_value_of_the_wrong_type_is_named(
    tmp_path: Path, text: str, named: str, expected: str, given: str
) -> None:
    """A file's value is held to its setting's type (docs/decisions/typed-config.md): one of
    another TOML type, a quoted number or boolean too, raises ConfigError naming the key, the
    file and the type expected."""
    path = write(tmp_path, text + "\n")
    assert _error(path, {}, {}) == f"{named} in {path}: expected {expected}, not {given}"


@pytest.mark.parametrize(
    ("env", "says"),
    [
        (
            {"ETCD_ENDPOINTS": "https://a:2379", "ETCD_CA_FILE": "junk"},
            "etcd.ca_file {junk}: not a PEM CA certificate",
        ),
        ({"ACTIONCONTROLLER_CA_FILE": "junk"}, "actioncontroller.ca_file {junk}: not a PEM CA"),
        (
            {"ACTIONCONTROLLER_CA_FILE": "junk", "ACTIONCONTROLLER_CERT_FILE": "junk"},
            "actioncontroller.cert_file and actioncontroller.key_file go together",
        ),
        (
            {"ACTIONCONTROLLER_CERT_FILE": "junk", "ACTIONCONTROLLER_KEY_FILE": "junk"},
            "actioncontroller.cert_file is set but TLS is not in use",
        ),
        ({"ETCD_CA_FILE": "junk"}, "etcd.ca_file is set but etcd.endpoints are not https://"),
        ({"GRPC_TLS_KEY_FILE": "junk"}, "grpc.tls_cert_file and grpc.tls_key_file go together"),
        (
            {"GRPC_TLS_CERT_FILE": "junk", "GRPC_TLS_KEY_FILE": "junk"},
            "grpc.tls_cert_file {junk} and grpc.tls_key_file {junk} do not load as a pair",
        ),
    ],
)
def test_each_sections_tls_files_are_checked_under_its_keys(
    no_default_file: None, tmp_path: Path, env: dict[str, str], says: str
) -> None:
    """The TLS-files group of etcd, actioncontroller and grpc is checked the same way, its
    errors naming the section's keys; each section adds when TLS is in use."""
    junk = tmp_path / "junk.pem"
    junk.write_text("not PEM\n")
    given = {f"STATEMANAGER_{k}": str(junk) if v == "junk" else v for k, v in env.items()}
    assert says.format(junk=junk) in _error(None, given, {})


def test_environment_and_flags_are_text_parsed_into_their_types(no_default_file: None) -> None:
    """Variables and flags are always text: numbers, booleans and lists are parsed from it."""
    settings = load(
        None,
        {
            "STATEMANAGER_ETCD_TIMEOUT_SECONDS": "2.5",
            "STATEMANAGER_GRPC_ENABLED": "yes",
            "STATEMANAGER_ETCD_ENDPOINTS": "http://a:2379,http://b:2379",
        },
        {"actioncontroller.max_refusals": "7", "grpc.node_identity": "false"},
    )
    assert settings.etcd.timeout_seconds == 2.5
    assert settings.etcd.endpoints == ("http://a:2379", "http://b:2379")
    assert (settings.grpc.enabled, settings.grpc.node_identity) == (True, False)
    assert settings.actioncontroller.max_refusals == 7


def test_a_file_of_typed_values_loads(tmp_path: Path) -> None:
    """Each type as TOML writes it: numbers (an integer where a number is asked), booleans,
    text and lists of text."""
    path = write(
        tmp_path,
        '[etcd]\nendpoints = ["http://a:2379"]\ntimeout_seconds = 3\n'
        "watch_silence_seconds = 12.5\n[grpc]\nenabled = true\nmax_concurrent_rpcs = 50\n"
        '[log]\nlevel = "debug"\n',
    )
    settings = load(path, {}, {})
    assert (settings.etcd.timeout_seconds, settings.etcd.watch_silence_seconds) == (3.0, 12.5)
    assert (settings.grpc.enabled, settings.grpc.max_concurrent_rpcs) == (True, 50)
    assert settings.log.level == "debug"


def test_invalid_file_value_overridden_is_not_an_error(tmp_path: Path) -> None:
    """A bad file value that an environment variable overrides is never parsed."""
    path = write(tmp_path, '[log]\nformat = "xml"\n')
    assert load(path, {"STATEMANAGER_LOG_FORMAT": "console"}, {}).log.format == "console"


def test_unknown_file_key_named(tmp_path: Path) -> None:
    """An unknown key in the file is an error naming it."""
    path = write(tmp_path, '[etcd]\nendpoint = "http://a:2379"\n')
    assert "etcd.endpoint" in _error(path, {}, {})


def test_unknown_top_level_value_named(tmp_path: Path) -> None:
    """A top-level value that is not a table is an error naming it."""
    path = write(tmp_path, 'level = "debug"\n')
    assert "level" in _error(path, {}, {})


def test_invalid_toml(tmp_path: Path) -> None:
    """A file that is not TOML is an error naming the file."""
    path = write(tmp_path, "[etcd\n")
    assert str(path) in _error(path, {}, {})


@pytest.mark.parametrize(
    ("data", "says"),
    [
        pytest.param(b"\xff\xfe[etcd]\n", "not UTF-8", id="not-utf8"),
        pytest.param(b"a = " + b"[" * 5000 + b"]" * 5000, "nested too deeply", id="deep"),
        pytest.param(b"[ha]\nlease_ttl_seconds = " + b"1" * 5000, "4300 digits", id="5000-digits"),
        pytest.param(b"#" * (config.MAX_CONFIG_BYTES + 1), "larger than", id="oversized"),
        pytest.param(b"[etcd]\ntimeout_seconds = " + b"9" * 400, "not a number", id="400-digits"),
    ],
)
def test_broken_file_is_config_error(tmp_path: Path, data: bytes, says: str) -> None:
    """A config file tomllib cannot read (UnicodeDecodeError, RecursionError and ValueError
    escaped before), or with a number too large for a float (OverflowError escaped), is a
    ConfigError naming the file and the problem."""
    path = tmp_path / "statemanager.toml"
    path.write_bytes(data)
    message = _error(path, {}, {})
    assert str(path) in message
    assert says in message


def test_directory_as_file_is_config_error(tmp_path: Path) -> None:
    """A config path that is a directory is a ConfigError, not a traceback."""
    assert "Is a directory" in _error(tmp_path, {}, {})


def test_broken_file_exits_2_with_one_line(tmp_path: Path) -> None:
    """The CLI turns a broken config file into one line on stderr and exit code 2."""
    path = tmp_path / "statemanager.toml"
    path.write_bytes(b"a = " + b"[" * 5000)
    result = subprocess.run(
        [sys.executable, "-m", "statemanager", "status", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and str(path) in result.stderr


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    """A config file given explicitly must exist."""
    path = tmp_path / "absent.toml"
    message = _error(path, {}, {})
    assert str(path) in message
    assert "not found" in message


def test_missing_default_file_is_fine(no_default_file: None) -> None:
    """When no path is given and the default file does not exist, defaults apply."""
    assert load(None, {"STATEMANAGER_LOG_LEVEL": "debug"}, {}).log.level == "debug"


def test_default_path_is_read_when_no_path_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no explicit path, the default config file is the one read."""
    path = write(tmp_path, '[log]\nlevel = "error"\n')
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", path)
    assert load(None, {}, {}).log.level == "error"


@pytest.mark.parametrize(
    ("flags", "inner", "outer"),
    [
        pytest.param(
            {"prefixes.own": "/model/"}, "prefixes.own", "prefixes.model_states", id="equal"
        ),
        pytest.param(
            {"prefixes.own": "/model/own/"}, "prefixes.own", "prefixes.model_states", id="nested"
        ),
        pytest.param(
            {"prefixes.packages": "/"}, "prefixes.containers", "prefixes.packages", id="root"
        ),
    ],
)
def test_overlapping_prefixes_rejected(
    no_default_file: None, flags: dict[str, object], inner: str, outer: str
) -> None:
    """Two prefixes where one lies inside the other are rejected, naming both."""
    message = _error(None, {}, flags)
    assert "overlap" in message
    assert inner in message
    assert outer in message


def test_infinite_max_value_bytes_is_config_error(no_default_file: None) -> None:
    """An infinite inputs.max_value_bytes is rejected with a ConfigError naming the variable."""
    assert "STATEMANAGER_INPUTS_MAX_VALUE_BYTES" in _error(
        None, {"STATEMANAGER_INPUTS_MAX_VALUE_BYTES": "inf"}, {}
    )


def test_nan_timeout_is_config_error(no_default_file: None) -> None:
    """A NaN etcd.timeout_seconds is not a positive number and is rejected."""
    assert "STATEMANAGER_ETCD_TIMEOUT_SECONDS" in _error(
        None, {"STATEMANAGER_ETCD_TIMEOUT_SECONDS": "nan"}, {}
    )


@pytest.fixture
def credentials(tmp_path: Path) -> Path:
    """A $CREDENTIALS_DIRECTORY as systemd lays it out for `LoadCredential=`."""
    directory = tmp_path / "credentials"
    directory.mkdir()
    (directory / "etcd-password").write_text("from-credential\n")
    return directory


def test_password_from_systemd_credential(no_default_file: None, credentials: Path) -> None:
    """With nothing else setting it, etcd.password is the `etcd-password` credential's text
    (one trailing newline dropped); the username still has to be given."""
    env = {"CREDENTIALS_DIRECTORY": str(credentials), "STATEMANAGER_ETCD_USERNAME": "sm"}
    settings = load(None, env, {})
    assert (settings.etcd.username, settings.etcd.password) == ("sm", "from-credential")
    with pytest.raises(ConfigError, match=r"etcd\.username and etcd\.password go together"):
        load(None, {"CREDENTIALS_DIRECTORY": str(credentials)}, {})


def test_any_other_source_wins_over_a_credential(tmp_path: Path, credentials: Path) -> None:
    """File, variable and flag each win over the credential; without CREDENTIALS_DIRECTORY (or
    without that file in it) the credential is not consulted."""
    path = write(tmp_path, '[etcd]\nusername = "sm"\npassword = "from-file"\n')
    env = {"CREDENTIALS_DIRECTORY": str(credentials)}
    assert load(path, env, {}).etcd.password == "from-file"
    empty = write(tmp_path, '[etcd]\nusername = "sm"\n')
    assert load(empty, env, {}).etcd.password == "from-credential"
    assert load(empty, env | {"STATEMANAGER_ETCD_PASSWORD": "from-env"}, {}).etcd.password == (
        "from-env"
    )
    assert load(empty, env, {"etcd.password": "from-flag"}).etcd.password == "from-flag"
    with pytest.raises(ConfigError, match="go together"):
        load(empty, {}, {})
    (credentials / "etcd-password").unlink()
    with pytest.raises(ConfigError, match="go together"):
        load(empty, env, {})


def test_key_file_credentials_are_paths(no_default_file: None, credentials: Path) -> None:
    """A private key credential stands for the key file setting: its path is used (and checked
    as that setting would be), naming the credential when something is wrong."""
    password = (credentials / "etcd-password").read_bytes()
    (credentials / "etcd-password").unlink()
    for name, setting in (("etcd-client-key", "etcd.cert_file"),
                          ("actioncontroller-client-key", "actioncontroller.cert_file"),
                          ("grpc-server-key", "grpc.tls_cert_file")):  # fmt: skip
        (credentials / name).write_text("not a key")
        with pytest.raises(ConfigError, match=rf"{setting} and .*key_file go together"):
            load(None, {"CREDENTIALS_DIRECTORY": str(credentials)}, {})
        (credentials / name).unlink()
    (credentials / "etcd-password").write_bytes(b"\xff" + password)
    with pytest.raises(ConfigError, match=r"credential etcd-password for etcd\.password"):
        load(None, {"CREDENTIALS_DIRECTORY": str(credentials)}, {})


def test_reload_applies_only_reloadable_settings(no_default_file: None) -> None:
    """`reloaded` takes the log settings from the new configuration, keeps the running value of
    every other setting, and names each changed setting by its file key."""
    current = load(None, {}, {})
    fresh = load(
        None, {"STATEMANAGER_LOG_LEVEL": "debug", "STATEMANAGER_HA_LEASE_TTL_SECONDS": "30"}, {}
    )
    applied, changed = config.reloaded(current, fresh)
    assert [o.name for o in changed] == ["ha.lease_ttl_seconds", "log.level"]
    assert [o.declared.reloadable for o in changed] == [False, True]
    assert applied.log.level == "debug"
    assert applied.ha == current.ha
    assert config.reloaded(current, current) == (current, [])
