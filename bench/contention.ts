/**
 * `llamesh bench contention [7b|1b|file.gguf]`: speed on a machine where another program is busy.
 * llamesh and llama.cpp (node-llama-cpp) at N threads (default 2) and at 1 thread, on a quiet
 * machine and with one competing busy process (`yes > /dev/null`, pinned by taskset to one core,
 * default core 1), every configuration once per round, rounds alternating the order; prints each
 * run, then best and median decode and prompt tok/s per configuration and the acceptance ratios of
 * issue 11 (loaded: llamesh N threads / llama.cpp N threads and / llamesh 1 thread; quiet: llamesh /
 * --baseline, another built checkout, e.g. the previous pool: `git worktree add /tmp/base main`;
 * issue 11's A/B used main with the pool of 97b3eab, the commit before the chunked pool, on today's
 * kernels: one share per thread, the main thread spinning on the workers).
 * Then stories260K's 81-token prompt under the same load: default threads vs --threads 1.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { LlameshError } from "../src/core/errors.js";
import { SHAPES } from "../src/synthetic/checkpoint.js";
import { loadTokenizer } from "../src/model/tokenizer.js";
import { ensureNodeLlamaCpp, runLlamaCpp, runLlamesh, type RunFigures } from "./compare.js";
import { benchSynth, defaultCacheDir } from "./synth.js";
import { median } from "./stats.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");

interface Config {
  name: string;
  run: () => RunFigures;
}

/** One `yes > /dev/null`, pinned to `core` when taskset exists; the caller kills it. */
function startLoad(core: number, log: (l: string) => void): ChildProcess {
  const pinned = spawnSync("taskset", ["--version"], { stdio: "ignore" }).status === 0;
  if (!pinned) log("warning: no taskset: the busy process is not pinned");
  const p = pinned ? spawn("taskset", ["-c", String(core), "yes"], { stdio: ["ignore", "ignore", "ignore"] })
    : spawn("yes", [], { stdio: ["ignore", "ignore", "ignore"] });
  p.on("error", (e) => log(`warning: the busy process failed: ${e.message}`));
  return p;
}

async function stopLoad(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const gone = new Promise<void>((r) => p.once("exit", () => r()));
  p.kill("SIGKILL");
  await gone;
}

function resolveModel(model: string, cacheDir: string, log: (l: string) => void): Promise<string> {
  if (SHAPES[model]) return benchSynth({ shape: model, cacheDir, log }).then((s) => s.gguf!);
  if (model.endsWith(".gguf") && fs.existsSync(model)) return Promise.resolve(model);
  throw new LlameshError(`bench contention: ${JSON.stringify(model)} is neither a shape (${Object.keys(SHAPES).join(", ")}) nor a .gguf file`);
}

export async function benchContention(opts: {
  model?: string; threads?: number; runs?: number; n?: number; baseline?: string; core?: number;
  cacheDir?: string; log: (line: string) => void;
}): Promise<void> {
  const log = opts.log;
  const cacheDir = opts.cacheDir ?? defaultCacheDir();
  const threads = opts.threads ?? 2;
  const runs = opts.runs ?? 3;
  const n = opts.n ?? 32;
  const core = opts.core ?? 1;
  const ctx = 512;
  const gguf = await resolveModel(opts.model ?? "1b", cacheDir, log);
  const nlcDir = ensureNodeLlamaCpp(cacheDir, log);
  const base = opts.baseline === undefined ? undefined : path.resolve(opts.baseline);
  if (base && !fs.existsSync(path.join(base, "bin", "client"))) throw new LlameshError(`bench contention: --baseline ${base} is not a built llamesh checkout`);
  const configs: Config[] = [
    { name: `llamesh ${threads}T`, run: () => runLlamesh(gguf, threads, n, ctx) },
    { name: "llamesh 1T", run: () => runLlamesh(gguf, 1, n, ctx) },
    { name: `llama.cpp ${threads}T`, run: () => runLlamaCpp(nlcDir, gguf, threads, n, ctx) },
    { name: "llama.cpp 1T", run: () => runLlamaCpp(nlcDir, gguf, 1, n, ctx) },
  ];
  if (base) configs.push({ name: `baseline ${threads}T`, run: () => runLlamesh(gguf, threads, n, ctx, base) });
  log(`Contention on ${gguf}: ${n} new tokens, greedy, ${runs} rounds; loaded = one \`yes\` on core ${core}${base ? `; baseline ${base}` : ""}`);
  const results = new Map<string, RunFigures[]>();
  for (let r = 0; r < runs; r++) {
    for (const loaded of r % 2 === 0 ? [false, true] : [true, false]) {
      const load = loaded ? startLoad(core, log) : undefined;
      try {
        const order = r % 2 === 0 ? configs : [...configs].reverse();
        for (const c of order) {
          const key = `${loaded ? "loaded" : "quiet"} ${c.name}`;
          const f = c.run();
          (results.get(key) ?? results.set(key, []).get(key)!).push(f);
          log(`  round ${r + 1} ${key}: decode ${f.decodeTokPerS.toFixed(2)} tok/s, prompt ${f.promptTokPerS.toFixed(2)} tok/s`);
        }
      } finally {
        if (load) await stopLoad(load);
      }
    }
  }
  report(results, configs, threads, base !== undefined, log);
  await storiesUnderLoad(core, runs, log);
}

