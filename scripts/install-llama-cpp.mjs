#!/usr/bin/env node
// Installs llama.cpp for comparisons (tests and `llamesh bench compare`): the npm package
// node-llama-cpp with only this platform's prebuilt CPU binary (about 85 MB, not the ~700 MB of
// every GPU variant), into <cache>/llama-cpp, outside the repo. Idempotent; prints the folder.
//
// It also makes <cache>/llama-cpp-reference, the tests' reference: the same files (hard links)
// with one CPU variant only, the portable baseline (libggml-cpu-x64: SSE2, no FMA), so that the
// reference is a function of the file, not of the CPU the tests run on. ggml otherwise loads the
// variant that best fits the CPU, and llama.cpp's variants disagree with one another:
// on stories260K-256-Q6_K.gguf, "The little dog", greedy token 28 is 439 with the haswell and
// piledriver variants (FMA: Q6_K's block sums accumulate fused) and 263 with the sandybridge,
// sse42 and x64 ones, a logit margin of 0.03 (measured 2026-12-02 on an AMD EPYC with AVX2); the
// AMX variant of a Xeon gave 439 too. The other nine file/prompt pairs of that test agree across
// variants. Where no x64 variant exists (other platforms), every variant but AMX is kept.
// Benchmarks use <cache>/llama-cpp with every variant: there llama.cpp runs at its fastest.
//
// Last, <cache>/llama.cpp: llama.cpp's source at the same release, cloned from the git bundle that
// node-llama-cpp carries (llama/gitRelease.bundle), for the vocabulary files of its tokenizer tests
// (models/ggml-vocab-*.gguf, used by test/model/tokenizer-llamacpp.test.ts). Skipped with a warning
// where git is missing.
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
/** The reference copy's policy (see the header); a copy made under another is remade. */
const REFERENCE_POLICY = "cpu-variant: x64 only (else all but sapphirerapids)\n";
const POLICY_FILE = "reference-policy.txt";

/** <cache>/llama-cpp-reference: `from`'s tree, hard-linked (copied where links fail), minus the CPU variants the header leaves out. */
function makeReference(from, to) {
  fs.rmSync(to, { recursive: true, force: true });
  const hasBaseline = (d) => fs.readdirSync(d, { withFileTypes: true }).some((e) =>
    e.isDirectory() ? hasBaseline(path.join(d, e.name)) : e.name === "libggml-cpu-x64.so");
  const baseline = hasBaseline(from);
  const left = (name) => /^libggml-cpu-/.test(name) && (baseline ? !/^libggml-cpu-x64\./.test(name) : /^libggml-cpu-sapphirerapids\./.test(name));
  const walk = (a, b) => {
    fs.mkdirSync(b, { recursive: true });
    for (const e of fs.readdirSync(a, { withFileTypes: true })) {
      const pa = path.join(a, e.name), pb = path.join(b, e.name);
      if (e.isDirectory()) walk(pa, pb);
      else if (e.isSymbolicLink()) fs.symlinkSync(fs.readlinkSync(pa), pb);
      else if (!left(e.name)) {
        try { fs.linkSync(pa, pb); } catch { fs.copyFileSync(pa, pb); }
      }
    }
  };
  walk(from, to);
  fs.writeFileSync(path.join(to, POLICY_FILE), REFERENCE_POLICY);
}
const referenceCurrent = (to) => {
  try { return fs.readFileSync(path.join(to, POLICY_FILE), "utf8") === REFERENCE_POLICY; } catch { return false; }
};
const reference = path.join(path.resolve(cache), "llama-cpp-reference");

/** <cache>/llama.cpp from node-llama-cpp's git bundle, unless already there (see the header). */
function cloneSource() {
  const src = path.join(path.resolve(cache), "llama.cpp");
  if (fs.existsSync(path.join(src, "models", "ggml-vocab-qwen2.gguf"))) return;
  const bundle = path.join(dir, "node_modules", "node-llama-cpp", "llama", "gitRelease.bundle");
  if (!fs.existsSync(bundle)) return;
  fs.rmSync(src, { recursive: true, force: true });
  const g = spawnSync("git", ["-c", "advice.detachedHead=false", "clone", "--quiet", bundle, src], { stdio: ["ignore", "ignore", "inherit"] });
  if (g.status !== 0) console.error(`install-llama-cpp: warning: could not clone llama.cpp's source from ${bundle} (git ${g.error ? "missing" : `exited with ${g.status}`}): its tokenizer-file tests will skip`);
}

if (fs.existsSync(installed) && JSON.parse(fs.readFileSync(installed, "utf8")).version === NODE_LLAMA_CPP_VERSION) {
  if (!fs.existsSync(path.join(reference, "node_modules", "node-llama-cpp", "package.json")) || !referenceCurrent(reference)) makeReference(dir, reference);
  cloneSource();
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
cloneSource();
console.log(dir);
