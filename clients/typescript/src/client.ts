// EntitlementsClient: the typed client of EntitlementsService and UsageService, with deadlines,
// retries on UNAVAILABLE, typed errors and optional local evaluation (the Python client's API).
import { create, type DescMessage, type MessageInitShape } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import { type Client, Code, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import type { FeatureCheck, LimitCheck, LocalState, MinimumPlanCheck } from "./answers.js";
import { PlanCatalog } from "./catalog.js";
import { type EntitlementsError, errorFromStatus, toEntitlementsError, Unavailable } from "./errors.js";
import { BadRequestSchema, ErrorInfoSchema } from "./gen/google/rpc/error_details_pb.js";
import {
  CanUseFeatureRequestSchema,
  type CanUseFeatureResponse,
  CheckMinimumPlanRequestSchema,
  type Entitlements,
  EntitlementsService,
  GetEntitlementsRequestSchema,
  type GetUpgradePathResponse,
} from "./gen/nchat/entitlements/v1/entitlements_service_pb.js";
import {
  CheckLimitRequestSchema,
  type CheckLimitResponse,
  type GetUsageResponse,
  type MetricUsage,
  type UsageEvent,
  type UsageEventResult,
  UsageEventSchema,
  UsageService,
} from "./gen/nchat/entitlements/v1/usage_service_pb.js";
import { DISABLED, LocalStore } from "./local.js";
import { RetryPolicy, sleep } from "./retry.js";
import { Watcher } from "./watcher.js";

export interface LocalEvaluationOptions {
  /** How many accounts are watched and answered locally (the server's cap is 10,000). */
  maxAccounts?: number;
  /** The stream is reopened at most this often when new accounts appear (default 50 ms). */
  minReopenIntervalMs?: number;
  /** A connected stream is reopened (full fresh state) after this long (default 5 min). */
  resyncIntervalMs?: number;
  /** While the stream is down and the RPC fails too, known state this old answers as "stale" (default 5 min). */
  maxStaleMs?: number;
  /** Backoff between attempts to reopen a broken stream (attempts never stop). */
  reconnect?: RetryPolicy;
  /** Deadline of the ListPlans call made before the stream opens (default 5 s). */
  streamOpenTimeoutMs?: number;
}

export interface ClientOptions {
  /** Sent as `authorization: Bearer <token>`; omit for a dev-mode server. */
  token?: string;
  /** Deadline of checks in ms (default 500: they sit on request paths). */
  timeoutMs?: number;
  /** Deadline of writes and larger reads in ms (default 5000). */
  writeTimeoutMs?: number;
  /** Retries of calls that failed with UNAVAILABLE (default 3 attempts, 50 ms .. 1 s jittered). */
  retry?: RetryPolicy;
  /** Answer checks of watched accounts from memory kept fresh by WatchEntitlements. */
  localEvaluation?: boolean | LocalEvaluationOptions;
  /** Extra Connect interceptors (logging, metrics). */
  interceptors?: Interceptor[];
  /** A transport of your own (then `interceptors` is ignored). */
  transport?: Transport;
}

export interface CallOptions {
  timeoutMs?: number;
  /**
   * Read-your-writes: answer from a state at this revision or later (a write returns the
   * account's revision). A local state older than it is not used; the RPC carries it as
   * `min_revision` when the server's API has that field.
   */
  minRevision?: bigint;
}

/** One usage increment for `reportUsage`; a retry must reuse its idempotency key. */
export type UsageEventInit = MessageInitShape<typeof UsageEventSchema>;

const hasField = (schema: DescMessage, name: string): boolean =>
  schema.fields.some((field) => field.name === name);

/** `init` with `minRevision` set when the request message has `min_revision` (added in v1). */
function withMinRevision<Desc extends DescMessage>(
  schema: Desc,
  init: MessageInitShape<Desc>,
  minRevision: bigint | undefined,
): MessageInitShape<Desc> {
  if (minRevision === undefined || !hasField(schema, "min_revision")) return init;
  return { ...init, minRevision } as MessageInitShape<Desc>;
}

export function validAccountId(value: string): boolean {
  // eslint-disable-next-line no-control-regex
  return value.length > 0 && value.length <= 256 && value.trim() === value && !/[\x00-\x1f\x7f]/.test(value);
}

export class EntitlementsClient {
  readonly transport: Transport;
  /** The raw generated clients, for the RPCs this class does not wrap. */
  readonly entitlements: Client<typeof EntitlementsService>;
  readonly usage: Client<typeof UsageService>;

  private readonly headers: Record<string, string>;
  private readonly timeoutMs: number;
  private readonly writeTimeoutMs: number;
  private readonly retry: RetryPolicy;
  private readonly store: LocalStore | undefined;
  private readonly watcher: Watcher | undefined;
  private catalogPromise: Promise<PlanCatalog> | undefined;
  private closed = false;

  constructor(baseUrl: string, options: ClientOptions = {}) {
    this.transport =
      options.transport ??
      createGrpcTransport({ baseUrl, interceptors: options.interceptors ?? [] });
    this.headers = options.token ? { authorization: `Bearer ${options.token}` } : {};
    this.timeoutMs = options.timeoutMs ?? 500;
    this.writeTimeoutMs = options.writeTimeoutMs ?? 5000;
    this.retry = options.retry ?? new RetryPolicy();
    this.entitlements = createClient(EntitlementsService, this.transport);
    this.usage = createClient(UsageService, this.transport);
    if (options.localEvaluation) {
      const local = options.localEvaluation === true ? {} : options.localEvaluation;
      this.store = new LocalStore(local);
      this.watcher = new Watcher(this.entitlements, this.store, {
        minReopenIntervalMs: local.minReopenIntervalMs ?? 50,
        reconnect:
          local.reconnect ?? new RetryPolicy({ maxAttempts: 1, initialBackoffMs: 100, maxBackoffMs: 5000 }),
        streamOpenTimeoutMs: local.streamOpenTimeoutMs ?? 5000,
        headers: this.headers,
      });
      this.watcher.start();
    }
  }

  /** Stop the watch stream. Idempotent. (The HTTP/2 session closes when idle.) */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.watcher?.stop();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** How fresh local evaluation is (`enabled: false` without it). */
  localState(): LocalState {
    return this.store?.state() ?? DISABLED;
  }

  /** Runs `call` with the deadline, retrying UNAVAILABLE with backoff; throws typed errors. */
  async call<T>(call: (options: { timeoutMs: number; headers: Record<string, string> }) => Promise<T>, timeoutMs: number): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await call({ timeoutMs, headers: this.headers });
      } catch (error) {
        const typed = toEntitlementsError(error);
        // UNAVAILABLE only: a DEADLINE_EXCEEDED call may have been applied, and the deadline is spent.
        const retriable = typed.code === Code.Unavailable;
        if (!retriable || attempt >= this.retry.maxAttempts || this.closed) throw typed;
        await sleep(this.retry.backoff(attempt));
      }
    }
  }

  /** The plan catalog (ListPlans), fetched once. */
  catalog(): Promise<PlanCatalog> {
    if (this.store?.catalog) return Promise.resolve(this.store.catalog);
    this.catalogPromise ??= this.call((o) => this.entitlements.listPlans({}, o), this.writeTimeoutMs)
      .then((response) => new PlanCatalog(response))
      .catch((error: unknown) => {
        this.catalogPromise = undefined;
        throw error;
      });
    return this.catalogPromise;
  }

  /**
   * May `accountId` use `feature`? A denial is an answer, not an error. With local evaluation a
   * watched account is answered from memory (`source: "local"`); the first check of an account
   * asks the server and starts watching it; while the server is away, the last known state
   * answers with `source: "stale"`.
   */
  async canUseFeature(accountId: string, feature: string, options: CallOptions = {}): Promise<FeatureCheck> {
    const store = this.store;
    if (!store) return this.rpcCanUseFeature(accountId, feature, options);
    const local = store.feature(accountId, feature, { minRevision: options.minRevision });
    if (local) return local;
    if (validAccountId(accountId)) store.want(accountId);
    try {
      return await this.rpcCanUseFeature(accountId, feature, options);
    } catch (error) {
      const stale = error instanceof Unavailable ? store.feature(accountId, feature, { stale: true }) : undefined;
      if (!stale) throw error;
      return stale;
    }
  }

  /** The local answer only (undefined when the account is not in memory): never waits. */
  canUseFeatureLocally(accountId: string, feature: string): FeatureCheck | undefined {
    const store = this.store;
    if (!store) return undefined;
    const answer = store.feature(accountId, feature);
    if (!answer && validAccountId(accountId)) store.want(accountId);
    return answer;
  }

  private async rpcCanUseFeature(accountId: string, feature: string, options: CallOptions): Promise<FeatureCheck> {
    const request = create(
      CanUseFeatureRequestSchema,
      withMinRevision(CanUseFeatureRequestSchema, { accountId, feature }, options.minRevision),
    );
    const answer = await this.call((o) => this.entitlements.canUseFeature(request, o), options.timeoutMs ?? this.timeoutMs);
    return featureCheck(answer);
  }

  /** Many (accountId, feature) checks in one call, in order; a bad item gets its own error. */
  async checkFeatures(checks: Array<[string, string]>, options: CallOptions = {}): Promise<Array<FeatureCheck | EntitlementsError>> {
    const response = await this.call(
      (o) => this.entitlements.checkFeatures({ checks: checks.map(([accountId, feature]) => ({ accountId, feature })) }, o),
      options.timeoutMs ?? this.timeoutMs,
    );
    return response.results.map((result) => {
      if (result.response.case === "item") return featureCheck(result.response.value);
      const status = result.response.value;
      let reason = "";
      let field = "";
      for (const any of status?.details ?? []) {
        reason ||= anyUnpack(any, ErrorInfoSchema)?.reason ?? "";
        field ||= anyUnpack(any, BadRequestSchema)?.fieldViolations[0]?.field ?? "";
      }
      return errorFromStatus(status?.code ?? 2, status?.message ?? "", { reason, field });
    });
  }

  /** Is the account on `minimumPlanId` or higher? Local with local evaluation. */
  async checkMinimumPlan(accountId: string, minimumPlanId: string, options: CallOptions = {}): Promise<MinimumPlanCheck> {
    const store = this.store;
    const local = store?.minimumPlan(accountId, minimumPlanId, { minRevision: options.minRevision });
    if (local) return local;
    if (store && validAccountId(accountId)) store.want(accountId);
    const request = create(
      CheckMinimumPlanRequestSchema,
      withMinRevision(CheckMinimumPlanRequestSchema, { accountId, minimumPlanId }, options.minRevision),
    );
    try {
      const answer = await this.call((o) => this.entitlements.checkMinimumPlan(request, o), options.timeoutMs ?? this.timeoutMs);
      return { allowed: answer.allowed, planId: answer.planId, revision: answer.revision, source: "rpc" };
    } catch (error) {
      const stale = error instanceof Unavailable ? store?.minimumPlan(accountId, minimumPlanId, { stale: true }) : undefined;
      if (!stale) throw error;
      return stale;
    }
  }

  async getEntitlements(accountId: string, options: CallOptions = {}): Promise<Entitlements> {
    const request = create(
      GetEntitlementsRequestSchema,
      withMinRevision(GetEntitlementsRequestSchema, { accountId }, options.minRevision),
    );
    const response = await this.call((o) => this.entitlements.getEntitlements(request, o), options.timeoutMs ?? this.timeoutMs);
    if (!response.entitlements) throw errorFromStatus(13, "GetEntitlements answered no entitlements", {});
    return response.entitlements;
  }

  async getUpgradePath(planId: string, feature: string, options: CallOptions = {}): Promise<GetUpgradePathResponse> {
    return this.call((o) => this.entitlements.getUpgradePath({ planId, feature }, o), options.timeoutMs ?? this.timeoutMs);
  }

  /**
   * Room for one more under `limit` ("maxUsers")? Judges `current` when given, else the tracked
   * usage. With local evaluation and `current` given, a watched account is answered from memory.
   */
  async checkLimit(accountId: string, limit: string, current?: number | bigint, options: CallOptions = {}): Promise<LimitCheck> {
    const value = current === undefined ? undefined : BigInt(current);
    const store = this.store;
    if (store && value !== undefined) {
      const local = store.limit(accountId, limit, value, { minRevision: options.minRevision });
      if (local) return local;
      if (validAccountId(accountId)) store.want(accountId);
    }
    const request = create(
      CheckLimitRequestSchema,
      withMinRevision(CheckLimitRequestSchema, { accountId, limit, current: value }, options.minRevision),
    );
    try {
      const answer = await this.call((o) => this.usage.checkLimit(request, o), options.timeoutMs ?? this.timeoutMs);
      return limitCheck(answer);
    } catch (error) {
      const stale =
        error instanceof Unavailable && store && value !== undefined
          ? store.limit(accountId, limit, value, { stale: true })
          : undefined;
      if (!stale) throw error;
      return stale;
    }
  }

  /** Add usage increments; a repeated idempotency key is counted once (DUPLICATE). */
  async reportUsage(events: UsageEventInit[], options: CallOptions = {}): Promise<UsageEventResult[]> {
    const response = await this.call((o) => this.usage.reportUsage({ events }, o), options.timeoutMs ?? this.writeTimeoutMs);
    return response.results;
  }

  /** Set a gauge metric (users, channels, storageGB, ...) to `value`. */
  async setUsage(accountId: string, metric: string, value: number | bigint, options: CallOptions = {}): Promise<MetricUsage> {
    const response = await this.call(
      (o) => this.usage.setUsage({ accountId, metric, value: BigInt(value) }, o),
      options.timeoutMs ?? this.writeTimeoutMs,
    );
    if (!response.usage) throw errorFromStatus(13, "SetUsage answered no usage", {});
    return response.usage;
  }

  /** Every metric of the account for `period` ("YYYY-MM"; "" for this month). */
  async getUsage(accountId: string, period = "", options: CallOptions = {}): Promise<GetUsageResponse> {
    return this.call((o) => this.usage.getUsage({ accountId, period }, o), options.timeoutMs ?? this.writeTimeoutMs);
  }
}

export function featureCheck(answer: CanUseFeatureResponse): FeatureCheck {
  return {
    allowed: answer.allowed,
    planId: answer.planId,
    upgradePlanId: answer.upgradePlanId,
    reason: answer.reason,
    revision: answer.revision,
    message: answer.message,
    source: "rpc",
  };
}

export function limitCheck(answer: CheckLimitResponse): LimitCheck {
  return {
    allowed: answer.allowed,
    limit: answer.unlimited ? undefined : answer.limit,
    current: answer.current,
    percentage: answer.percentage,
    level: answer.level,
    unlimited: answer.unlimited,
    remaining: answer.unlimited ? undefined : answer.remaining,
    planId: answer.planId,
    revision: answer.revision,
    source: "rpc",
  };
}

export type { UsageEvent };
