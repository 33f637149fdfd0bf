"""Basic auth against bcrypt hashes, its cache, and the web config file's structure checks."""

from __future__ import annotations

import base64
from pathlib import Path

import bcrypt
import pytest

from statemanager.app import webconfig
from statemanager.app.webconfig import BasicAuth
from statemanager.core.errors import ConfigError

HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()  # cost 4: fast tests


def basic(credentials: bytes) -> str:
    return "Basic " + base64.b64encode(credentials).decode()


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The passwords bcrypt was asked to check, in order."""
    calls: list[bytes] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(password)
        return real(password, hashed)

    monkeypatch.setattr(webconfig.bcrypt, "checkpw", counting)
    return calls


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (basic(b"prometheus:s3cret"), True),
        (basic(b"prometheus:wrong"), False),
        (basic(b"nobody:s3cret"), False),
        (basic(b"prometheus:" + b"x" * 100), False),  # over bcrypt's 72 bytes
        (basic(b"prometheus"), False),  # no colon
        ("Basic !!!", False),
        ("Bearer abc", False),
        (None, False),
        ("basic " + base64.b64encode(b"prometheus:s3cret").decode(), True),  # scheme is caseless
    ],
)
def test_basic_auth_accepts_only_the_right_password(header: str | None, ok: bool) -> None:
    """Only the configured user with the right password is let in; anything malformed is not."""
    assert BasicAuth({"prometheus": HASH.encode()}).check(header) is ok


def test_outcomes_are_cached_so_scrapes_do_not_pay_bcrypt_each_time(checks: list[bytes]) -> None:
    """The same credentials are hashed once, right or wrong; other credentials are hashed anew."""
    auth = BasicAuth({"prometheus": HASH.encode()})
    for _ in range(5):
        assert auth.check(basic(b"prometheus:s3cret"))
        assert not auth.check(basic(b"prometheus:wrong"))
    assert checks == [b"s3cret", b"wrong"]
    assert not auth.check(basic(b"nobody:s3cret"))  # unknown user: still one bcrypt check
    assert checks == [b"s3cret", b"wrong", b"s3cret"]


def test_cache_is_bounded(checks: list[bytes]) -> None:
    """Many distinct guesses evict old entries instead of growing memory without bound."""
    auth = BasicAuth({"prometheus": HASH.encode()})
    assert auth.check(basic(b"prometheus:s3cret"))
    for i in range(300):
        auth.check(basic(f"prometheus:guess{i}".encode()))
    assert auth.check(basic(b"prometheus:s3cret"))
    assert checks.count(b"s3cret") == 2  # evicted, so checked again


def load_text(tmp_path: Path, text: str) -> webconfig.WebConfig:
    path = tmp_path / "web.yml"
    path.write_text(text)
    return webconfig.load(path)


def test_empty_file_and_no_users_mean_plain_open_http(tmp_path: Path) -> None:
    """An empty file, or an empty user list, is exporter-toolkit's default: no TLS, no auth."""
    empty = load_text(tmp_path, "")
    assert empty.tls is None and empty.auth is None
    assert load_text(tmp_path, "basic_auth_users: {}\n").auth is None


def test_equal_when_read_from_the_same_bytes(tmp_path: Path) -> None:
    """A reload can tell an unchanged file (equal) from a changed one."""
    text = f"basic_auth_users: {{prometheus: '{HASH}'}}\n"
    assert load_text(tmp_path, text) == load_text(tmp_path, text)
    assert load_text(tmp_path, text) != load_text(tmp_path, text + "# edited\n")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n", "the file must be a mapping"),
        (
            "tls_config: {}\n",
            "unknown key tls_config (supported: tls_server_config, basic_auth_users)",
        ),
        ("tls_server_config: {}\n", "needs both cert_file and key_file"),
        ("tls_server_config: {cert_file: 3, key_file: k}\n", "cert_file must be non-empty text"),
        ("basic_auth_users: {'a:b': " + HASH + "}\n", "'a:b' is not a user name"),
        ("basic_auth_users: {u: '$2b$10$short'}\n", "basic_auth_users.u: not a bcrypt hash"),
    ],
)
def test_structure_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    """Each mistake raises ConfigError naming the setting, the file and the key."""
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, text)
    assert str(caught.value).startswith(f"metrics.web_config_file {tmp_path / 'web.yml'}: ")
    assert message in str(caught.value)
