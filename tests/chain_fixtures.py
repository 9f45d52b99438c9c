"""Real chain parts for tests: an anvil node (npm `@foundry-rs/anvil`), the test contracts
compiled by solc-js (npm `solc`, OpenZeppelin 5) and deployed on it, and funded accounts.

Import the fixtures into a conftest (`from tests.chain_fixtures import anvil, chain  # noqa`)
to use them; `AnvilNode` and `ChainKit` work outside fixtures too (a test that stops its own node).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.contract import AsyncContract

from adapters.chains import ChainReader, ChainSettings

ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = ROOT / "node_modules"
CONTRACTS_DIR = ROOT / "tests" / "adapters" / "chains" / "contracts"
COMPILE_SCRIPT = ROOT / "tests" / "adapters" / "chains" / "compile.mjs"
LOCAL_CHAIN_ID = 31337


def anvil_binary() -> Path:
    """The anvil binary the npm package's platform dependency ships (no download elsewhere)."""
    for candidate in sorted(NODE_MODULES.glob("@foundry-rs/anvil-*/bin/anvil")):
        if os.access(candidate, os.X_OK):
            return candidate
    wrapper = NODE_MODULES / ".bin" / "anvil"
    if wrapper.exists():
        return wrapper
    found = shutil.which("anvil")
    if found:
        return Path(found)
    pytest.fail("anvil not found: run `npm ci` (package.json pins @foundry-rs/anvil)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AnvilNode:
    """An anvil process on a free loopback port."""

    def __init__(self, chain_id: int = LOCAL_CHAIN_ID, *extra_args: str) -> None:
        self.chain_id = chain_id
        self.extra_args = extra_args
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> AnvilNode:
        self._process = subprocess.Popen(
            [
                str(anvil_binary()),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--chain-id",
                str(self.chain_id),
                "--silent",
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode() if self._process.stderr else ""
                pytest.fail(f"anvil exited at start: {err}")
            try:
                self.rpc("eth_chainId")
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        pytest.fail("anvil did not answer within 20 s")

    def rpc(self, method: str, params: list[Any] | None = None) -> Any:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
        request = urllib.request.Request(
            self.url, data=body.encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())["result"]

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process is not None and self._process.stderr is not None:
            self._process.stderr.close()
        self._process = None


def compiled_contracts() -> dict[str, dict[str, Any]]:
    """{name: {abi, bytecode}} of tests/adapters/chains/contracts, compiled once per source hash."""
    digest = hashlib.sha256()
    for path in [*sorted(CONTRACTS_DIR.glob("*.sol")), COMPILE_SCRIPT]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    for package in ("solc", "@openzeppelin/contracts"):
        manifest = NODE_MODULES / package / "package.json"
        if manifest.exists():
            digest.update(manifest.read_bytes())
    cache = Path(tempfile.gettempdir()) / "nchat-test-contracts" / f"{digest.hexdigest()[:24]}.json"
    if cache.exists():
        loaded: dict[str, dict[str, Any]] = json.loads(cache.read_text())
        return loaded
    node = shutil.which("node")
    if node is None:
        pytest.fail("node not found: the test contracts are compiled with solc-js")
    result = subprocess.run(
        [node, str(COMPILE_SCRIPT), str(CONTRACTS_DIR), str(NODE_MODULES)],
        capture_output=True,
        check=False,
        timeout=300,
    )
    if result.returncode != 0:
        pytest.fail(f"compiling the test contracts failed:\n{result.stderr.decode()}")
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_suffix(f".{os.getpid()}.tmp")
    partial.write_bytes(result.stdout)
    partial.replace(cache)  # atomic: parallel runs never read half a file
    compiled: dict[str, dict[str, Any]] = json.loads(result.stdout)
    return compiled


@dataclass
class ChainKit:
    """A web3 connection to a test node with deploy/mint helpers; the deployer is anvil's first
    funded account (unlocked, so transactions need no signing)."""

    node: AnvilNode
    w3: AsyncWeb3
    contracts: dict[str, dict[str, Any]]
    deployer: str

    @classmethod
    async def connect(cls, node: AnvilNode) -> ChainKit:
        w3 = AsyncWeb3(AsyncHTTPProvider(node.url))
        accounts = await w3.eth.accounts
        return cls(node=node, w3=w3, contracts=compiled_contracts(), deployer=accounts[0])

    async def close(self) -> None:
        await self.w3.provider.disconnect()

    async def deploy(self, name: str, *args: Any) -> AsyncContract:
        spec = self.contracts[name]
        factory = self.w3.eth.contract(abi=spec["abi"], bytecode=spec["bytecode"])
        tx = await factory.constructor(*args).transact({"from": self.deployer})
        receipt = await self.w3.eth.wait_for_transaction_receipt(tx)
        assert receipt["status"] == 1, f"deploying {name} failed"
        return self.w3.eth.contract(address=receipt["contractAddress"], abi=spec["abi"])

    async def transact(self, call: Any, sender: str | None = None) -> None:
        tx = await call.transact({"from": sender or self.deployer})
        receipt = await self.w3.eth.wait_for_transaction_receipt(tx)
        assert receipt["status"] == 1, "transaction reverted"

    async def fund(self, address: str, wei: int = 10**18) -> None:
        await self.w3.provider.make_request("anvil_setBalance", [address, hex(wei)])  # type: ignore[arg-type]

    async def impersonate(self, address: str) -> None:
        await self.w3.provider.make_request("anvil_impersonateAccount", [address])  # type: ignore[arg-type]


def new_token_id() -> int:
    """A token id no other test (or parametrization) mints on the shared chain."""
    return secrets.randbits(64)


def new_wallet() -> LocalAccount:
    """A fresh random key: tests never share a holder, so they never see each other's tokens."""
    account: LocalAccount = Account.create()
    return account


@dataclass
class TestTokens:
    """The contracts every token-gating test can use."""

    __test__ = False

    usdc6: AsyncContract  # ERC-20, 6 decimals
    token18: AsyncContract  # ERC-20, 18 decimals
    nft: AsyncContract  # ERC-721
    multi: AsyncContract  # ERC-1155


async def deploy_tokens(kit: ChainKit) -> TestTokens:
    return TestTokens(
        usdc6=await kit.deploy("TestERC20", "Test USD", "TUSD", 6),
        token18=await kit.deploy("TestERC20", "Test Token", "TT", 18),
        nft=await kit.deploy("TestERC721"),
        multi=await kit.deploy("TestERC1155"),
    )


def local_settings(node: AnvilNode, **overrides: Any) -> ChainSettings:
    """ChainSettings with the network "local" at `node`."""
    return ChainSettings(rpc_urls={"local": node.url}, local_chain_id=node.chain_id, **overrides)


@pytest.fixture(scope="session")
def anvil() -> Iterator[AnvilNode]:
    """An anvil node for the session (chain id 31337); stopped at the end."""
    node = AnvilNode().start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="session")
async def chain(anvil: AnvilNode) -> AsyncIterator[ChainKit]:
    kit = await ChainKit.connect(anvil)
    try:
        yield kit
    finally:
        await kit.close()


@pytest.fixture(scope="session")
async def tokens(chain: ChainKit) -> TestTokens:
    return await deploy_tokens(chain)


@pytest.fixture
async def local_reader(anvil: AnvilNode) -> AsyncIterator[ChainReader]:
    reader = ChainReader("local", anvil.chain_id, anvil.url, timeout_seconds=5)
    await reader.connect()
    try:
        yield reader
    finally:
        await reader.close()
