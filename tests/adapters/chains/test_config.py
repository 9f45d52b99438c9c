"""ChainSettings.from_env: explicit URLs win, then Infura, then Alchemy; bad values name the
variable."""

from __future__ import annotations

import pytest

from adapters.chains.config import ChainConfigError, ChainSettings, rpc_url_variable


def test_explicit_url_wins_over_provider_keys() -> None:
    settings = ChainSettings.from_env(
        {"ENTITLEMENTS_RPC_URL_POLYGON_AMOY": "http://node:8545", "INFURA_API_KEY": "k"}
    )
    assert settings.rpc_urls["polygon-amoy"] == "http://node:8545"
    assert settings.rpc_urls["ethereum"] == "https://mainnet.infura.io/v3/k"


def test_alchemy_key_builds_urls_where_infura_is_not_given() -> None:
    settings = ChainSettings.from_env({"ALCHEMY_API_KEY": "a"})
    assert settings.rpc_urls["arbitrum"] == "https://arb-mainnet.g.alchemy.com/v2/a"
    assert "local" not in settings.rpc_urls  # no hosted provider serves a dev chain


def test_nothing_configured_means_no_network_is_configured() -> None:
    settings = ChainSettings.from_env({})
    assert settings.rpc_urls == {}
    assert not settings.configured("ethereum")
    assert settings.chain_id("ethereum") == 1
    assert settings.siwe_domain == "localhost"


def test_local_chain_id_is_configurable() -> None:
    settings = ChainSettings.from_env({"ENTITLEMENTS_LOCAL_CHAIN_ID": "1337"})
    assert settings.chain_id("local") == 1337
    assert settings.network_for_chain_id(1337) == "local"


def test_variable_names_use_underscores_for_dashes() -> None:
    assert rpc_url_variable("arbitrum-sepolia") == "ENTITLEMENTS_RPC_URL_ARBITRUM_SEPOLIA"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"ENTITLEMENTS_RPC_URL_LOCAL": "ws://x"}, "ENTITLEMENTS_RPC_URL_LOCAL"),
        ({"ENTITLEMENTS_LOCAL_CHAIN_ID": "1.5"}, "ENTITLEMENTS_LOCAL_CHAIN_ID"),
        ({"ENTITLEMENTS_TOKENGATE_CACHE_TTL_SECONDS": "-1"}, "CACHE_TTL"),
        ({"ENTITLEMENTS_SIWE_DOMAIN": "evil.com/path"}, "ENTITLEMENTS_SIWE_DOMAIN"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ChainConfigError, match=variable):
        ChainSettings.from_env(env)


def test_heads_are_subscribed_over_the_providers_websockets_and_local_on_its_port() -> None:
    settings = ChainSettings.from_env(
        {
            "INFURA_API_KEY": "k",
            "ALCHEMY_API_KEY": "a",
            "ENTITLEMENTS_RPC_URL_LOCAL": "http://127.0.0.1:8545",
            "ENTITLEMENTS_RPC_URL_POLYGON": "https://my-node.example/rpc",
        }
    )
    assert settings.ws_urls["ethereum"] == "wss://mainnet.infura.io/ws/v3/k"
    assert settings.ws_urls["local"] == "ws://127.0.0.1:8545"
    assert "polygon" not in settings.ws_urls  # an explicit node without a websocket is polled
    assert settings.follow_blocks


def test_an_explicit_websocket_wins_and_off_turns_it_off() -> None:
    settings = ChainSettings.from_env(
        {
            "INFURA_API_KEY": "k",
            "ENTITLEMENTS_WS_URL_ETHEREUM": "off",
            "ENTITLEMENTS_RPC_URL_BSC": "https://bsc.example",
            "ENTITLEMENTS_WS_URL_BSC": "wss://bsc.example/ws",
        }
    )
    assert "ethereum" not in settings.ws_urls
    assert settings.ws_urls["bsc"] == "wss://bsc.example/ws"


def test_poll_intervals_follow_block_times_and_can_be_set() -> None:
    settings = ChainSettings.from_env({"ENTITLEMENTS_HEAD_POLL_SECONDS_ETHEREUM": "3"})
    assert settings.poll_seconds("ethereum") == 3
    assert settings.poll_seconds("polygon") == 0.5
    assert settings.poll_seconds("local") < 1  # sub-second where blocks are
    assert settings.block_seconds("ethereum") == 12
    assert settings.block_seconds("arbitrum") == 0.25


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        (
            {"ENTITLEMENTS_WS_URL_LOCAL": "http://x", "ENTITLEMENTS_RPC_URL_LOCAL": "http://x"},
            "ENTITLEMENTS_WS_URL_LOCAL",
        ),
        ({"ENTITLEMENTS_HEAD_POLL_SECONDS_LOCAL": "0"}, "ENTITLEMENTS_HEAD_POLL_SECONDS_LOCAL"),
    ],
)
def test_bad_head_settings_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ChainConfigError, match=variable):
        ChainSettings.from_env(env)
