#!/usr/bin/env node
// Installs llama.cpp for comparisons (tests and `llamesh bench compare`): the npm package
// node-llama-cpp with only this platform's prebuilt CPU binary (about 85 MB, not the ~700 MB of
// every GPU variant), into <cache>/llama-cpp, outside the repo. Idempotent; prints the folder.
//
// It also makes <cache>/llama-cpp-reference, the tests' reference: the same files (hard links)
// without the CPU variants that use AMX (libggml-cpu-sapphirerapids). ggml loads the variant that
// best fits the CPU, and on a Xeon with AMX that one's int8 tile path gives other numerics than
// llama.cpp's portable code: on stories260K-256-Q6_K.gguf, "The little dog", its greedy token 28
// wins by a logit margin of 0.031 where every other variant (and llamesh's reference) has the
// runner-up ahead by 0.003 (measured 2026-12-02 on an AMX Xeon). Benchmarks keep every variant:
// there llama.cpp runs at its fastest.
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
/** Variants left out of the reference copy (see the header). */
const NOT_REFERENCE = /^libggml-cpu-sapphirerapids\./;

/** <cache>/llama-cpp-reference: `from`'s tree, hard-linked (copied where links fail), minus NOT_REFERENCE. */
function makeReference(from, to) {
  fs.rmSync(to, { recursive: true, force: true });
  const walk = (a, b) => {
    fs.mkdirSync(b, { recursive: true });
    for (const e of fs.readdirSync(a, { withFileTypes: true })) {
      const pa = path.join(a, e.name), pb = path.join(b, e.name);
      if (e.isDirectory()) walk(pa, pb);
      else if (e.isSymbolicLink()) fs.symlinkSync(fs.readlinkSync(pa), pb);
      else if (!NOT_REFERENCE.test(e.name)) {
        try { fs.linkSync(pa, pb); } catch { fs.copyFileSync(pa, pb); }
      }
    }
  };
  walk(from, to);
}
const reference = path.join(path.resolve(cache), "llama-cpp-reference");

if (fs.existsSync(installed) && JSON.parse(fs.readFileSync(installed, "utf8")).version === NODE_LLAMA_CPP_VERSION) {
  if (!fs.existsSync(path.join(reference, "node_modules", "node-llama-cpp", "package.json"))) makeReference(dir, reference);
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
makeReference(dir, reference);
console.log(dir);
