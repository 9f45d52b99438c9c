// Compile the test contracts with solc-js (npm `solc`), resolving `@openzeppelin/...` imports
// from node_modules. Usage: node compile.mjs <contracts dir> <node_modules dir>
// Prints {"<Contract>": {"abi": [...], "bytecode": "0x..."}} on stdout.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const [contractsDir, nodeModules] = process.argv.slice(2).map((p) => path.resolve(p));
const require = createRequire(path.join(nodeModules, "noop.js"));
const solc = require("solc");

const sources = {};
for (const file of fs.readdirSync(contractsDir).sort()) {
  if (file.endsWith(".sol")) {
    sources[file] = { content: fs.readFileSync(path.join(contractsDir, file), "utf8") };
  }
}

function findImports(importPath) {
  const candidates = [path.join(nodeModules, importPath), path.join(contractsDir, importPath)];
  for (const candidate of candidates) {
    if (fs.existsSync(candidate)) {
      return { contents: fs.readFileSync(candidate, "utf8") };
    }
  }
  return { error: `not found: ${importPath}` };
}

const input = {
  language: "Solidity",
  sources,
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: "cancun",
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
  },
};
const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
const errors = (output.errors || []).filter((e) => e.severity === "error");
if (errors.length) {
  for (const e of errors) console.error(e.formattedMessage);
  process.exit(1);
}
const result = {};
for (const file of Object.keys(sources)) {
  for (const [name, contract] of Object.entries(output.contracts[file] || {})) {
    result[name] = { abi: contract.abi, bytecode: "0x" + contract.evm.bytecode.object };
  }
}
process.stdout.write(JSON.stringify(result));
