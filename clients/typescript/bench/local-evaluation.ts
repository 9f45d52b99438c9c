// Local `canUseFeature` checks per second in Node, beside the RPC client's, against a real
// server (the same one the tests start: see test/server.ts for ENTITLEMENTS_PYTHON/_VENV).
//
//   npm run bench            # prints one JSON line
//
// Local: 1,000 watched accounts, checks round-robin over them and 4 features, awaited one after
// another (each answer is a resolved promise) for 3 s after a 0.5 s warm-up. RPC: the plain
// client, 32 calls in flight, for 3 s.
import { cpus } from "node:os";

import { EntitlementsClient } from "../src/index.js";
import { TestServer } from "../test/server.js";

const FEATURES = ["customBranding", "apiAccess", "messaging", "ssoIntegration"];
const ACCOUNTS = Array.from({ length: 1000 }, (_, i) => `ws-bench-${i}`);

async function localRate(client: EntitlementsClient, seconds: number): Promise<number> {
  let checks = 0;
  const until = performance.now() + seconds * 1000;
  const started = performance.now();
  while (performance.now() < until) {
    for (let i = 0; i < 1000; i++) {
      const answer = await client.canUseFeature(ACCOUNTS[i % ACCOUNTS.length] ?? "", FEATURES[i & 3] ?? "");
      if (answer.source !== "local") throw new Error(`not local: ${answer.source}`);
    }
    checks += 1000;
  }
  return checks / ((performance.now() - started) / 1000);
}

async function rpcRate(client: EntitlementsClient, seconds: number): Promise<number> {
  let checks = 0;
  const until = performance.now() + seconds * 1000;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: 32 }, async (_, worker) => {
      for (let i = worker; performance.now() < until; i += 32) {
        await client.canUseFeature(ACCOUNTS[i % ACCOUNTS.length] ?? "", FEATURES[i & 3] ?? "");
        checks += 1;
      }
    }),
  );
  return checks / ((performance.now() - started) / 1000);
}

const server = new TestServer();
await server.start();
const local = new EntitlementsClient(server.url, { timeoutMs: 5000, localEvaluation: true });
const rpc = new EntitlementsClient(server.url, { timeoutMs: 5000 });
try {
  for (let i = 0; i < ACCOUNTS.length; i += 50) {
    await Promise.all(ACCOUNTS.slice(i, i + 50).map((account) => local.canUseFeature(account, "messaging")));
  }
  const deadline = performance.now() + 30_000;
  while (!ACCOUNTS.every((a) => local.canUseFeatureLocally(a, "messaging"))) {
    if (performance.now() > deadline) throw new Error("accounts never became local");
    await new Promise((ok) => setTimeout(ok, 20));
  }
  await localRate(local, 0.5);
  const localPerSecond = await localRate(local, 3);
  await rpcRate(rpc, 0.5);
  const rpcPerSecond = await rpcRate(rpc, 3);
  console.log(
    JSON.stringify({
      date: new Date().toISOString(),
      node: process.version,
      cpu: cpus()[0]?.model,
      cores: cpus().length,
      localChecksPerSecond: Math.round(localPerSecond),
      rpcChecksPerSecond: Math.round(rpcPerSecond),
      ratio: Math.round(localPerSecond / rpcPerSecond),
    }),
  );
} finally {
  await local.close();
  await rpc.close();
  await server.stop();
}
