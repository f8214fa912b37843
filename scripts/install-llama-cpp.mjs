#!/usr/bin/env node
// Installs llama.cpp for comparisons (tests and `llamesh bench compare`): the npm package
// node-llama-cpp with only this platform's prebuilt CPU binary (about 85 MB, not the ~700 MB of
// every GPU variant), into <cache>/llama-cpp, outside the repo. Idempotent; prints the folder.
// Usage: node scripts/install-llama-cpp.mjs <cache-dir>
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";

export const NODE_LLAMA_CPP_VERSION = "3.22.1";

const cache = process.argv[2];
if (!cache) {
  console.error("usage: node scripts/install-llama-cpp.mjs <cache-dir>");
  process.exit(2);
}
const dir = path.join(path.resolve(cache), "llama-cpp");
const installed = path.join(dir, "node_modules", "node-llama-cpp", "package.json");
if (fs.existsSync(installed) && JSON.parse(fs.readFileSync(installed, "utf8")).version === NODE_LLAMA_CPP_VERSION) {
  console.log(dir);
  process.exit(0);
}
fs.mkdirSync(dir, { recursive: true });
if (!fs.existsSync(path.join(dir, "package.json"))) fs.writeFileSync(path.join(dir, "package.json"), '{"private":true}\n');
const platform = `@node-llama-cpp/${process.platform}-${process.arch}@${NODE_LLAMA_CPP_VERSION}`;
console.error(`Installing node-llama-cpp@${NODE_LLAMA_CPP_VERSION} (${platform}) into ${dir} ...`);
const r = spawnSync("npm", ["install", "--no-audit", "--no-fund", "--ignore-scripts", "--omit=optional", `node-llama-cpp@${NODE_LLAMA_CPP_VERSION}`, platform], {
  cwd: dir,
  stdio: ["ignore", "inherit", "inherit"],
});
if (r.status !== 0) {
  console.error(`install-llama-cpp: npm exited with ${r.status}`);
  process.exit(1);
}
console.log(dir);
