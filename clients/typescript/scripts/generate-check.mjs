// Fails when src/gen is not what `npm run generate` produces from the protos now: regenerates
// into a temporary directory with the same template and compares every file.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const committed = join(root, "src", "gen");
const scratch = mkdtempSync(join(tmpdir(), "entitlements-ts-gen-"));

function files(dir) {
  let out = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    out = statSync(path).isDirectory() ? out.concat(files(path)) : out.concat([path]);
  }
  return out;
}

try {
  execFileSync(join(root, "node_modules", ".bin", "buf"), ["generate", "--output", scratch], {
    cwd: root,
    stdio: "inherit",
  });
  const fresh = join(scratch, "src", "gen");
  const want = new Map(files(fresh).map((p) => [relative(fresh, p), readFileSync(p, "utf8")]));
  const have = new Map(files(committed).map((p) => [relative(committed, p), readFileSync(p, "utf8")]));
  const problems = [];
  for (const [path, text] of want) {
    if (!have.has(path)) problems.push(`missing: src/gen/${path}`);
    else if (have.get(path) !== text) problems.push(`stale: src/gen/${path}`);
  }
  for (const path of have.keys()) {
    if (!want.has(path)) problems.push(`not generated from any proto: src/gen/${path}`);
  }
  if (problems.length > 0) {
    console.error(problems.join("\n"));
    console.error("generated TypeScript is stale: run 'npm run generate' in clients/typescript and commit");
    process.exit(1);
  }
  console.log(`src/gen is fresh (${want.size} files)`);
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
