// The server is killed with SIGKILL and started again on the same database under a running
// UsageReporter and a local-evaluation client: exact totals, stale answers while it is away,
// retries on UNAVAILABLE.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { EntitlementsClient, RetryPolicy, Unavailable, UsageReporter } from "../src/index.js";
import { eventually, TestServer } from "./server.js";

describe("a server killed and restarted", () => {
  const server = new TestServer();
  let client: EntitlementsClient;

  before(async () => {
    await server.start();
    client = new EntitlementsClient(server.url, {
      timeoutMs: 2000,
      localEvaluation: { reconnect: new RetryPolicy({ maxAttempts: 1, initialBackoffMs: 50, maxBackoffMs: 200 }) },
    });
  });

  after(async () => {
    await client?.close();
    await server.stop();
  });

  it("a running reporter's totals are exact across kill -9 and restart", async () => {
    const reporter = new UsageReporter(client, {
      maxDelayMs: 20,
      maxBatchSize: 7,
      backoff: new RetryPolicy({ maxAttempts: 1, initialBackoffMs: 20, maxBackoffMs: 200 }),
    });
    let added = 0n;
    const accounts = ["ws-kill-a", "ws-kill-b", "ws-kill-c"];
    const addFor = async (ms: number) => {
      const until = performance.now() + ms;
      let i = 0;
      while (performance.now() < until) {
        const account = accounts[i % accounts.length] ?? "ws-kill-a";
        reporter.add(account, "messages", (i % 5) + 1);
        added += BigInt((i % 5) + 1);
        i += 1;
        await new Promise((ok) => setTimeout(ok, 2));
      }
    };
    await addFor(300);
    await server.kill();
    await addFor(300); // sent into the void: retried with the same keys
    const restarted = server.start();
    await addFor(300);
    await restarted;
    await addFor(300);
    await reporter.close(30_000);
    assert.ok(reporter.retries > 0, "the reporter never met the outage");
    assert.equal(reporter.failed.length, 0);
    let total = 0n;
    for (const account of accounts) {
      const usage = await client.getUsage(account);
      total += usage.metrics.find((m) => m.metric === "messages")?.current ?? 0n;
    }
    assert.equal(total, added);
  });

  it("while the server is away the cache answers stale, then local again; calls retry UNAVAILABLE", async () => {
    await client.canUseFeature("ws-stale", "apiAccess");
    await eventually(() => client.canUseFeatureLocally("ws-stale", "apiAccess"), 5000, "watched");
    await server.kill();
    await eventually(() => (client.localState().connected ? undefined : true), 5000, "stream down");
    const stale = await client.canUseFeature("ws-stale", "apiAccess");
    assert.deepEqual([stale.source, stale.allowed, stale.upgradePlanId], ["stale", false, "starter"]);
    assert.ok(client.localState().stalenessBoundMs > 0);
    // Not watched, so no memory: the typed error.
    await assert.rejects(client.canUseFeature("ws-never-seen", "apiAccess"), Unavailable);

    const patient = new EntitlementsClient(server.url, {
      timeoutMs: 2000,
      retry: new RetryPolicy({ maxAttempts: 600, initialBackoffMs: 50, maxBackoffMs: 100 }),
    });
    const restarted = server.start();
    const answer = await patient.getUsage("ws-stale"); // fails UNAVAILABLE until the server is up
    assert.equal(answer.planId, "free");
    await restarted;
    await eventually(() => (client.localState().connected ? true : undefined), 10_000, "stream back");
    const fresh = await client.canUseFeature("ws-stale", "apiAccess");
    assert.equal(fresh.source, "local");
    assert.ok(client.localState().reconnects >= 1);
  });
});
