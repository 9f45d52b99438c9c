"""The EIP-4361 message grammar: what is built parses back; anything else is refused."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from entitlements.tokengate.siwe import SiweError, SiweMessage

MESSAGE = SiweMessage(
    domain="chat.example.com",
    address="0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48",
    statement="Link this wallet.",
    uri="https://chat.example.com",
    chain_id=137,
    nonce="a1b2c3d4e5f6a7b8",
    issued_at="2026-11-24T10:00:00Z",
    expiration_time="2026-11-24T10:10:00Z",
    request_id="r-1",
    resources=("https://chat.example.com/terms",),
)

EIP_EXAMPLE = """service.invalid wants you to sign in with your Ethereum account:
0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2

I accept the ServiceOrg Terms of Service: https://service.invalid/tos

URI: https://service.invalid/login
Version: 1
Chain ID: 1
Nonce: 32891756
Issued At: 2021-09-30T16:25:24Z
Resources:
- ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/
- https://example.com/my-web2-claim.json"""


def test_built_message_parses_back_to_itself() -> None:
    assert SiweMessage.parse(MESSAGE.to_text()) == MESSAGE


def test_the_eips_example_parses() -> None:
    parsed = SiweMessage.parse(EIP_EXAMPLE)
    assert parsed.chain_id == 1
    assert parsed.nonce == "32891756"
    assert len(parsed.resources) == 2
    assert parsed.to_text() == EIP_EXAMPLE


def test_a_message_without_statement_parses() -> None:
    bare = SiweMessage(
        domain="localhost",
        address=MESSAGE.address,
        uri="https://localhost",
        chain_id=1,
        nonce="abcdefgh1",
        issued_at="2026-11-24T10:00:00Z",
    )
    assert SiweMessage.parse(bare.to_text()) == bare


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t.replace("Version: 1", "Version: 2"),
        lambda t: t.replace("Chain ID: 137", "Chain ID: x"),
        lambda t: t.replace("Nonce: a1b2c3d4e5f6a7b8", "Nonce: short"),
        lambda t: t.replace("Issued At: 2026-11-24T10:00:00Z", "Issued At: yesterday"),
        lambda t: t + "\nExtra: line",
        lambda t: t.replace(" wants you to sign in", " would like you to sign in"),
        lambda t: t.replace("URI: ", "Uri: "),
        lambda t: t.replace("\n\nURI", "\nURI"),
    ],
)
def test_mangled_messages_are_refused(mangle: object) -> None:
    with pytest.raises(SiweError):
        SiweMessage.parse(mangle(MESSAGE.to_text()))  # type: ignore[operator]


@given(st.text(max_size=400))
def test_parsing_arbitrary_text_fails_only_with_siwe_error(text: str) -> None:
    with contextlib.suppress(SiweError):
        SiweMessage.parse(text)
