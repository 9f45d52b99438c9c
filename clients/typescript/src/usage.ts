// UsageReporter: buffered, merged, exactly-once usage reporting (the Python client's
// AsyncUsageReporter). Increments are merged per (account, metric, UTC month) in this process.
// When a merged event is sealed into a batch it gets ONE idempotency key; the batch is sent until
// the server has it, and every retry resends the same events with the same keys, so the server
// (which keeps keys durably) counts each exactly once however often the connection breaks or the
// server restarts. Nothing is dropped silently: a full buffer makes add() throw BufferFull; an
// event the server refuses as invalid is kept in `failed`; events still unsent when close() gives
// up are thrown as UndeliveredUsage, with their keys, so they can be sent again later.
import { randomUUID } from "node:crypto";

import { timestampFromMs } from "@bufbuild/protobuf/wkt";

import type { EntitlementsClient, UsageEventInit } from "./client.js";
import {
  AlreadyExists,
  BufferFull,
  type EntitlementsError,
  InvalidArgument,
  ReporterClosed,
  toEntitlementsError,
  UndeliveredUsage,
  Unavailable,
} from "./errors.js";
import { create } from "@bufbuild/protobuf";
import { type UsageEvent, UsageEventSchema } from "./gen/nchat/entitlements/v1/usage_service_pb.js";
import { RetryPolicy, sleep } from "./retry.js";

export interface UsageReporterOptions {
  /** Merged events per ReportUsage call, 1..1000 (default 500). */
  maxBatchSize?: number;
  /** The longest an increment waits before it is sent, in ms (default 1000). */
  maxDelayMs?: number;
  /** Merged events held (open and in flight) before add() throws BufferFull (default 100,000). */
  maxBuffered?: number;
  /** How long close() keeps retrying, in ms (default 10,000). */
  closeTimeoutMs?: number;
  /** Backoff between resends of a batch (same keys). */
  backoff?: RetryPolicy;
  /** Called for each event the server refused as invalid (it is not counted). */
  onFailure?: (failure: FailedUsage) => void;
}

/** An event the server refused as invalid (unknown metric, bad account id, ...). */
export interface FailedUsage {
  event: UsageEvent;
  error: EntitlementsError;
}

interface Bucket {
  accountId: string;
  metric: string;
  delta: bigint;
  lastMs: number;
}

const EVENT_INDEX = /^events\[(\d+)\]/;

export class UsageReporter {
  /** Events the server refused as invalid. */
  readonly failed: FailedUsage[] = [];
  /** Events the server confirmed (applied or duplicate). */
  deliveredEvents = 0;
  /** Batches sent again (same keys) after UNAVAILABLE or DEADLINE_EXCEEDED. */
  retries = 0;

  private readonly maxBatchSize: number;
  private readonly maxDelayMs: number;
  private readonly maxBuffered: number;
  private readonly closeTimeoutMs: number;
  private readonly backoff: RetryPolicy;
  private readonly onFailure: ((failure: FailedUsage) => void) | undefined;
  private readonly open = new Map<string, Bucket>();
  private oldest: number | undefined; // performance.now() of the oldest open bucket
  private inFlight = 0;
  private flushRequested = 0;
  private closing = false;
  private deadline: number | undefined;
  private readonly undelivered: UsageEvent[] = [];
  private wake: (() => void) | undefined;
  private idleWaiters: Array<() => void> = [];
  private readonly loop: Promise<void>;
  private readonly onExit = (): void => {
    const lost = this.pending();
    if (lost > 0) console.error(`usage reporter not closed: ${lost} merged events not delivered`);
  };

  constructor(
    private readonly client: EntitlementsClient,
    options: UsageReporterOptions = {},
  ) {
    this.maxBatchSize = options.maxBatchSize ?? 500;
    if (!(this.maxBatchSize >= 1 && this.maxBatchSize <= 1000)) {
      throw new RangeError("maxBatchSize must be 1..1000 (the server's batch limit)");
    }
    this.maxDelayMs = options.maxDelayMs ?? 1000;
    this.maxBuffered = options.maxBuffered ?? 100_000;
    this.closeTimeoutMs = options.closeTimeoutMs ?? 10_000;
    this.backoff = options.backoff ?? new RetryPolicy({ maxAttempts: 1, initialBackoffMs: 50, maxBackoffMs: 2000 });
    this.onFailure = options.onFailure;
    process.on("exit", this.onExit);
    this.loop = this.run();
  }

  /** Count `delta` more of `metric` for `accountId`; BufferFull when there is no room. */
  add(accountId: string, metric: string, delta: number | bigint = 1): void {
    const amount = BigInt(delta);
    if (amount < 0n) throw new RangeError(`delta must be zero or more, got ${amount}`);
    if (!accountId || !metric) throw new RangeError("accountId and metric are required");
    if (this.closing) throw new ReporterClosed("add() after close()");
    const now = Date.now();
    const key = `${accountId}\u0000${metric}\u0000${new Date(now).toISOString().slice(0, 7)}`;
    const bucket = this.open.get(key);
    if (!bucket && this.open.size + this.inFlight >= this.maxBuffered) {
      throw new BufferFull(`${this.maxBuffered} usage events buffered and unsent`);
    }
    const first = this.open.size === 0;
    if (bucket) {
      bucket.delta += amount;
      bucket.lastMs = now;
    } else {
      this.open.set(key, { accountId, metric, delta: amount, lastMs: now });
    }
    this.oldest ??= performance.now();
    if (first || this.open.size >= this.maxBatchSize) this.wake?.();
  }

