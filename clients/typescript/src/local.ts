// Local evaluation: the entitlements of the accounts a client asked about, kept fresh by one
// WatchEntitlements stream, and the feature and limit rules applied to them in memory. A port of
// the Python client's LocalStore (clients/python/nchat/entitlements/client/_local.py): an account
// is answered locally only while the live stream has delivered its state and watches it; while
// the stream is down, known state answers only as "stale", after the RPC failed as unavailable.
import { timestampMs } from "@bufbuild/protobuf/wkt";

import type { FeatureCheck, LimitCheck, LocalState, MinimumPlanCheck } from "./answers.js";
import { judgeLimit, type PlanCatalog } from "./catalog.js";
import { InvalidArgument } from "./errors.js";
import {
  type Entitlements,
  FeatureDecisionReason,
  type WatchEntitlementsResponse,
} from "./gen/nchat/entitlements/v1/entitlements_service_pb.js";
import { PaymentMethod, SubscriptionStatus } from "./gen/nchat/entitlements/v1/subscription_pb.js";

/** The most accounts one WatchEntitlements request may name (the server's limit). */
export const MAX_WATCHED_ACCOUNTS = 10_000;

interface Entry {
  entitlements: Entitlements;
  /** Epoch ms after which the answer may have changed by time alone (a grace or paid period ends). */
  validUntil: number;
}

const MESSAGES: Record<number, (plan: string, feature: string) => string> = {
  [FeatureDecisionReason.INCLUDED_IN_PLAN]: (p, f) => `the ${p} plan includes ${f}`,
  [FeatureDecisionReason.GRANTED_BY_OVERRIDE]: (_, f) => `${f} is granted to this account by an override`,
  [FeatureDecisionReason.REVOKED_BY_OVERRIDE]: (_, f) => `${f} is revoked for this account by an override`,
  [FeatureDecisionReason.FEATURE_NOT_IN_PLAN]: (p, f) => `the ${p} plan does not include ${f}`,
};

function validUntil(ent: Entitlements, now: number): number {
  const ends: number[] = [];
  if (ent.subscriptionStatus === SubscriptionStatus.PAST_DUE && ent.gracePeriodEnd) {
    ends.push(timestampMs(ent.gracePeriodEnd));
  }
  if (ent.currentPeriodEnd && (ent.cancelAtPeriodEnd || ent.paymentMethod === PaymentMethod.CRYPTO)) {
    ends.push(timestampMs(ent.currentPeriodEnd));
  }
  // An end already past when the state was read is part of that state (the server applied it).
  const future = ends.filter((end) => end > now);
  return future.length > 0 ? Math.min(...future) : Number.POSITIVE_INFINITY;
}

/** The server's decision for `feature` on `ent`: [allowed, upgrade plan, reason]. */
export function evaluateFeature(
  catalog: PlanCatalog,
  ent: Entitlements,
  feature: string,
): [boolean, string, FeatureDecisionReason] {
  const planFeatures = catalog.plan(ent.planId)?.features ?? [];
  if (ent.features.includes(feature)) {
    if (ent.grantedFeatures.includes(feature) && !planFeatures.includes(feature)) {
      return [true, "", FeatureDecisionReason.GRANTED_BY_OVERRIDE];
    }
    return [true, "", FeatureDecisionReason.INCLUDED_IN_PLAN];
  }
  if (ent.revokedFeatures.includes(feature)) {
    // No plan change brings back a revoked feature, so there is no upgrade to offer.
    return [false, "", FeatureDecisionReason.REVOKED_BY_OVERRIDE];
  }
  return [false, catalog.upgradePath(ent.planId, feature), FeatureDecisionReason.FEATURE_NOT_IN_PLAN];
}

export interface LocalStoreOptions {
  maxAccounts?: number;
  resyncIntervalMs?: number;
  maxStaleMs?: number;
}

export interface LookupOptions {
  /** Answer from memory while the stream is down (after the RPC failed as unavailable). */
  stale?: boolean;
  /** Only a state at this revision or later may answer (read-your-writes). */
  minRevision?: bigint;
}

export class LocalStore {
  catalog: PlanCatalog | undefined;
  /** Set by the watcher: called when the stream should be (re)opened. */
  requestReopen: () => void = () => {};

