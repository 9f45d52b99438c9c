"""Structured logs: JSON lines with the RPC fields; only failed or slow calls are logged."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from nchat.entitlements.v1 import entitlements_service_pb2 as ent_pb
from nchat.entitlements.v1 import entitlements_service_pb2_grpc as ent_grpc

from entitlements.config import ConfigError, Settings
from entitlements.observability.logs import JsonFormatter
from entitlements.store.repository import Store
from tests.observability.conftest import ops_settings, start_ops, stop_ops
from tests.server.conftest import OPS


@pytest.fixture
def rpc_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("entitlements.rpc")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def _calls(target: str, features: list[str]) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = ent_grpc.EntitlementsServiceStub(channel)
        for feature in features:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await stub.CanUseFeature(
                    ent_pb.CanUseFeatureRequest(account_id="ws-log", feature=feature),
                    metadata=OPS,
                )


async def test_failed_rpcs_are_logged_as_json_and_fast_successes_are_not(
    tmp_path: Path, sqlite_store: Store, rpc_lines: io.StringIO
) -> None:
    ops = await start_ops(ops_settings(tmp_path), sqlite_store)
    try:
        await _calls(ops.grpc_target, ["apiAccess", "apiAccess", "noSuchFeature"])
    finally:
        await stop_ops(ops)
    (line,) = lines(rpc_lines)
    assert line["level"] == "INFO"
    assert line["logger"] == "entitlements.rpc"
    assert line["caller"] == "ops"
    assert line["method"] == "EntitlementsService/CanUseFeature"
    assert line["code"] == "INVALID_ARGUMENT"
    assert isinstance(line["duration_ms"], float)
    assert {"time", "message"} <= set(line)


async def test_slow_rpcs_are_logged_with_their_duration(
    tmp_path: Path, sqlite_store: Store, rpc_lines: io.StringIO
) -> None:
    ops = await start_ops(ops_settings(tmp_path, ENTITLEMENTS_SLOW_CALL_MS="0"), sqlite_store)
    try:
        await _calls(ops.grpc_target, ["apiAccess"])
    finally:
        await stop_ops(ops)
    (line,) = lines(rpc_lines)
    assert (line["level"], line["code"], line["caller"]) == ("WARNING", "OK", "ops")
    assert "slow" in str(line["message"])


def test_log_format_is_text_or_json() -> None:
    assert Settings.from_env({"ENTITLEMENTS_DEV_MODE": "1"}).log_format == "text"
    settings = Settings.from_env({"ENTITLEMENTS_DEV_MODE": "1", "ENTITLEMENTS_LOG_FORMAT": "JSON"})
    assert settings.log_format == "json"
    with pytest.raises(ConfigError, match="ENTITLEMENTS_LOG_FORMAT"):
        Settings.from_env({"ENTITLEMENTS_DEV_MODE": "1", "ENTITLEMENTS_LOG_FORMAT": "xml"})
