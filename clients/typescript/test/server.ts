// A real `entitlements serve` for the tests: dev mode, a temporary SQLite database, free ports.
// It can be killed with SIGKILL and started again on the same port and database.
//
// Which Python runs it: ENTITLEMENTS_PYTHON (a python with the `entitlements` package installed),
// else ENTITLEMENTS_VENV/bin/python, else the repository's .venv (when the package sits in its
// repository). Without any of them the tests fail at once, saying so.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { createEntitlementsClients } from "../src/index.js";

export function serverPython(): string {
  const repo = resolve(fileURLToPath(new URL("../../..", import.meta.url)));
  const candidates = [
    process.env.ENTITLEMENTS_PYTHON,
    process.env.ENTITLEMENTS_VENV && join(process.env.ENTITLEMENTS_VENV, "bin", "python"),
    join(repo, ".venv", "bin", "python"),
  ].filter((p): p is string => Boolean(p));
  const python = candidates.find((p) => existsSync(p));
  const help =
    "These tests run against a real entitlements server. Set ENTITLEMENTS_PYTHON to a python " +
    "that has the `entitlements` package installed (or ENTITLEMENTS_VENV to its virtualenv), " +
    "e.g. `ENTITLEMENTS_VENV=/path/to/nchat-entitlements/.venv npm test`; in the repository, " +
    "`make install` creates .venv.";
  if (!python) throw new Error(`no server to test against: none of ${candidates.join(", ")} exists.\n${help}`);
  try {
    execFileSync(python, ["-c", "import entitlements.cli"], { stdio: "pipe" });
  } catch (error) {
    throw new Error(`${python} cannot import the entitlements server (${String(error)}).\n${help}`);
  }
  return python;
}

export function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => ok(port));
    });
  });
}

export class TestServer {
  readonly dir = mkdtempSync(join(tmpdir(), "entitlements-node-"));
  private process: ChildProcess | undefined;
  private output = "";
  private env: NodeJS.ProcessEnv = {};
  private readonly python = serverPython();
  port = 0;

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    if (this.port === 0) {
      this.port = await freePort();
      this.env = {
        ...process.env,
        ENTITLEMENTS_DEV_MODE: "1",
        ENTITLEMENTS_DATABASE_URL: `sqlite+aiosqlite:///${join(this.dir, "entitlements.db")}`,
        ENTITLEMENTS_GRPC_ADDR: `127.0.0.1:${this.port}`,
        ENTITLEMENTS_HTTP_ADDR: `127.0.0.1:${await freePort()}`,
        ENTITLEMENTS_LOG_LEVEL: "WARNING",
      };
      execFileSync(this.python, ["-m", "entitlements.cli", "migrate"], { cwd: this.dir, env: this.env, stdio: "pipe" });
    }
    this.output = "";
    const child = spawn(this.python, ["-m", "entitlements.cli", "serve"], { cwd: this.dir, env: this.env });
    this.process = child;
    child.stdout?.on("data", (chunk: Buffer) => (this.output += chunk.toString()));
    child.stderr?.on("data", (chunk: Buffer) => (this.output += chunk.toString()));
    const probe = createEntitlementsClients(this.url, { timeoutMs: 2000 });
    // Generous: on a loaded 2-core box importing the server alone can take tens of seconds.
    const deadline = Date.now() + 180_000;
    for (;;) {
      try {
        await probe.entitlements.listPlans({});
        return;
      } catch (error) {
        if (child.exitCode !== null || Date.now() > deadline) {
          await this.signal("SIGKILL"); // never leave a server behind
          throw new Error(`server did not start: ${String(error)}\n${this.output}`);
        }
        await new Promise((ok) => setTimeout(ok, 100));
      }
    }
  }

  /** SIGKILL: no graceful shutdown, in-flight calls die with the process. */
  async kill(): Promise<void> {
    await this.signal("SIGKILL");
  }

  async stop(): Promise<void> {
    await this.signal("SIGTERM");
    rmSync(this.dir, { recursive: true, force: true });
  }

  private async signal(signal: NodeJS.Signals): Promise<void> {
    const child = this.process;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((ok) => child.once("exit", ok));
    child.kill(signal);
    await exited;
  }
}

export async function eventually<T>(
  probe: () => T | undefined | Promise<T | undefined>,
  timeoutMs: number,
  what: string,
): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (performance.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await new Promise((ok) => setTimeout(ok, 10));
  }
}
