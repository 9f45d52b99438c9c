// Calls a real `entitlements serve` (dev mode, a temporary SQLite database, free ports) through
// the generated stubs over gRPC: the seed's examples, usage reporting and an error's details.
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";

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

const repo = resolve(fileURLToPath(new URL("../../..", import.meta.url)));
const python = process.env.ENTITLEMENTS_PYTHON ?? join(repo, ".venv", "bin", "python");

function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => ok(port));
    });
  });
}

describe("the generated stubs against a real server", () => {
  let dir = "";
  let server: ChildProcess | undefined;
  let clients: EntitlementsClients;
  let output = "";

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "entitlements-node-"));
    const grpcPort = await freePort();
    const env = {
      ...process.env,
      ENTITLEMENTS_DEV_MODE: "1",
      ENTITLEMENTS_DATABASE_URL: `sqlite+aiosqlite:///${join(dir, "entitlements.db")}`,
      ENTITLEMENTS_GRPC_ADDR: `127.0.0.1:${grpcPort}`,
      ENTITLEMENTS_HTTP_ADDR: `127.0.0.1:${await freePort()}`,
      ENTITLEMENTS_LOG_LEVEL: "WARNING",
    };
    execFileSync(python, ["-m", "entitlements.cli", "migrate"], { cwd: dir, env, stdio: "pipe" });
    server = spawn(python, ["-m", "entitlements.cli", "serve"], { cwd: dir, env });
    server.stdout?.on("data", (chunk: Buffer) => (output += chunk.toString()));
    server.stderr?.on("data", (chunk: Buffer) => (output += chunk.toString()));
    clients = createEntitlementsClients(`http://127.0.0.1:${grpcPort}`, { timeoutMs: 2000 });
    const deadline = Date.now() + 60_000;
    for (;;) {
      try {
        await clients.entitlements.listPlans({});
        return;
      } catch (error) {
        if (server.exitCode !== null || Date.now() > deadline) {
          throw new Error(`server did not start: ${String(error)}\n${output}`);
        }
        await new Promise((ok) => setTimeout(ok, 100));
      }
    }
  });

  after(async () => {
    if (server && server.exitCode === null) {
      const exited = new Promise((ok) => server?.once("exit", ok));
      server.kill("SIGTERM");
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
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