  private readonly maxAccounts: number;
  private readonly resyncIntervalMs: number;
  private readonly maxStaleMs: number;
  private readonly entries = new Map<string, Entry>();
  private readonly wanted = new Set<string>();
  private streamAccounts = new Set<string>();
  private readonly covered = new Set<string>();
  private initialPending = new Set<string>();
  private connected = false;
  private everConnected = false;
  private openedAt = 0;
  private downSince: number | undefined;
  private lastEventAt: number | undefined;
  private reopens = 0;
  private rpcFallbacks = 0;
  private localAnswers = 0;
  private lastError = "";

  constructor(options: LocalStoreOptions = {}) {
    this.maxAccounts = Math.min(options.maxAccounts ?? MAX_WATCHED_ACCOUNTS, MAX_WATCHED_ACCOUNTS);
    this.resyncIntervalMs = options.resyncIntervalMs ?? 300_000;
    this.maxStaleMs = options.maxStaleMs ?? 300_000;
  }

  // --- the watcher's side --------------------------------------------------------------

  accountsToWatch(): string[] {
    return [...this.wanted];
  }

  streamOpened(accounts: string[]): void {
    this.streamAccounts = new Set(accounts);
    this.initialPending = new Set(accounts);
    // Accounts the previous stream covered stay covered during a planned reopen: the new stream
    // subscribes before it reads their state, so nothing falls in between.
    for (const account of this.covered) {
      if (!this.streamAccounts.has(account)) this.covered.delete(account);
    }
    this.openedAt = performance.now();
    this.reopens += 1;
  }

  onMessage(message: WatchEntitlementsResponse): void {
    const now = Date.now();
    this.lastEventAt = now;
    if (message.event.case !== "entitlements") return;
    const ent = message.event.value;
    const account = ent.accountId;
    const current = this.entries.get(account);
    // An equal revision replaces too: a resync can bring a state whose answer changed by time.
    if (!current || ent.revision >= current.entitlements.revision) {
      this.entries.set(account, { entitlements: ent, validUntil: validUntil(ent, now) });
    }
    if (this.streamAccounts.has(account)) this.covered.add(account);
    this.initialPending.delete(account);
    if (this.initialPending.size === 0 && !this.connected) {
      this.connected = true;
      this.everConnected = true;
      this.downSince = undefined;
      this.lastError = "";
    }
  }

  /** The stream broke (not a planned reopen): nothing is answered locally until it is back. */
  streamDown(error: string): void {
    if (this.connected || this.downSince === undefined) this.downSince = performance.now();
    this.connected = false;
    this.covered.clear();
    this.streamAccounts = new Set();
    this.lastError = error;
  }

  // --- the caller's side ---------------------------------------------------------------

  /** Watch `accountId` from now on (up to the account cap; beyond it, RPC answers). */
  want(accountId: string): void {
    if (this.wanted.has(accountId) || this.wanted.size >= this.maxAccounts) return;
    this.wanted.add(accountId);
    this.requestReopen();
  }

  private entry(accountId: string, options: LookupOptions): Entry | undefined {
    const entry = this.entries.get(accountId);
    if (!entry || Date.now() >= entry.validUntil) return undefined;
    if (options.minRevision !== undefined && entry.entitlements.revision < options.minRevision) {
      return undefined;
    }
    if (this.covered.has(accountId)) return entry;
    if (!options.stale) return undefined;
    if (this.downSince === undefined || performance.now() - this.downSince > this.maxStaleMs) {
      return undefined;
    }
    return entry;
  }

  private lookup(accountId: string, options: LookupOptions): Entry | undefined {
    const entry = this.entry(accountId, options);
    if (entry === undefined) {
      if (!options.stale) {
        this.rpcFallbacks += 1;
        const known = this.entries.get(accountId);
        // Covered but past its time (a grace or paid period ended): fetch the fresh state.
        if (known && this.covered.has(accountId) && Date.now() >= known.validUntil) {
          this.requestReopen();
        }
      }
      return undefined;
    }
    this.localAnswers += 1;
    if (this.connected && performance.now() - this.openedAt > this.resyncIntervalMs) {
      this.requestReopen();
    }
    return entry;
  }

