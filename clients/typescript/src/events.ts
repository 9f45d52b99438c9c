// Receiving the service's outbound events (docs/events.md): verify the Standard Webhooks
// signature and parse the body into a typed event. Receivers may use the `standardwebhooks` npm
// package instead; this needs nothing but node:crypto. An event can arrive more than once: drop
// a duplicate by `event.id` (the `webhook-id` header).
import { createHmac, timingSafeEqual } from "node:crypto";

/** A request that is not a valid event signed with the given secret. */
export class EventVerificationError extends Error {
  override name = "EventVerificationError";
}

/** `usage.threshold_crossed`: a metric reached `level` % (75, 90 or 100) of its limit. */
export interface ThresholdCrossedData {
  metric: string;
  period: string;
  level: 75 | 90 | 100;
  total: number;
  limit: number;
}

/** `subscription.renewal_upcoming`: the subscription renews at `current_period_end`. */
export interface RenewalUpcomingData {
  subscription_id: string;
  plan_id: string;
  interval: "month" | "year";
  current_period_end: string;
  days_before: number;
}

interface EventBase<T extends string, D> {
  /** Also the `webhook-id` header; the same on every delivery of the event. */
  id: string;
  type: T;
  account_id: string;
  /** When the change happened. */
  timestamp: Date;
  data: D;
}

/** `subscription.activated`: a subscription started granting `plan_id`. */
export interface SubscriptionActivatedData {
  subscription_id: string;
  plan_id: string;
  interval: "month" | "year";
  payment_method: "card" | "crypto" | "manual";
  status: "active" | "trialing";
  current_period_end: string | null;
}

/** `subscription.changed`: another plan or interval. */
export interface SubscriptionChangedData {
  subscription_id: string;
  plan_id: string;
  previous_plan_id: string;
  interval: "month" | "year";
  previous_interval: "month" | "year";
  payment_method: "card" | "crypto" | "manual";
}

/** `subscription.canceled`: ended (`ended_at` set) or set to end at the period's end. */
export interface SubscriptionCanceledData {
  subscription_id: string;
  plan_id: string;
  payment_method: "card" | "crypto" | "manual";
  status: string;
  cancel_at_period_end: boolean;
  current_period_end: string | null;
  ended_at: string | null;
}

/** `subscription.past_due`: a renewal payment failed; the plan is kept until `grace_ends_at`. */
export interface SubscriptionPastDueData {
  subscription_id: string;
  plan_id: string;
  payment_method: "card" | "crypto" | "manual";
  past_due_since: string;
  grace_ends_at: string;
}

/** `payment.failed`: a Stripe invoice payment attempt failed (`next_attempt_at` null: no retry). */
export interface PaymentFailedData {
  subscription_id: string | null;
  invoice_id: string;
  amount_cents: number;
  currency: string;
  attempt_count: number;
  next_attempt_at: string | null;
}

/** `crypto_payment.confirmed`: paid (`status` confirmed or overpaid); amounts are decimal strings. */
export interface CryptoPaymentConfirmedData {
  payment_id: string;
  plan_id: string;
  interval: "month" | "year";
  network: string;
  currency: string;
  amount: string;
  received: string;
  status: "confirmed" | "overpaid";
  tx_hash: string | null;
}

/** `crypto_payment.underpaid`: `received` is short of `amount` (decimal strings). */
export interface CryptoPaymentUnderpaidData {
  payment_id: string;
  network: string;
  currency: string;
  amount: string;
  received: string;
  tx_hash: string | null;
}

/** `crypto_payment.reversed`: a reorg removed the transfer of a confirmed payment. */
export interface CryptoPaymentReversedData {
  payment_id: string;
  network: string;
  tx_hash: string | null;
  subscription_id: string | null;
  status: string;
}

/** `token_access.granted` / `token_access.revoked`: a stored channel access decision turned. */
export interface TokenAccessData {
  channel_id: string;
  user_id: string;
  wallet_addresses: string[];
}

