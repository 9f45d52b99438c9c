// The task that keeps one WatchEntitlements stream open for the watched accounts and feeds it
// into a LocalStore: reopened (debounced) when new accounts are wanted, and after a break with
// backoff, forever, until the client closes.
import type { Client } from "@connectrpc/connect";

import { PlanCatalog } from "./catalog.js";
import { toEntitlementsError } from "./errors.js";
import type { EntitlementsService } from "./gen/nchat/entitlements/v1/entitlements_service_pb.js";
import type { LocalStore } from "./local.js";
import type { RetryPolicy } from "./retry.js";

export interface WatcherOptions {
  minReopenIntervalMs: number;
  reconnect: RetryPolicy;
  streamOpenTimeoutMs: number;
  headers: Record<string, string>;
}

class StreamEnded extends Error {}

export class Watcher {
  private closed = false;
  private abort: AbortController | undefined;
  private planned = false;
  private reopenPending = false;
  private openedAt = 0;
  private timer: NodeJS.Timeout | undefined;
  private wake: (() => void) | undefined;
  private loop: Promise<void> | undefined;

  constructor(
    private readonly service: Client<typeof EntitlementsService>,
    private readonly store: LocalStore,
    private readonly options: WatcherOptions,
  ) {
    store.requestReopen = () => this.requestReopen();
  }

  start(): void {
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    this.abort?.abort();
    this.wake?.();
    await this.loop;
  }

  /** Reopen the stream (debounced) so it covers every wanted account with fresh state. */
  requestReopen(): void {
    if (this.reopenPending || this.closed) return;
    this.reopenPending = true;
    if (this.abort) {
      const delay = Math.max(0, this.openedAt + this.options.minReopenIntervalMs - performance.now());
      this.timer = setTimeout(() => {
        if (!this.abort || this.closed) return;
        this.planned = true;
        this.abort.abort();
      }, delay);
    } else {
      this.wake?.();
    }
  }

  /** Sleep `ms`, or less when woken (new accounts, close). Keeps no timer once done. */
  private sleep(ms: number): Promise<void> {
    return new Promise((ok) => {
      const timer = setTimeout(done, ms);
      const self = this;
      function done(): void {
        clearTimeout(timer);
        self.wake = undefined;
        ok();
      }
      this.wake = done;
    });
  }

  private async run(): Promise<void> {
    const { store, service, options } = this;
    let failures = 0;
    while (!this.closed) {
      try {
        if (!store.catalog) {
          const plans = await service.listPlans(
            {},
            { timeoutMs: options.streamOpenTimeoutMs, headers: options.headers },
          );
          store.catalog = new PlanCatalog(plans);
        }
        const accounts = store.accountsToWatch();
        if (accounts.length === 0) {
          await this.sleep(1000);
          continue;
        }
        this.reopenPending = false;
        this.planned = false;
        const abort = new AbortController();
        this.abort = abort;
        this.openedAt = performance.now();
        store.streamOpened(accounts);
        const stream = service.watchEntitlements(
          { accountIds: accounts, sendInitial: true },
          { signal: abort.signal, timeoutMs: 0, headers: options.headers },
        );
        for await (const message of stream) {
          store.onMessage(message);
          failures = 0;
        }
        throw new StreamEnded("the server ended the watch stream");
      } catch (error) {
        const aborted = this.abort?.signal.aborted ?? false;
        this.abort = undefined;
        if (this.closed) return;
        if (this.planned && aborted) {
          this.planned = false;
          const wait = this.openedAt + options.minReopenIntervalMs - performance.now();
          if (wait > 0) await this.sleep(wait);
          continue;
        }
        failures += 1;
        store.streamDown(describe(error));
        await this.sleep(options.reconnect.backoff(failures));
      }
    }
  }
}

function describe(error: unknown): string {
  if (error instanceof StreamEnded) return error.message;
  const typed = toEntitlementsError(error);
  return `${typed.name}: ${typed.message}`;
}
