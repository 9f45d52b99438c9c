"""Which chains the service can read, and where their JSON-RPC nodes are (typed, read once)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

__all__ = [
    "DEFAULT_LOCAL_CHAIN_ID",
    "NETWORKS",
    "ChainConfigError",
    "ChainSettings",
    "NetworkInfo",
    "rpc_url_variable",
]

DEFAULT_LOCAL_CHAIN_ID = 31337


class ChainConfigError(ValueError):
    """A chain setting is invalid; the message names the variable."""


@dataclass(frozen=True, slots=True)
class NetworkInfo:
    """A network the service knows: its chain id and the hosted providers that serve it."""

    name: str
    chain_id: int
    #: Infura's host prefix (``<prefix>.infura.io/v3/<key>``), None if Infura does not serve it.
    infura: str | None = None
    #: Alchemy's host prefix (``<prefix>.g.alchemy.com/v2/<key>``), None if Alchemy does not.
    alchemy: str | None = None
    testnet: bool = False
    #: Typical seconds between blocks (0: mines on demand, a dev chain).
    block_seconds: float = 0.0
    #: How often the head follower polls the node when it cannot subscribe (see heads.py).
    poll_seconds: float = 1.0


#: Every network a requirement may name. Check the chain ids against the provider before relying
#: on them in production configuration (see shared reference chains.md).
NETWORKS: Mapping[str, NetworkInfo] = {
    n.name: n
    for n in (
        # name, chain id, Infura prefix, Alchemy prefix, testnet, block seconds, poll seconds
        NetworkInfo("ethereum", 1, "mainnet", "eth-mainnet", False, 12, 1.0),
        NetworkInfo("polygon", 137, "polygon-mainnet", "polygon-mainnet", False, 2, 0.5),
        NetworkInfo("bsc", 56, "bsc-mainnet", "bnb-mainnet", False, 3, 0.5),
        NetworkInfo("arbitrum", 42161, "arbitrum-mainnet", "arb-mainnet", False, 0.25, 0.5),
        NetworkInfo("sepolia", 11155111, "sepolia", "eth-sepolia", True, 12, 1.0),
        NetworkInfo("polygon-amoy", 80002, "polygon-amoy", "polygon-amoy", True, 2, 0.5),
        NetworkInfo("bsc-testnet", 97, "bsc-testnet", "bnb-testnet", True, 3, 0.5),
        NetworkInfo("arbitrum-sepolia", 421614, "arbitrum-sepolia", "arb-sepolia", True, 0.25, 0.5),
        NetworkInfo("local", DEFAULT_LOCAL_CHAIN_ID, testnet=True, poll_seconds=0.1),
    )
}


def rpc_url_variable(network: str) -> str:
    """The variable that sets a network's node: ``ENTITLEMENTS_RPC_URL_POLYGON_AMOY``."""
    return "ENTITLEMENTS_RPC_URL_" + network.upper().replace("-", "_")