/** Any event; narrow on `type` for a typed `data`. */
export type EntitlementsEvent =
  | EventBase<"usage.threshold_crossed", ThresholdCrossedData>
  | EventBase<"subscription.renewal_upcoming", RenewalUpcomingData>
  | EventBase<"subscription.activated", SubscriptionActivatedData>
  | EventBase<"subscription.changed", SubscriptionChangedData>
  | EventBase<"subscription.canceled", SubscriptionCanceledData>
  | EventBase<"subscription.past_due", SubscriptionPastDueData>
  | EventBase<"payment.failed", PaymentFailedData>
  | EventBase<"crypto_payment.confirmed", CryptoPaymentConfirmedData>
  | EventBase<"crypto_payment.underpaid", CryptoPaymentUnderpaidData>
  | EventBase<"crypto_payment.reversed", CryptoPaymentReversedData>
  | EventBase<"token_access.granted" | "token_access.revoked", TokenAccessData>;

/** The types other than the first two (kept for callers that named them; all are typed now). */
export type OtherEventType = Exclude<
  EntitlementsEvent["type"],
  "usage.threshold_crossed" | "subscription.renewal_upcoming"
>;

export interface VerifyOptions {
  /** A timestamp further than this from now is refused (default 300 s). */
  toleranceSeconds?: number;
  /** Now, in unix seconds (tests). */
  now?: number;
}

/**
 * The event in `body` if `headers` carry a valid signature of it by `secret` (`whsec_<base64>`);
 * throws EventVerificationError otherwise.
 */
export function verifyEvent(
  body: string | Uint8Array,
  headers: Record<string, string | string[] | undefined> | Headers,
  secret: string,
  options: VerifyOptions = {},
): EntitlementsEvent {
  const text = typeof body === "string" ? body : Buffer.from(body).toString("utf8");
  const header = (name: string): string | undefined => {
    if (headers instanceof Headers) return headers.get(name) ?? undefined;
    for (const [key, value] of Object.entries(headers)) {
      if (key.toLowerCase() === name) return Array.isArray(value) ? value[0] : value;
    }
    return undefined;
  };
  const id = header("webhook-id");
  const stamp = header("webhook-timestamp");
  const signatures = header("webhook-signature");
  if (!id || !stamp || !signatures) {
    throw new EventVerificationError("missing webhook-id, webhook-timestamp or webhook-signature");
  }
  const sentAt = Number(stamp);
  if (!Number.isInteger(sentAt)) throw new EventVerificationError("webhook-timestamp is not a number");
  const now = options.now ?? Date.now() / 1000;
  if (Math.abs(now - sentAt) > (options.toleranceSeconds ?? 300)) {
    throw new EventVerificationError("webhook-timestamp is outside the tolerance");
  }
  const key = Buffer.from(secret.replace(/^whsec_/, ""), "base64");
  const expected = createHmac("sha256", key).update(`${id}.${stamp}.${text}`).digest();
  const match = signatures.split(" ").some((versioned) => {
    const [version, signature] = versioned.split(",", 2);
    if (version !== "v1" || !signature) return false;
    const given = Buffer.from(signature, "base64");
    return given.length === expected.length && timingSafeEqual(given, expected);
  });
  if (!match) throw new EventVerificationError("no matching signature");
  let parsed: { id?: unknown; type?: unknown; account_id?: unknown; timestamp?: unknown; data?: unknown };
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new EventVerificationError("the body is not JSON");
  }
  if (
    typeof parsed.id !== "string" ||
    typeof parsed.type !== "string" ||
    typeof parsed.account_id !== "string" ||
    typeof parsed.timestamp !== "string" ||
    typeof parsed.data !== "object" ||
    parsed.data === null
  ) {
    throw new EventVerificationError("the body is not an event");
  }
  if (parsed.id !== id) throw new EventVerificationError("webhook-id does not match the event's id");
  return {
    id: parsed.id,
    type: parsed.type,
    account_id: parsed.account_id,
    timestamp: new Date(parsed.timestamp),
    // The service writes each type's documented payload; the type names which one.
    data: parsed.data,
  } as unknown as EntitlementsEvent;
}
