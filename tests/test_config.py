"""Settings from the environment: defaults, the callers file, and errors that name the culprit."""

from __future__ import annotations

from pathlib import Path

import pytest

from entitlements.config import ConfigError, Settings, token_digest

GOOD = """
[[callers]]
name = "chat-backend"
tokens = ["chat-backend-token-0001", "chat-backend-token-0002"]
scopes = ["entitlements:read"]
"""


def callers(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "callers.toml"
    path.write_text(text)
    return {"ENTITLEMENTS_CALLERS_FILE": str(path)}


def test_defaults_follow_the_contract(tmp_path: Path) -> None:
    settings = Settings.from_env(callers(tmp_path, GOOD))
    assert settings.grpc_addr == "0.0.0.0:50051"
    assert settings.http_addr == "0.0.0.0:8080"
    assert settings.database_url == "sqlite+aiosqlite:///entitlements.db"
    assert not settings.dev_mode


def test_dev_mode_listens_on_loopback_unless_an_address_is_given() -> None:
    settings = Settings.from_env({"ENTITLEMENTS_DEV_MODE": "1"})
    assert settings.dev_mode
    assert settings.grpc_addr == "127.0.0.1:50051"
    assert settings.http_addr == "127.0.0.1:8080"
    explicit = Settings.from_env(
        {
            "ENTITLEMENTS_DEV_MODE": "1",
            "ENTITLEMENTS_GRPC_ADDR": "0.0.0.0:50051",
            "ENTITLEMENTS_HTTP_ADDR": "[::]:8080",
        }
    )
    assert (explicit.grpc_addr, explicit.http_addr) == ("0.0.0.0:50051", "[::]:8080")


def test_dev_mode_beside_a_callers_file_is_refused_naming_both(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"ENTITLEMENTS_DEV_MODE": "1", **callers(tmp_path, GOOD)})
    assert "ENTITLEMENTS_DEV_MODE" in str(refused.value)
    assert "ENTITLEMENTS_CALLERS_FILE" in str(refused.value)


def test_without_callers_or_dev_mode_the_service_refuses_to_start() -> None:
    with pytest.raises(ConfigError, match="ENTITLEMENTS_CALLERS_FILE"):
        Settings.from_env({})


def test_every_token_of_a_caller_maps_to_it_by_digest(tmp_path: Path) -> None:
    settings = Settings.from_env(callers(tmp_path, GOOD))
    for token in ("chat-backend-token-0001", "chat-backend-token-0002"):
        caller = settings.callers[token_digest(token)]
        assert caller.name == "chat-backend"
        assert caller.scopes == {"entitlements:read"}
    assert "chat-backend-token-0001" not in repr(settings.callers)


def test_postgres_urls_are_normalised_to_asyncpg() -> None:
    settings = Settings.from_env(
        {"ENTITLEMENTS_DEV_MODE": "1", "ENTITLEMENTS_DATABASE_URL": "postgresql://u@db/x"}
    )
    assert settings.database_url.startswith("postgresql+asyncpg://")


@pytest.mark.parametrize(
    ("text", "culprit"),
    [
        ("not toml [", "not valid TOML"),
        ("x = 1", "[[callers]]"),
        ('[[callers]]\nname = "a"\ntokens = ["t" ]\nscopes = []', "tokens[0]"),
        ('[[callers]]\nname = "a"\ntokens = ["long-enough-token-01"]\nscopes = ["root"]', "root"),
        ('[[callers]]\nname = ""\ntokens = ["long-enough-token-01"]\nscopes = []', ".name"),
        (
            '[[callers]]\nname = "a"\ntokens = ["long-enough-token-01"]\nscopes = []\nrole = 1',
            "role",
        ),
        (
            '[[callers]]\nname = "a"\ntokens = ["long-enough-token-01"]\nscopes = []\n'
            '[[callers]]\nname = "b"\ntokens = ["long-enough-token-01"]\nscopes = []',
            "already used",
        ),
        (
            '[[callers]]\nname = "a"\ntokens = ["long-enough-token-01"]\nscopes = []\n'
            '[[callers]]\nname = "a"\ntokens = ["long-enough-token-02"]\nscopes = []',
            "defined twice",
        ),
    ],
)
def test_a_bad_callers_file_is_refused_naming_the_key(
    tmp_path: Path, text: str, culprit: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(callers(tmp_path, text))
    assert culprit in str(caught.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ENTITLEMENTS_DEV_MODE", "maybe"),
        ("ENTITLEMENTS_CACHE_SIZE", "many"),
        ("ENTITLEMENTS_CACHE_TTL_SECONDS", "-1"),
        ("ENTITLEMENTS_PAST_DUE_GRACE_DAYS", "-2"),
        ("ENTITLEMENTS_EVENT_LOOP", "trio"),
        ("ENTITLEMENTS_DATABASE_URL", "mysql://db/x"),
    ],
)
def test_a_bad_variable_is_refused_naming_it(name: str, value: str) -> None:
    env = {"ENTITLEMENTS_DEV_MODE": "1", name: value}
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert name in str(caught.value)


def test_a_missing_callers_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        Settings.from_env({"ENTITLEMENTS_CALLERS_FILE": str(tmp_path / "nope.toml")})


def test_reads_and_writes_have_their_own_in_flight_budgets() -> None:
    env = {"ENTITLEMENTS_DEV_MODE": "1", "ENTITLEMENTS_MAX_IN_FLIGHT": "50"}
    both = Settings.from_env(env)
    assert (both.max_in_flight_reads, both.max_in_flight_writes) == (50, 50)
    apart = Settings.from_env({**env, "ENTITLEMENTS_MAX_IN_FLIGHT_WRITES": "7"})
    assert (apart.max_in_flight_reads, apart.max_in_flight_writes) == (50, 7)
    with pytest.raises(ConfigError, match="ENTITLEMENTS_MAX_IN_FLIGHT_READS"):
        Settings.from_env({**env, "ENTITLEMENTS_MAX_IN_FLIGHT_READS": "0"})