@dataclass(frozen=True, slots=True)
class ChainSettings:
    """Chain nodes and the token-gating knobs that depend on them.

    `rpc_urls` holds only the configured networks: a network without a URL is "not configured"
    and requirements naming it are refused.
    """

    #: network name -> JSON-RPC URL, configured networks only.
    rpc_urls: Mapping[str, str] = field(default_factory=dict)
    #: The chain id of the network "local" (anvil's default unless ENTITLEMENTS_LOCAL_CHAIN_ID).
    local_chain_id: int = DEFAULT_LOCAL_CHAIN_ID
    #: One JSON-RPC request (a batch counts as one) fails after this long: the node is "down".
    request_timeout_seconds: float = 10.0
    #: Reads from a node whose latest block is older than this are refused as unavailable (a
    #: lagging node answers zero balances); 0 turns the check off. Never applied to "local".
    max_head_age_seconds: float = 300.0
    #: A verification result is reused for this long before the chain is read again.
    verify_cache_ttl_seconds: float = 60.0
    #: When the node is down, a POSITIVE result at most this old is still served (never a
    #: negative one, never a fresh grant).
    stale_grace_seconds: float = 600.0
    #: Granted channel accesses are re-verified this often; 0 turns the sweep off.
    reverify_interval_seconds: float = 3600.0
    #: The EIP-4361 domain and URI wallet challenges are bound to.
    siwe_domain: str = "localhost"
    siwe_uri: str = "https://localhost"
    #: A wallet challenge can be signed within this long.
    challenge_ttl_seconds: float = 600.0
    #: network name -> websocket URL for `eth_subscribe("newHeads")`; a configured network
    #: without one has its head polled (heads.py).
    ws_urls: Mapping[str, str] = field(default_factory=dict)
    #: network name -> head poll interval, where it differs from the network's default.
    head_poll_seconds: Mapping[str, float] = field(default_factory=dict)
    #: Follow each network's head and read gated contracts' transfers block by block.
    follow_blocks: bool = True

    def poll_seconds(self, name: str) -> float:
        """How often the head of `name` is polled when it cannot be subscribed to."""
        info = self.network(name)
        return self.head_poll_seconds.get(name, 1.0 if info is None else info.poll_seconds)

    def block_seconds(self, name: str) -> float:
        info = self.network(name)
        return 0.0 if info is None else info.block_seconds

    def network(self, name: str) -> NetworkInfo | None:
        """The known network `name` (with the configured local chain id), None if unknown."""
        info = NETWORKS.get(name)
        if info is not None and name == "local":
            return replace(info, chain_id=self.local_chain_id)
        return info

    def chain_id(self, name: str) -> int | None:
        info = self.network(name)
        return None if info is None else info.chain_id

    def network_for_chain_id(self, chain_id: int) -> str | None:
        """The configured-or-not network name of `chain_id`, None if no known network has it."""
        for name in NETWORKS:
            if self.chain_id(name) == chain_id:
                return name
        return None

    def configured(self, name: str) -> bool:
        return name in self.rpc_urls

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ChainSettings:
        """Read the settings: ``ENTITLEMENTS_RPC_URL_<NETWORK>`` wins; otherwise
        ``INFURA_API_KEY`` then ``ALCHEMY_API_KEY`` build the providers' public URLs."""
        infura = env.get("INFURA_API_KEY", "").strip()
        alchemy = env.get("ALCHEMY_API_KEY", "").strip()
        urls: dict[str, str] = {}
        ws_urls: dict[str, str] = {}
        polls: dict[str, float] = {}
        for name, info in NETWORKS.items():
            explicit = env.get(rpc_url_variable(name), "").strip()
            if explicit:
                if not explicit.startswith(("http://", "https://")):
                    raise ChainConfigError(
                        f"{rpc_url_variable(name)}: expected an http(s):// URL, got {explicit!r}"
                    )
                urls[name] = explicit
            elif infura and info.infura:
                urls[name] = f"https://{info.infura}.infura.io/v3/{infura}"
            elif alchemy and info.alchemy:
                urls[name] = f"https://{info.alchemy}.g.alchemy.com/v2/{alchemy}"
            ws = _ws_url(env, name, info, urls.get(name), explicit, infura, alchemy)
            if ws:
                ws_urls[name] = ws
            poll_variable = head_poll_variable(name)
            if env.get(poll_variable, "").strip():
                polls[name] = env_number(env, poll_variable, info.poll_seconds, 0.01)
        domain = env.get("ENTITLEMENTS_SIWE_DOMAIN", "").strip() or "localhost"
        if any(c.isspace() or c == "/" for c in domain):
            raise ChainConfigError(
                f"ENTITLEMENTS_SIWE_DOMAIN: expected a host[:port], got {domain!r}"
            )
        return cls(
            rpc_urls=urls,
            local_chain_id=int(
                env_number(
                    env, "ENTITLEMENTS_LOCAL_CHAIN_ID", DEFAULT_LOCAL_CHAIN_ID, 1, whole=True
                )
            ),
            request_timeout_seconds=env_number(env, "ENTITLEMENTS_RPC_TIMEOUT_SECONDS", 10.0, 0.1),
            max_head_age_seconds=env_number(env, "ENTITLEMENTS_RPC_MAX_HEAD_AGE_SECONDS", 300.0, 0),
            verify_cache_ttl_seconds=env_number(
                env, "ENTITLEMENTS_TOKENGATE_CACHE_TTL_SECONDS", 60.0, 0
            ),
            stale_grace_seconds=env_number(
                env, "ENTITLEMENTS_TOKENGATE_STALE_GRACE_SECONDS", 600.0, 0
            ),
            reverify_interval_seconds=env_number(
                env, "ENTITLEMENTS_TOKENGATE_REVERIFY_INTERVAL_SECONDS", 3600.0, 0
            ),
            siwe_domain=domain,
            siwe_uri=env.get("ENTITLEMENTS_SIWE_URI", "").strip() or f"https://{domain}",
            challenge_ttl_seconds=env_number(
                env, "ENTITLEMENTS_SIWE_CHALLENGE_TTL_SECONDS", 600.0, 1
            ),
            ws_urls=ws_urls,
            head_poll_seconds=polls,
            follow_blocks=env.get("ENTITLEMENTS_TOKENGATE_FOLLOW_BLOCKS", "1").strip().lower()
            not in ("0", "false", "no", "off"),
        )


def ws_url_variable(network: str) -> str:
    """The variable that sets a network's websocket: ``ENTITLEMENTS_WS_URL_POLYGON_AMOY``."""
    return "ENTITLEMENTS_WS_URL_" + network.upper().replace("-", "_")


def head_poll_variable(network: str) -> str:
    return "ENTITLEMENTS_HEAD_POLL_SECONDS_" + network.upper().replace("-", "_")


def _ws_url(
    env: Mapping[str, str],
    name: str,
    info: NetworkInfo,
    http_url: str | None,
    explicit_http: str,
    infura: str,
    alchemy: str,
) -> str | None:
    """The websocket for `name`: ``ENTITLEMENTS_WS_URL_<NETWORK>`` (``off`` for none); else the
    provider's that built the HTTP URL; else, for ``local`` (anvil answers both on one port),
    the HTTP URL as ws://. Other explicit HTTP nodes are polled unless given a websocket."""
    variable = ws_url_variable(name)
    raw = env.get(variable, "").strip()
    if raw.lower() == "off" or http_url is None:
        return None
    if raw:
        if not raw.startswith(("ws://", "wss://")):
            raise ChainConfigError(f"{variable}: expected a ws(s):// URL, got {raw!r}")
        return raw
    if not explicit_http:
        if infura and info.infura:
            return f"wss://{info.infura}.infura.io/ws/v3/{infura}"
        if alchemy and info.alchemy:
            return f"wss://{info.alchemy}.g.alchemy.com/v2/{alchemy}"
    if name == "local":
        return "ws" + http_url.removeprefix("http")
    return None


def env_number(
    env: Mapping[str, str],
    name: str,
    default: float,
    minimum: float,
    *,
    whole: bool = False,
    error: type[ValueError] = ChainConfigError,
) -> float:
    """A number from the environment, `default` when unset; `error` names the variable."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise error(f"{name}: expected a number, got {raw!r}") from None
    if not math.isfinite(value) or value < minimum:
        raise error(f"{name}: must be a number of at least {minimum:g}, got {raw!r}")
    if whole and value != int(value):
        raise error(f"{name}: expected a whole number, got {raw!r}")
    return value
