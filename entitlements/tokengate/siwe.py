"""Sign-In with Ethereum (EIP-4361) messages: building and strictly parsing the fixed grammar.

The `siwe` package pins web3 < 8, so this small module does the job: a message is a fixed
sequence of lines, and anything that does not match it exactly is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["SiweError", "SiweMessage", "format_time", "parse_time"]

_HEADER = " wants you to sign in with your Ethereum account:"
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_NONCE = re.compile(r"[A-Za-z0-9]{8,}")
_OPTIONAL = (
    ("expiration_time", "Expiration Time: "),
    ("not_before", "Not Before: "),
    ("request_id", "Request ID: "),
)


class SiweError(ValueError):
    """The text is not an EIP-4361 message."""


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with a Z, to the second: what the message carries."""
    return value.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_time(value: str, what: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise SiweError(f"{what}: {value!r} is not an RFC 3339 time") from None
    if parsed.tzinfo is None:
        raise SiweError(f"{what}: {value!r} has no time zone")
    return parsed.astimezone(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class SiweMessage:
    domain: str
    address: str
    uri: str
    chain_id: int
    nonce: str
    issued_at: str
    statement: str | None = None
    version: str = "1"
    expiration_time: str | None = None
    not_before: str | None = None
    request_id: str | None = None
    resources: tuple[str, ...] = ()

    def to_text(self) -> str:
        lines = [f"{self.domain}{_HEADER}", self.address, ""]
        if self.statement is not None:
            lines += [self.statement, ""]
        else:
            lines.append("")
        lines += [
            f"URI: {self.uri}",
            f"Version: {self.version}",
            f"Chain ID: {self.chain_id}",
            f"Nonce: {self.nonce}",
            f"Issued At: {self.issued_at}",
        ]
        for attribute, label in _OPTIONAL:
            value = getattr(self, attribute)
            if value is not None:
                lines.append(f"{label}{value}")
        if self.resources:
            lines.append("Resources:")
            lines += [f"- {r}" for r in self.resources]
        return "\n".join(lines)

    @classmethod
    def parse(cls, text: str) -> SiweMessage:
        lines = text.split("\n")
        if len(lines) < 9:
            raise SiweError("too short to be an EIP-4361 message")
        header = lines[0]
        if not header.endswith(_HEADER):
            raise SiweError("the first line is not '<domain> wants you to sign in ...'")
        domain = header[: -len(_HEADER)]
        if not domain or any(c.isspace() for c in domain):
            raise SiweError("the domain is missing or contains white space")
        address = lines[1]
        if not _ADDRESS.fullmatch(address):
            raise SiweError("the second line is not an address")
        if lines[2] != "":
            raise SiweError("expected an empty line after the address")
        statement: str | None
        if lines[3] == "":
            statement, index = None, 4
        else:
            statement, index = lines[3], 4
            if lines[index] != "":
                raise SiweError("expected an empty line after the statement")
            index += 1
        fields: dict[str, str] = {}
        for attribute, label in (
            ("uri", "URI: "),
            ("version", "Version: "),
            ("chain_id", "Chain ID: "),
            ("nonce", "Nonce: "),
            ("issued_at", "Issued At: "),
        ):
            if index >= len(lines) or not lines[index].startswith(label):
                raise SiweError(f"expected a line '{label}...'")
            fields[attribute] = lines[index][len(label) :]
            index += 1
        for attribute, label in _OPTIONAL:
            if index < len(lines) and lines[index].startswith(label):
                fields[attribute] = lines[index][len(label) :]
                index += 1
        resources: list[str] = []
        if index < len(lines) and lines[index] == "Resources:":
            index += 1
            while index < len(lines) and lines[index].startswith("- "):
                resources.append(lines[index][2:])
                index += 1
        if index != len(lines):
            raise SiweError(f"unexpected line {index + 1}: {lines[index]!r}")
        if fields["version"] != "1":
            raise SiweError(f"unsupported version {fields['version']!r}")
        if not fields["chain_id"].isdigit():
            raise SiweError("the chain id is not a number")
        if not _NONCE.fullmatch(fields["nonce"]):
            raise SiweError("the nonce is not 8 or more letters and digits")
        parse_time(fields["issued_at"], "Issued At")
        for attribute, label in _OPTIONAL[:2]:
            if attribute in fields:
                parse_time(fields[attribute], label.rstrip(": "))
        return cls(
            domain=domain,
            address=address,
            statement=statement,
            uri=fields["uri"],
            version=fields["version"],
            chain_id=int(fields["chain_id"]),
            nonce=fields["nonce"],
            issued_at=fields["issued_at"],
            expiration_time=fields.get("expiration_time"),
            not_before=fields.get("not_before"),
            request_id=fields.get("request_id"),
            resources=tuple(resources),
        )
