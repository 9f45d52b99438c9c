"""docs/grpcurl.md stays true: every command in it is run, in order, the way grpcurl runs it
(server reflection only, requests parsed from the JSON shown, answers printed as protojson), and
each output block shown is checked against the real answer."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from google.rpc import status_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from entitlements.config import Settings
from entitlements.store.repository import Store
from tests.clients.conftest import start_server

DOC = Path(__file__).resolve().parents[2] / "docs" / "grpcurl.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
MONTH = re.compile(r"^\d{4}-\d{2}$")
FIELD = r"^\s+(?:optional |repeated )?\w+ (\w+) = \d+;"


@dataclass
class Example:
    command: list[str]
    output_kind: str = ""  # "json", "text" or "" (no output shown)
    output: str = ""


def examples() -> list[Example]:
    found: list[Example] = []
    for match in FENCE.finditer(DOC.read_text()):
        kind, body = match.group(1), match.group(2)
        if kind == "sh":
            found.extend(Example(command) for command in _commands(body))
        elif kind in ("json", "text") and found and not found[-1].output_kind:
            found[-1].output_kind, found[-1].output = kind, body
    return found


def _commands(block: str) -> list[list[str]]:
    commands, pending = [], ""
    for line in block.splitlines():
        pending += line.removesuffix("\\") + " " if line.endswith("\\") else line + "\n"
        if line.endswith("\\") or pending.count("'") % 2:
            continue
        words = shlex.split(pending)
        pending = ""
        if words and words[0] == "grpcurl":
            commands.append(words[1:])
    return commands


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
    elif isinstance(shown, str) and MONTH.match(shown):
        assert isinstance(actual, str) and MONTH.match(actual), where
    else:
        assert shown == actual, f"{where}: shown {shown!r}, answered {actual!r}"


def run_examples(port: int) -> int:
    ran = 0
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        pool = descriptor_pool.DescriptorPool(database)
        for example in examples():
            run_one(example, channel, database, pool)
            ran += 1
    return ran


def run_one(
    example: Example,
    channel: grpc.Channel,
    database: ProtoReflectionDescriptorDatabase,
    pool: descriptor_pool.DescriptorPool,
) -> None:
    args, data, headers = list(example.command), "{}", []
    flags_with_value = {"-d": "data", "-H": "header", "-max-time": None}
    positional = []
    while args:
        arg = args.pop(0)
        if arg in flags_with_value:
            value = args.pop(0)
            if arg == "-d":
                data = value
            elif arg == "-H":
                name, _, text = value.partition(":")
                headers.append((name.strip(), text.strip()))
        elif not arg.startswith("-"):
            positional.append(arg)
    assert positional[0] == "localhost:50051", example.command
    verb = positional[1]
    if verb == "list":
        if len(positional) == 2:
            services = sorted(database.get_services())
            if example.output_kind:
                assert example.output.split() == services
        else:
            assert pool.FindServiceByName(positional[2]).methods
        return
    if verb == "describe":
        symbol = positional[2]
        described = _find(pool, symbol)
        if example.output_kind == "text":
            fields = re.findall(FIELD, example.output, re.MULTILINE)
            assert fields and set(fields) == set(described.fields_by_name), (symbol, fields)
        return
    service_name, method_name = verb.rsplit("/", 1)
    method = pool.FindServiceByName(service_name).FindMethodByName(method_name)
    request_cls = message_factory.GetMessageClass(method.input_type)
    response_cls = message_factory.GetMessageClass(method.output_type)
    request = json_format.Parse(data, request_cls())  # rejects a field name the API lacks
    path = f"/{service_name}/{method_name}"
    try:
        if method.server_streaming:
            stream = channel.unary_stream(
                path,
                request_serializer=request_cls.SerializeToString,
                response_deserializer=response_cls.FromString,
            )(request, metadata=tuple(headers), timeout=5)
            answer = next(stream)
            stream.cancel()
        else:
            answer = channel.unary_unary(
                path,
                request_serializer=request_cls.SerializeToString,
                response_deserializer=response_cls.FromString,
            )(request, metadata=tuple(headers), timeout=5)
    except grpc.RpcError as error:
        assert "-format-error" in example.command, f"{example.command} failed: {error}"
        shown = json.loads(example.output)
        status = _status(error)
        actual = json.loads(json_format.MessageToJson(status, descriptor_pool=pool))
        assert actual["code"] == shown["code"]
        assert actual["message"] == shown["message"]
        reasons = [d.get("reason") for d in actual["details"] if "reason" in d]
        assert reasons == [d["reason"] for d in shown["details"] if "reason" in d]
        return
    assert "-format-error" not in example.command, f"{example.command} did not fail"
    if example.output_kind == "json":
        _subset(json.loads(example.output), json.loads(json_format.MessageToJson(answer)))


def _find(pool: descriptor_pool.DescriptorPool, symbol: str) -> Any:
    """What `grpcurl describe <symbol>` describes: a service, method, message or enum."""
    for find in (pool.FindServiceByName, pool.FindMessageTypeByName, pool.FindEnumTypeByName):
        try:
            return find(symbol)
        except KeyError:
            pass
    service, _, method = symbol.rpartition(".")
    return pool.FindServiceByName(service).FindMethodByName(method)


def _status(error: grpc.RpcError) -> status_pb2.Status:
    trailing: Any = error.trailing_metadata() or ()
    for key, value in trailing:
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    raise AssertionError("no rich status")


async def test_every_grpcurl_command_in_the_doc_answers_as_shown(
    store: Store, tmp_path: Path
) -> None:
    settings = Settings.from_env({"ENTITLEMENTS_DEV_MODE": "1"})
    running = await start_server(settings, store)
    try:
        ran = await asyncio.to_thread(run_examples, running.port)
    finally:
        await running.stop(0)
    assert ran >= 20
