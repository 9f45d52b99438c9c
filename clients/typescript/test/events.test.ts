// verifyEvent against a vector signed by the reference implementation (the `standardwebhooks`
// PyPI package, over the body the service sends), and refusals of anything altered.
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { test } from "node:test";

import { EventVerificationError, verifyEvent } from "../src/index.js";

const SECRET = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const BODY =
  '{"account_id":"ws-1","data":{"level":90,"limit":10000,"metric":"messages","period":"2026-11","total":9100},"id":"evt_0123456789abcdef0123456789abcdef","timestamp":"2026-11-28T12:00:00.000+00:00","type":"usage.threshold_crossed"}';
const HEADERS = {
  "webhook-id": "evt_0123456789abcdef0123456789abcdef",
  "webhook-timestamp": "1795867205",
  "webhook-signature": "v1,F98Y8F7HTC+B64DyUbIg30xhkUiiucV4NZLaCks9lcg=",
};
const NOW = 1795867205 + 10;

test("an event signed per the spec is verified and typed", () => {
  const event = verifyEvent(BODY, new Headers(HEADERS), SECRET, { now: NOW });
  assert.equal(event.account_id, "ws-1");
  assert.equal(event.timestamp.toISOString(), "2026-11-28T12:00:00.000Z");
  if (event.type !== "usage.threshold_crossed") assert.fail(event.type);
  assert.deepEqual([event.data.level, event.data.total, event.data.limit], [90, 9100, 10000]);
});

test("an altered body, another secret, an old timestamp or a missing header is refused", () => {
  const cases: [string, Record<string, string>, string, number][] = [
    [BODY.replace("9100", "1"), HEADERS, SECRET, NOW],
    [BODY, HEADERS, "whsec_" + Buffer.from("another secret, 32 bytes long...").toString("base64"), NOW],
    [BODY, HEADERS, SECRET, NOW + 3600],
    [BODY, { ...HEADERS, "webhook-signature": "" }, SECRET, NOW],
    [BODY, { ...HEADERS, "webhook-id": "evt_other" }, SECRET, NOW],
  ];
  for (const [body, headers, secret, now] of cases) {
    assert.throws(() => verifyEvent(body, headers, secret, { now }), EventVerificationError);
  }
});

test("each type narrows to its documented payload", () => {
  const body = JSON.stringify({
    account_id: "ws-1",
    data: { amount_cents: 2500, attempt_count: 1, currency: "usd", invoice_id: "in_1", next_attempt_at: null, subscription_id: "sub_1" },
    id: "evt_payment",
    timestamp: "2026-11-28T12:00:00.000+00:00",
    type: "payment.failed",
  });
  const stamp = Math.floor(Date.now() / 1000);
  const key = Buffer.from(SECRET.slice("whsec_".length), "base64");
  const signature = createHmac("sha256", key).update(`evt_payment.${stamp}.${body}`).digest("base64");
  const event = verifyEvent(body, { "webhook-id": "evt_payment", "webhook-timestamp": String(stamp), "webhook-signature": `v1,${signature}` }, SECRET);
  if (event.type !== "payment.failed") assert.fail(event.type);
  const cents: number = event.data.amount_cents;
  assert.deepEqual([cents, event.data.currency, event.data.next_attempt_at], [2500, "usd", null]);
});