function report(results: Map<string, RunFigures[]>, configs: Config[], threads: number, hasBase: boolean, log: (l: string) => void): void {
  const stat = (key: string, k: keyof RunFigures, f: (xs: number[]) => number) => f(results.get(key)!.map((x) => x[k]));
  const best = (xs: number[]) => Math.max(...xs);
  log(`\n| ${os.cpus()[0]?.model ?? "CPU"}, Node ${process.version} | decode tok/s best (median) | prompt tok/s best (median) |`);
  log("|---|---|---|");
  for (const load of ["quiet", "loaded"]) {
    for (const c of configs) {
      const key = `${load} ${c.name}`;
      const cell = (k: keyof RunFigures) => `${stat(key, k, best).toFixed(2)} (${stat(key, k, median).toFixed(2)})`;
      log(`| ${key} | ${cell("decodeTokPerS")} | ${cell("promptTokPerS")} |`);
    }
  }
  const ratio = (a: string, b: string, k: keyof RunFigures) =>
    `${(stat(a, k, median) / stat(b, k, median)).toFixed(2)} (best ${(stat(a, k, best) / stat(b, k, best)).toFixed(2)})`;
  const pairs: [string, string][] = [
    [`loaded llamesh ${threads}T`, `loaded llama.cpp ${threads}T`],
    [`loaded llamesh ${threads}T`, "loaded llamesh 1T"],
  ];
  if (hasBase) pairs.push([`quiet llamesh ${threads}T`, `quiet baseline ${threads}T`], [`loaded llamesh ${threads}T`, `loaded baseline ${threads}T`]);
  log("\nRatios, median (best):");
  for (const [a, b] of pairs) log(`  ${a} / ${b}: decode ${ratio(a, b, "decodeTokPerS")}, prompt ${ratio(a, b, "promptTokPerS")}`);
}

/** An 81-token stories260K prompt (BOS included) and its model folder, or undefined if absent. */
async function storiesPrompt(): Promise<{ dir: string; prompt: string } | undefined> {
  const dir = path.resolve(root, "../shared/models/stories260K");
  if (!fs.existsSync(path.join(dir, "config.json"))) return undefined;
  const tok = await loadTokenizer(dir);
  const words = ("Once upon a time there was a little girl named Lily. She loved to play outside in the sun. One day " +
    "she saw a big red ball in the park and she wanted to play with it. Her mom said she could play with the ball if " +
    "she was careful. Lily was very happy and she ran to the ball. She kicked it and it went very high in the sky. " +
    "Then a big dog came and took the ball away.").split(" ");
  for (let k = 1; k <= words.length; k++) {
    const prompt = words.slice(0, k).join(" ");
    if (tok.encode(prompt, true).length >= 81) return { dir, prompt };
  }
  return undefined;
}

/** stories260K: the prompt pass with the default threads and with one, under the same load. */
async function storiesUnderLoad(core: number, runs: number, log: (l: string) => void): Promise<void> {
  const s = await storiesPrompt();
  if (!s) {
    log("stories260K absent: its line is skipped");
    return;
  }
  const once = (threads: string[]) => {
    const r = spawnSync(process.execPath, [path.join(root, "bin", "client"), s.dir, "-n", "1", "-i", s.prompt, "--temperature", "0", ...threads], { encoding: "utf8" });
    const m = /Prompt: (\d+) tokens in ([\d.]+) ms/.exec(r.stderr);
    if (r.status !== 0 || !m) throw new LlameshError(`bench contention: stories260K run failed (exit ${r.status}): ${r.stderr.slice(-400)}`);
    return { tokens: Number(m[1]), ms: Number(m[2]) };
  };
  const load = startLoad(core, log);
  const def: number[] = [], one: number[] = [];
  let tokens = 0;
  try {
    for (let i = 0; i < Math.max(5, runs * 2); i++) {
      const a = once([]);
      const b = once(["--threads", "1"]);
      tokens = a.tokens;
      def.push(a.ms);
      one.push(b.ms);
    }
  } finally {
    await stopLoad(load);
  }
  log(`\nstories260K, ${tokens}-token prompt, loaded: default threads (${os.availableParallelism()}) median ${median(def).toFixed(1)} ms ` +
    `(best ${Math.min(...def).toFixed(1)}), --threads 1 median ${median(one).toFixed(1)} ms (best ${Math.min(...one).toFixed(1)}); ` +
    `ratio ${(median(def) / median(one)).toFixed(2)} (acceptance: < 2)`);
}
