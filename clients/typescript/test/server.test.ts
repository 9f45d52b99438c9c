// Calls a real `entitlements serve` (dev mode, a temporary SQLite database, free ports) through
// the generated stubs over gRPC: the seed's examples, usage reporting and an error's details.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { Code, ConnectError } from "@connectrpc/connect";

import {
  BadRequestSchema,
  type EntitlementsClients,
  ErrorInfoSchema,
  FeatureDecisionReason,
  UsageEventStatus,
  UsageLevel,
  createEntitlementsClients,
} from "../src/index.js";
import { TestServer } from "./server.js";

describe("the generated stubs against a real server", () => {
  const server = new TestServer();
  let clients: EntitlementsClients;

  before(async () => {
    await server.start();
    clients = createEntitlementsClients(server.url, { timeoutMs: 2000 });
  });

  after(() => server.stop());

  it("CanUseFeature: free + apiAccess is not allowed, upgrade to starter", async () => {
    const answer = await clients.entitlements.canUseFeature({
      accountId: "ws-node",
      feature: "apiAccess",
    });
    assert.equal(answer.allowed, false);
    assert.equal(answer.planId, "free");
    assert.equal(answer.upgradePlanId, "starter");
    assert.equal(answer.reason, FeatureDecisionReason.FEATURE_NOT_IN_PLAN);
  });

  it("ReportUsage counts an idempotency key once", async () => {
    const event = { accountId: "ws-node", metric: "messages", delta: 5n, idempotencyKey: "node-1" };
    const first = await clients.usage.reportUsage({ events: [event] });
    const again = await clients.usage.reportUsage({ events: [event] });
    assert.equal(first.results[0]?.status, UsageEventStatus.APPLIED);
    assert.equal(again.results[0]?.status, UsageEventStatus.DUPLICATE);
    assert.equal(again.results[0]?.total, 5n);
  });

  it("CheckLimit: free maxUsers with current 8 is allowed at 80 %", async () => {
    const check = await clients.usage.checkLimit({
      accountId: "ws-node",
      limit: "maxUsers",
      current: 8n,
    });
    assert.equal(check.allowed, true);
    assert.equal(check.limit, 10n);
    assert.equal(check.percentage, 80);
    assert.equal(check.level, UsageLevel.WARNING);
  });

  it("an unknown feature is INVALID_ARGUMENT naming the field", async () => {
    const error = await clients.entitlements
      .canUseFeature({ accountId: "ws-node", feature: "teleportation" })
      .then(() => undefined, (e: unknown) => ConnectError.from(e));
    assert.ok(error);
    assert.equal(error.code, Code.InvalidArgument);
    const [bad] = error.findDetails(BadRequestSchema);
    assert.equal(bad?.fieldViolations[0]?.field, "feature");
    const [info] = error.findDetails(ErrorInfoSchema);
    assert.equal(info?.reason, "ERROR_REASON_UNKNOWN_FEATURE");
  });
});
