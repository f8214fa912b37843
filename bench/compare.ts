/**
 * `llamesh bench compare <shape|model-dir>`: llamesh and llama.cpp side by side on identical
 * weights (one GGUF Q8_0 file), same thread count, prompt "It was a dark and stormy night",
 * 100 new tokens, greedy, 3 runs each alternating the two, best of 3 (the seed's method).
 *
 * llama.cpp comes from the npm package node-llama-cpp (its prebuilt CPU binary). It is ~700 MB
 * with its GPU builds, so it is installed on first use into <cache>/llama-cpp, never by npm ci.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { LlameshError } from "../src/core/errors.js";
import { SHAPES } from "../src/synthetic/checkpoint.js";
import { median } from "./stats.js";
import { benchSynth, defaultCacheDir } from "./synth.js";

export const PROMPT = "It was a dark and stormy night";
const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");

export interface RunFigures {
  promptTokPerS: number;
  decodeTokPerS: number;
  generated: number;
}

/** node-llama-cpp in <cacheDir>/llama-cpp, installed on first use (scripts/install-llama-cpp.mjs). */
export function ensureNodeLlamaCpp(cacheDir: string, log: (l: string) => void): string {
  const dir = path.join(cacheDir, "llama-cpp");
  if (fs.existsSync(path.join(dir, "node_modules", "node-llama-cpp", "package.json"))) return dir;
  log(`Installing node-llama-cpp (llama.cpp prebuilt for this platform, ~85 MB) into ${dir}, once ...`);
  const r = spawnSync(process.execPath, [path.join(root, "scripts", "install-llama-cpp.mjs"), cacheDir], { stdio: ["ignore", "ignore", "inherit"] });
  if (r.status !== 0) throw new LlameshError(`bench compare: installing node-llama-cpp into ${dir} failed (exit ${r.status})`);
  return dir;
}

export function runLlamaCpp(nlcDir: string, gguf: string, threads: number, n: number, ctx: number): RunFigures {
  const r = spawnSync(process.execPath, [path.join(here, "llamacpp-runner.js"), nlcDir, gguf, String(threads), PROMPT, String(n), String(ctx)], {
    encoding: "utf8",
    maxBuffer: 1 << 24,
  });
  const line = r.stdout.trim().split("\n").pop() ?? "";
  if (r.status !== 0 || !line.startsWith("{")) throw new LlameshError(`bench compare: llama.cpp run failed (exit ${r.status}): ${r.stderr.trim().slice(-500)}`);
  return JSON.parse(line) as RunFigures;
}

/** One bin/client run of the checkout at `checkout` (default: this one) on `model`, greedy. */
export function runLlamesh(model: string, threads: number, n: number, ctx: number, checkout = root): RunFigures {
  const r = spawnSync(
    process.execPath,
    [path.join(checkout, "bin", "client"), model, "-n", String(n), "-i", PROMPT, "--temperature", "0", "--threads", String(threads), "--max-seq-len", String(ctx)],
    { encoding: "utf8", maxBuffer: 1 << 24 },
  );
  if (r.status !== 0) throw new LlameshError(`bench compare: llamesh run failed (exit ${r.status}): ${r.stderr.trim().slice(-500)}`);
  const prompt = /Prompt: \d+ tokens in [\d.]+ ms, ([\d.]+) tok\/s/.exec(r.stderr);
  const speed = /Speed: ([\d.]+) tok\/s/.exec(r.stderr);
  const gen = /Generated: (\d+) tokens/.exec(r.stderr);
  if (!prompt || !speed || !gen) throw new LlameshError(`bench compare: could not read llamesh's report:\n${r.stderr.slice(-800)}`);
  return { promptTokPerS: Number(prompt[1]), decodeTokPerS: Number(speed[1]), generated: Number(gen[1]) };
}

export async function benchCompare(opts: {
  model: string;
  threads?: number;
  runs?: number;
  n?: number;
  ctx?: number;
  cacheDir?: string;
  log: (line: string) => void;
}): Promise<void> {
  const log = opts.log;
  const cacheDir = opts.cacheDir ?? defaultCacheDir();
  const threads = opts.threads ?? os.availableParallelism();
  const runs = opts.runs ?? 3;
  const n = opts.n ?? 100;
  const ctx = opts.ctx ?? 1024;
  let gguf: string;
  if (SHAPES[opts.model]) {
    const s = await benchSynth({ shape: opts.model, cacheDir, log });
    gguf = s.gguf!;
  } else if (opts.model.endsWith(".gguf") && fs.existsSync(opts.model)) {
    gguf = opts.model;
  } else {
    throw new LlameshError(`bench compare: ${JSON.stringify(opts.model)} is neither a shape (${Object.keys(SHAPES).join(", ")}) nor a .gguf file`);
  }
  const nlcDir = ensureNodeLlamaCpp(cacheDir, log);
  log(`Comparing on ${gguf}: ${threads} threads, prompt ${JSON.stringify(PROMPT)}, ${n} new tokens, greedy, best of ${runs}, alternating`);
  const ours: RunFigures[] = [];
  const theirs: RunFigures[] = [];
  for (let i = 0; i < runs; i++) {
    const a = runLlamesh(gguf, threads, n, ctx);
    ours.push(a);
    log(`  run ${i + 1} llamesh:   decode ${a.decodeTokPerS.toFixed(2)} tok/s, prompt ${a.promptTokPerS.toFixed(2)} tok/s (${a.generated} tokens)`);
    const b = runLlamaCpp(nlcDir, gguf, threads, n, ctx);
    theirs.push(b);
    log(`  run ${i + 1} llama.cpp: decode ${b.decodeTokPerS.toFixed(2)} tok/s, prompt ${b.promptTokPerS.toFixed(2)} tok/s (${b.generated} tokens)`);
  }
  const best = (xs: RunFigures[], k: keyof RunFigures) => Math.max(...xs.map((x) => x[k]));
  const rows = [
    ["", "llamesh", "llama.cpp", "ratio"],
    ["decode tok/s", best(ours, "decodeTokPerS").toFixed(2), best(theirs, "decodeTokPerS").toFixed(2), (best(ours, "decodeTokPerS") / best(theirs, "decodeTokPerS")).toFixed(2)],
    ["prompt tok/s", best(ours, "promptTokPerS").toFixed(2), best(theirs, "promptTokPerS").toFixed(2), (best(ours, "promptTokPerS") / best(theirs, "promptTokPerS")).toFixed(2)],
  ];
  const cpu = os.cpus()[0]?.model ?? "unknown CPU";
  log(`\n| ${path.basename(path.dirname(gguf))} on ${cpu}, ${threads} threads | llamesh | llama.cpp | ratio |`);
  log("|---|---|---|---|");
  for (const r of rows.slice(1)) log(`| ${r.join(" | ")} |`);
  // On a shared machine the same command moves up to 2x between minutes: each llamesh run's ratio
  // to the llama.cpp run right after it says more than bests taken minutes apart.
  const paired = (k: keyof RunFigures) => {
    const r = ours.map((a, i) => a[k] / theirs[i]![k]);
    return `median ${median(r).toFixed(2)} (${Math.min(...r).toFixed(2)}-${Math.max(...r).toFixed(2)})`;
  };
  log(`\nRun by run (each llamesh run over the llama.cpp run after it): decode ${paired("decodeTokPerS")}, prompt ${paired("promptTokPerS")}`);
}
