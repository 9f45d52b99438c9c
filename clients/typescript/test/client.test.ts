// Against a real server (one per file: see server.ts): the generated stubs with the seed's
// examples, EntitlementsClient's typed errors, local evaluation kept fresh by WatchEntitlements,
// read-your-writes with minRevision, and the seed-style plan restrictions.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { Code, ConnectError, createClient } from "@connectrpc/connect";

import {
  AdminService,
  BadRequestSchema,
  checkUsageLimit,
  createEntitlementsClients,
  createPlanRestrictions,
  EntitlementsClient,
  type EntitlementsClients,
  ErrorInfoSchema,
  FeatureDecisionReason,
  InvalidArgument,
  type PlanRestrictionDenial,
  requireFeature,
  requireMinimumPlan,
  UsageEventStatus,
  UsageLevel,
} from "../src/index.js";
import { eventually, TestServer } from "./server.js";

describe("EntitlementsClient against a real server", () => {
  const server = new TestServer();
  let client: EntitlementsClient;
  let local: EntitlementsClient;
  let admin: ReturnType<typeof createClient<typeof AdminService>>;

  before(async () => {
    await server.start();
    client = new EntitlementsClient(server.url, { timeoutMs: 2000 });
    local = new EntitlementsClient(server.url, { timeoutMs: 2000, localEvaluation: true });
    admin = createClient(AdminService, client.transport);
  });

  after(async () => {
    await local?.close();
    await client?.close();
    await server.stop();
  });

  async function grant(accountId: string, features: string[]): Promise<bigint> {
    const answer = await admin.setAccountOverrides(
      { overrides: { accountId, grantedFeatures: features, reason: "node test" } },
      { timeoutMs: 5000 },
    );
    return answer.revision;
  }

  it("an unknown feature is an InvalidArgument naming the field, with the ErrorInfo reason", async () => {
    const error = await client.canUseFeature("ws-err", "teleportation").catch((e: unknown) => e);
    assert.ok(error instanceof InvalidArgument, String(error));
    assert.equal(error.field, "feature");
    assert.equal(error.reason, "ERROR_REASON_UNKNOWN_FEATURE");
  });

  it("checkFeatures answers per item, a bad item with its own typed error", async () => {
    const [good, bad] = await client.checkFeatures([
      ["ws-err", "webhooks"],
      ["ws-err", "teleportation"],
    ]);
    assert.equal(good && "allowed" in good ? good.upgradePlanId : "", "starter");
    assert.ok(bad instanceof InvalidArgument);
    assert.equal(bad.field, "checks[1].feature");
    assert.equal(bad.reason, "ERROR_REASON_UNKNOWN_FEATURE");
  });

  it("the local cache answers after the first check and sees a change within 1 s", async () => {
    const first = await local.canUseFeature("ws-local", "customBranding");
    assert.equal(first.source, "rpc");
    assert.equal(first.allowed, false);
    assert.equal(first.upgradePlanId, "starter");
    const cached = await eventually(() => local.canUseFeatureLocally("ws-local", "customBranding"), 5000, "watched");
    assert.equal(cached.source, "local");
    assert.equal(cached.allowed, false);
    assert.equal(cached.message, first.message);
    assert.equal(local.localState().connected, true);

    const wrote = performance.now();
    await grant("ws-local", ["customBranding"]);
    const changed = await eventually(
      () => {
        const answer = local.canUseFeatureLocally("ws-local", "customBranding");
        return answer?.allowed ? answer : undefined;
      },
      1000,
      "the grant reaches the local cache",
    );
    assert.ok(performance.now() - wrote < 1000);
    assert.equal(changed.source, "local");
    assert.equal(changed.reason, FeatureDecisionReason.GRANTED_BY_OVERRIDE);
  });

  it("minRevision: a local state older than the caller's write is not used", async () => {
    await local.canUseFeature("ws-ryw", "webhooks");
    await eventually(() => local.canUseFeatureLocally("ws-ryw", "webhooks"), 5000, "watched");
    const revision = await grant("ws-ryw", ["webhooks"]);
    // Asked at once with the write's revision: the answer reflects the write, wherever it came from.
    const answer = await local.canUseFeature("ws-ryw", "webhooks", { minRevision: revision });
    assert.equal(answer.allowed, true);
    assert.ok(answer.revision >= revision);
  });

  it("checkLimit and checkMinimumPlan answer locally for watched accounts as the server does", async () => {
    const rpc = await client.checkLimit("ws-limit", "maxUsers", 8);
    await local.checkLimit("ws-limit", "maxUsers", 8);
    const cached = await eventually(async () => {
      const answer = await local.checkLimit("ws-limit", "maxUsers", 8);
      return answer.source === "local" ? answer : undefined;
    }, 5000, "watched");
    assert.deepEqual({ ...cached, source: "rpc", revision: rpc.revision }, rpc);
    assert.equal(cached.level, UsageLevel.WARNING);
    const plan = await local.checkMinimumPlan("ws-limit", "pro");
    assert.deepEqual([plan.allowed, plan.planId, plan.source], [false, "free", "local"]);
  });

  describe("the generated stubs", () => {
    let clients: EntitlementsClients;

    before(() => {
      clients = createEntitlementsClients(server.url, { timeoutMs: 2000 });
    });

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

  describe("plan restrictions (the seed's middleware shape)", () => {
    const request = (account: string) =>
      new Request("http://nchat.test/api/branding", { headers: { "x-workspace-id": account } });
    let plans: ReturnType<typeof createPlanRestrictions<Request>>;

    before(() => {
      plans = createPlanRestrictions(local, {
        accountId: (req) => req.headers.get("x-workspace-id"),
        upgradeUrl: (plan) => `/settings/billing?plan=${plan}`,
      });
    });

    it("requireFeature: 403 with the upgrade path, null when allowed", async () => {
      const denied = await plans.applyPlanRestrictions(request("ws-mw"), requireFeature("customBranding"));
      assert.equal(denied?.status, 403);
      const body = (await denied?.json()) as PlanRestrictionDenial;
      assert.equal(body.code, "FEATURE_NOT_IN_PLAN");
      assert.equal(body.currentPlan, "free");
      assert.deepEqual(body.upgrade, { planId: "starter", url: "/settings/billing?plan=starter" });
      assert.equal(await plans.applyPlanRestrictions(request("ws-mw"), requireFeature("messaging")), null);
    });

    it("requireMinimumPlan: 403 on free for pro", async () => {
      const denied = await plans.applyPlanRestrictions(request("ws-mw"), requireMinimumPlan("pro"));
      const body = (await denied?.json()) as PlanRestrictionDenial;
      assert.equal(body.code, "PLAN_TOO_LOW");
      assert.equal(body.upgrade?.planId, "pro");
      assert.equal(await plans.applyPlanRestrictions(request("ws-mw"), requireMinimumPlan("free")), null);
    });

    it("checkUsageLimit: 10 of 10 users is refused with the plan that has room; 3 passes", async () => {
      const denied = await plans.applyPlanRestrictions(request("ws-mw"), checkUsageLimit("maxUsers", 10));
      const body = (await denied?.json()) as PlanRestrictionDenial;
      assert.equal(body.code, "LIMIT_EXCEEDED");
      assert.deepEqual([body.limit, body.current, body.max], ["maxUsers", "10", "10"]);
      assert.equal(body.upgrade?.planId, "starter");
      assert.equal(await plans.applyPlanRestrictions(request("ws-mw"), checkUsageLimit("maxUsers", 3)), null);
    });

    it("the first failing restriction answers; Express middleware sends the same 403", async () => {
      let sent: { status: number; body: PlanRestrictionDenial } | undefined;
      const response = {
        status: (status: number) => ({ json: (body: unknown) => (sent = { status, body: body as PlanRestrictionDenial }) }),
      };
      const middleware = createPlanRestrictions<{ headers: Record<string, string> }>(local, {
        accountId: (req) => req.headers["x-workspace-id"],
      }).middleware(requireFeature("messaging"), requireMinimumPlan("business"));
      await new Promise<void>((done) => {
        middleware({ headers: { "x-workspace-id": "ws-mw" } }, response, () => done());
        const poll = setInterval(() => sent && (clearInterval(poll), done()), 5);
      });
      assert.equal(sent?.status, 403);
      assert.equal(sent?.body.code, "PLAN_TOO_LOW");
      assert.equal(sent?.body.upgrade?.url, null);
    });
  });
});
