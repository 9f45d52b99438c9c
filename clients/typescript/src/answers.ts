// The answers of the client's checks: plain objects that say where they came from.
import type { FeatureDecisionReason } from "./gen/nchat/entitlements/v1/entitlements_service_pb.js";
import type { UsageLevel } from "./gen/nchat/entitlements/v1/plan_pb.js";

/**
 * Where an answer came from: "rpc" (asked the server), "local" (memory kept fresh by the watch
 * stream, as fresh as the server's replica), "stale" (memory while the server is away: the stream
 * is down and the RPC failed as unavailable; see `LocalState.stalenessBoundMs`).
 */
export type AnswerSource = "rpc" | "local" | "stale";

export interface FeatureCheck {
  allowed: boolean;
  planId: string;
  /** The lowest plan that has the feature; "" when allowed or no plan has it. */
  upgradePlanId: string;
  reason: FeatureDecisionReason;
  revision: bigint;
  message: string;
  source: AnswerSource;
}

export interface MinimumPlanCheck {
  allowed: boolean;
  planId: string;
  revision: bigint;
  source: AnswerSource;
}

export interface LimitCheck {
  allowed: boolean;
  /** undefined when unlimited. */
  limit: bigint | undefined;
  current: bigint;
  percentage: number;
  level: UsageLevel;
  unlimited: boolean;
  /** undefined when unlimited. */
  remaining: bigint | undefined;
  planId: string;
  revision: bigint;
  source: AnswerSource;
}

/** How fresh local evaluation is (the Python client's `LocalState`). */
export interface LocalState {
  enabled: boolean;
  /** The watch stream is up and has delivered the state of every watched account. */
  connected: boolean;
  /** Accounts held in memory. */
  accounts: number;
  /** When the stream last delivered a message (epoch ms), undefined if never. */
  lastEventAt: number | undefined;
  /** How far behind the server a local answer may be: 0 while connected, else the time since the stream went down (Infinity when it never came up). */
  stalenessBoundMs: number;
  reconnects: number;
  rpcFallbacks: number;
  localAnswers: number;
  lastError: string;
}
