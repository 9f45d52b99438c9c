// Retry policy: a bounded number of attempts with exponential backoff and full jitter.

export interface RetryOptions {
  /** Attempts including the first; 1 means no retry (default 3). */
  maxAttempts?: number;
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  multiplier?: number;
}

/**
 * How often and how long to wait before retrying a call that failed with UNAVAILABLE. Attempt
 * `n` (from 1) waits a random time in [0, min(maxBackoffMs, initialBackoffMs * multiplier^(n-1))]
 * ("full jitter"), so many clients do not retry in lockstep.
 */
export class RetryPolicy {
  readonly maxAttempts: number;
  readonly initialBackoffMs: number;
  readonly maxBackoffMs: number;
  readonly multiplier: number;

  constructor(options: RetryOptions = {}) {
    this.maxAttempts = options.maxAttempts ?? 3;
    this.initialBackoffMs = options.initialBackoffMs ?? 50;
    this.maxBackoffMs = options.maxBackoffMs ?? 1000;
    this.multiplier = options.multiplier ?? 2;
    if (!(this.maxAttempts >= 1)) throw new RangeError("maxAttempts must be at least 1");
    if (this.initialBackoffMs < 0 || this.maxBackoffMs < 0 || this.multiplier < 1) {
      throw new RangeError("backoffs must be >= 0 and multiplier >= 1");
    }
  }

  /** The longest wait after failed attempt number `attempt` (1 is the first). */
  ceiling(attempt: number): number {
    return Math.min(this.maxBackoffMs, this.initialBackoffMs * this.multiplier ** (attempt - 1));
  }

  /** A jittered wait after failed attempt number `attempt`. */
  backoff(attempt: number): number {
    return Math.random() * this.ceiling(attempt);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((ok) => setTimeout(ok, ms));
}