  /** Merged events not yet confirmed by the server (open and in flight). */
  pending(): number {
    return this.open.size + this.inFlight;
  }

  /** Send everything added so far and wait for it; false if `timeoutMs` passed first. */
  async flush(timeoutMs?: number): Promise<boolean> {
    if (this.pending() === 0) return true;
    this.flushRequested += 1;
    this.wake?.();
    try {
      const idle = new Promise<boolean>((ok) => this.idleWaiters.push(() => ok(true)));
      if (timeoutMs === undefined) return await idle;
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<boolean>((ok) => (timer = setTimeout(() => ok(false), timeoutMs)));
      const done = await Promise.race([idle, timeout]);
      clearTimeout(timer);
      return done;
    } finally {
      this.flushRequested -= 1;
    }
  }

  /** Flush and stop; throws UndeliveredUsage for what could not be sent in `timeoutMs`. */
  async close(timeoutMs?: number): Promise<void> {
    if (!this.closing) {
      this.closing = true;
      this.deadline = performance.now() + (timeoutMs ?? this.closeTimeoutMs);
      this.wake?.();
    }
    await this.loop;
    process.off("exit", this.onExit);
    if (this.undelivered.length > 0) throw new UndeliveredUsage([...this.undelivered]);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private due(): boolean {
    if (this.open.size === 0) return false;
    if (this.closing || this.flushRequested > 0 || this.open.size >= this.maxBatchSize) return true;
    return this.oldest !== undefined && performance.now() - this.oldest >= this.maxDelayMs;
  }

  private waitForWork(): Promise<void> {
    return new Promise((ok) => {
      let timer: NodeJS.Timeout | undefined;
      const done = (): void => {
        clearTimeout(timer);
        this.wake = undefined;
        ok();
      };
      if (this.oldest !== undefined) {
        timer = setTimeout(done, Math.max(0, this.oldest + this.maxDelayMs - performance.now()));
        // An unclosed reporter does not keep the process alive; the exit hook reports the loss.
        timer.unref();
      }
      this.wake = done;
    });
  }

  private seal(): UsageEvent[] {
    const batch: UsageEvent[] = [];
    for (const [key, bucket] of this.open) {
      if (batch.length >= this.maxBatchSize) break;
      this.open.delete(key);
      batch.push(
        create(UsageEventSchema, {
          accountId: bucket.accountId,
          metric: bucket.metric,
          delta: bucket.delta,
          idempotencyKey: `ucr-${randomUUID()}`,
          occurredAt: timestampFromMs(bucket.lastMs),
        }),
      );
    }
    this.inFlight += batch.length;
    this.oldest = this.open.size > 0 ? performance.now() : undefined;
    return batch;
  }

  private async run(): Promise<void> {
    for (;;) {
      if (this.open.size === 0) {
        for (const waiter of this.idleWaiters.splice(0)) waiter();
        if (this.closing) return;
      }
      if (!this.due()) {
        await this.waitForWork();
        continue;
      }
      const batch = this.seal();
      const delivered = await this.send(batch);
      this.inFlight -= batch.length;
      this.deliveredEvents += delivered;
    }
  }

  private giveUp(): boolean {
    return this.deadline !== undefined && performance.now() >= this.deadline;
  }

  private async pause(ms: number): Promise<void> {
    const left = this.deadline === undefined ? ms : Math.max(0, this.deadline - performance.now());
    await sleep(Math.min(ms, left));
  }

  /** Deliver `batch`, resending the same keys until the server has them; the count confirmed. */
  private async send(events: UsageEvent[]): Promise<number> {
    let batch = events;
    let attempt = 0;
    while (batch.length > 0) {
      try {
        await this.client.reportUsage(batch as UsageEventInit[]);
        return batch.length;
      } catch (thrown) {
        const error = toEntitlementsError(thrown);
        if (error instanceof InvalidArgument || error instanceof AlreadyExists) {
          batch = this.dropBad(batch, error);
          continue;
        }
        // UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED: resend with the same keys; anything
        // else (a token that lost its scope) keeps the events and retries slowly.
        attempt += 1;
        if (error instanceof Unavailable) this.retries += 1;
        if (this.giveUp()) {
          this.undelivered.push(...batch);
          return 0;
        }
        await this.pause(error instanceof Unavailable ? this.backoff.backoff(attempt) : this.backoff.ceiling(attempt));
      }
    }
    return 0;
  }

  private dropBad(batch: UsageEvent[], error: EntitlementsError): UsageEvent[] {
    const field = error instanceof InvalidArgument ? error.field : (error.metadata.field ?? "");
    const match = EVENT_INDEX.exec(field);
    const index = match ? Number(match[1]) : undefined;
    const single = index !== undefined && index < batch.length;
    for (const [i, event] of batch.entries()) {
      if (single && i !== index) continue;
      const failure = { event, error };
      this.failed.push(failure);
      console.error(`usage event refused by the server and not counted: ${event.accountId} ${event.metric} (${error.message})`);
      this.onFailure?.(failure);
    }
    return single ? batch.filter((_, i) => i !== index) : [];
  }
}