  /** The local answer, or undefined when the account must be asked over RPC. */
  feature(accountId: string, feature: string, options: LookupOptions = {}): FeatureCheck | undefined {
    const catalog = this.catalog;
    if (!catalog) return undefined;
    if (!catalog.featureKeys.has(feature)) {
      throw new InvalidArgument(`unknown feature '${feature}'`, {
        field: "feature",
        reason: "ERROR_REASON_UNKNOWN_FEATURE",
      });
    }
    const entry = this.lookup(accountId, options);
    if (!entry) return undefined;
    const ent = entry.entitlements;
    const [allowed, upgrade, reason] = evaluateFeature(catalog, ent, feature);
    let message = MESSAGES[reason]?.(ent.planId, feature) ?? "";
    if (upgrade) message += `; upgrade to ${upgrade}`;
    return {
      allowed,
      planId: ent.planId,
      upgradePlanId: upgrade,
      reason,
      revision: ent.revision,
      message,
      source: options.stale ? "stale" : "local",
    };
  }

  /** The local judgement of `current` against the account's `limitKey`, or undefined. */
  limit(
    accountId: string,
    limitKey: string,
    current: bigint,
    options: LookupOptions = {},
  ): LimitCheck | undefined {
    const catalog = this.catalog;
    if (!catalog) return undefined;
    if (!catalog.limitKeys.has(limitKey)) {
      throw new InvalidArgument(`unknown limit '${limitKey}'`, {
        field: "limit",
        reason: "ERROR_REASON_UNKNOWN_LIMIT",
      });
    }
    if (current < 0n) {
      throw new InvalidArgument(`must be zero or more, got ${current}`, { field: "current" });
    }
    const entry = this.lookup(accountId, options);
    if (!entry) return undefined;
    const ent = entry.entitlements;
    const found = ent.limits.find((l) => l.key === limitKey);
    if (!found) return undefined;
    const judged = judgeLimit(found, current);
    return {
      allowed: judged.allowed,
      limit: found.unlimited ? undefined : found.value,
      current,
      percentage: judged.percentage,
      level: judged.level,
      unlimited: found.unlimited,
      remaining: judged.remaining,
      planId: ent.planId,
      revision: ent.revision,
      source: options.stale ? "stale" : "local",
    };
  }

  /** Whether the account's plan is `minimumPlanId` or higher, from memory, or undefined. */
  minimumPlan(
    accountId: string,
    minimumPlanId: string,
    options: LookupOptions = {},
  ): MinimumPlanCheck | undefined {
    const catalog = this.catalog;
    if (!catalog) return undefined;
    if (!catalog.plan(minimumPlanId)) {
      throw new InvalidArgument(`unknown plan '${minimumPlanId}'`, {
        field: "minimum_plan_id",
        reason: "ERROR_REASON_UNKNOWN_PLAN",
      });
    }
    const entry = this.lookup(accountId, options);
    if (!entry) return undefined;
    const ent = entry.entitlements;
    return {
      allowed: catalog.atLeast(ent.planId, minimumPlanId),
      planId: ent.planId,
      revision: ent.revision,
      source: options.stale ? "stale" : "local",
    };
  }

  entitlements(accountId: string): Entitlements | undefined {
    return this.entry(accountId, {})?.entitlements;
  }

  state(): LocalState {
    let bound = 0;
    if (!this.everConnected || (!this.connected && this.downSince === undefined)) {
      bound = Number.POSITIVE_INFINITY;
    } else if (!this.connected && this.downSince !== undefined) {
      bound = performance.now() - this.downSince;
    }
    return {
      enabled: true,
      connected: this.connected,
      accounts: this.entries.size,
      lastEventAt: this.lastEventAt,
      stalenessBoundMs: bound,
      reconnects: Math.max(this.reopens - 1, 0),
      rpcFallbacks: this.rpcFallbacks,
      localAnswers: this.localAnswers,
      lastError: this.lastError,
    };
  }
}

export const DISABLED: LocalState = {
  enabled: false,
  connected: false,
  accounts: 0,
  lastEventAt: undefined,
  stalenessBoundMs: Number.POSITIVE_INFINITY,
  reconnects: 0,
  rpcFallbacks: 0,
  localAnswers: 0,
  lastError: "",
};
