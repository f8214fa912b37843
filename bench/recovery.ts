/**
 * Killed-worker recovery, repeated: `node dist/bench/recovery.js [--trials 20] [--tokens 24]
 * [--step-timeout-ms 2000] [--seed S]` (after `npm run build`; needs /work/shared/models/stories260K
 * or ../shared/models/stories260K).
 *
 * Each trial starts two workers (bin/worker, 1 thread, on loopback), opens the cluster over both
 * (mesh, 50/50 by GMAC), and generates `tokens` greedy tokens from a prompt; at a random token
 * (the prompt's prefill included) and a random instant within that token's step, one of the two
 * workers, at random, gets SIGKILL (odd trials) or SIGSTOP (even trials: a hung machine, found by
 * the step timeout). The client re-plans over the worker left and replays; the text must equal
 * the single-machine text. Printed per trial: the signal, the victim, the position, the detection
 * time (the signal to the client's "Lost worker" line) and the recovery time (that line to
 * "Recovered"); then the summary. Exit code 1 unless every trial gives the single-machine text.
 */
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { createBackend } from "../src/kernels/backend.js";
import { openModel, type LoadedModel } from "../src/engine/open.js";
import { TextStream } from "../src/engine/text-stream.js";
import { greedyTokens } from "../src/engine/generate.js";
import { openDistributedModel } from "../src/cluster/client.js";
import { SeededRandom } from "../src/synthetic/checkpoint.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const MODEL = ["/work/shared/models/stories260K", path.resolve(ROOT, "../shared/models/stories260K")].find((p) => fs.existsSync(p));
const PROMPT = "Once upon a time, there was a little";

interface Worker {
  port: number;
  child: ChildProcess;
}

const children = new Set<ChildProcess>();
process.once("exit", () => children.forEach((c) => c.kill("SIGKILL")));

function startWorker(): Promise<Worker> {
  const cache = fs.mkdtempSync(path.join(os.tmpdir(), "llamesh-recovery-"));
  const env: NodeJS.ProcessEnv = { ...process.env, LLAMESH_WORKER_GMAC: "1" };
  delete env["LLAMESH_SECRET"];
  const child = spawn(process.execPath, [path.join(ROOT, "bin", "worker"), "0", "--host", "127.0.0.1", "--threads", "1", "--cache-dir", cache], { env, stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  return new Promise((resolve, reject) => {
    let out = "";
    let err = "";
    child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      const m = /listening [^\s]*:(\d+)/.exec(out);
      if (m) resolve({ port: Number(m[1]), child });
    });
    child.once("exit", (code) => reject(new Error(`worker exited with ${code}: ${err}`)));
  });
}

async function greedy(m: LoadedModel, n: number, before?: (k: number) => void): Promise<{ text: string; tokens: number[] }> {
  before?.(0);
  let made = 0;
  const tokens = await greedyTokens(m, m.tokenizer.encode(PROMPT, true), n, () => {
    if (++made < n) before?.(made);
  });
  const s = new TextStream(m.tokenizer);
  return { text: tokens.map((t) => s.push(t)).join("") + s.end(), tokens };
}

/** A seeded uniform generator (the synthetic checkpoints' mulberry32: the run is reproducible from its seed). */
function prng(seed: number): () => number {
  const r = new SeededRandom(seed);
  return () => r.uniform();
}

interface Trial {
  signal: "SIGKILL" | "SIGSTOP";
  victim: number;
  at: number;
  detectMs: number;
  recoverMs: number;
  same: boolean;
}

async function trial(i: number, r: () => number, tokens: number, stepTimeoutMs: number, expected: string): Promise<Trial> {
  const backend = await createBackend({ threads: 1 });
  const ws = await Promise.all([startWorker(), startWorker()]);
  const signal = i % 2 === 1 ? "SIGKILL" : "SIGSTOP";
  const victim = Math.floor(r() * 2);
  const at = Math.floor(r() * tokens);
  let tSignal = 0;
  let tLost = 0;
  let tRecovered = 0;
  const log = (l: string): void => {
    if (/^Lost worker/.test(l)) tLost = performance.now();
    if (/^Recovered:/.test(l)) tRecovered = performance.now();
  };
  const m = await openDistributedModel(MODEL!, { workers: ws.map((w) => ({ host: "127.0.0.1", port: w.port })), backend, maxSeqLen: 96, topology: "mesh", stepTimeoutMs, log });
  try {
    const got = await greedy(m, tokens, (k) => {
      if (k !== at) return;
      // at a random instant of this token's step (the timer fires while the step waits on the network)
      setTimeout(() => {
        tSignal = performance.now();
        ws[victim]!.child.kill(signal);
      }, r() * 2);
    });
    return { signal, victim, at, detectMs: tLost > 0 ? tLost - tSignal : NaN, recoverMs: tRecovered > 0 ? tRecovered - tLost : NaN, same: got.text === expected };
  } finally {
    await m.close();
    for (const w of ws) {
      w.child.kill("SIGKILL");
      children.delete(w.child);
    }
    backend.close();
  }
}

async function main(): Promise<void> {
  const arg = (name: string, dflt: number): number => {
    const i = process.argv.indexOf(`--${name}`);
    return i >= 0 ? Number(process.argv[i + 1]) : dflt;
  };
  if (!MODEL) {
    console.log("recovery: stories260K not found (/work/shared/models/stories260K or ../shared/models/stories260K): nothing to run");
    return;
  }
  const trials = arg("trials", 20);
  const tokens = arg("tokens", 24);
  const stepTimeoutMs = arg("step-timeout-ms", 2000);
  const seed = arg("seed", Date.now() % 1e9);
  const backend = await createBackend({ threads: 1 });
  const expected = (await greedy(await openModel(MODEL, { backend, maxSeqLen: 96 }), tokens)).text;
  backend.close();
  console.log(`recovery: ${trials} trials, 2 workers (mesh), ${tokens} greedy tokens of stories260K, step timeout ${stepTimeoutMs} ms, seed ${seed}`);
  console.log(`single-node text: ${JSON.stringify(expected)}`);
  const r = prng(seed);
  const all: Trial[] = [];
  for (let i = 1; i <= trials; i++) {
    const t = await trial(i, r, tokens, stepTimeoutMs, expected);
    all.push(t);
    console.log(`trial ${String(i).padStart(2)}: ${t.signal} worker ${t.victim === 0 ? "A" : "B"} at token ${String(t.at).padStart(2)}: detected in ${t.detectMs.toFixed(0).padStart(5)} ms, recovered in ${t.recoverMs.toFixed(0).padStart(4)} ms, text ${t.same ? "identical" : "DIFFERENT"}`);
  }
  const summary = (sig: string): string => {
    const d = all.filter((t) => t.signal === sig).map((t) => t.detectMs).sort((a, b) => a - b);
    const rec = all.filter((t) => t.signal === sig).map((t) => t.recoverMs).sort((a, b) => a - b);
    const med = (x: number[]): number => x[Math.floor((x.length - 1) / 2)] ?? NaN;
    return `${sig}: ${d.length} trials, detection median ${med(d).toFixed(0)} ms (min ${d[0]?.toFixed(0)}, max ${d[d.length - 1]?.toFixed(0)}), recovery median ${med(rec).toFixed(0)} ms (max ${rec[rec.length - 1]?.toFixed(0)})`;
  };
  const same = all.filter((t) => t.same).length;
  console.log(`${same}/${trials} identical to single-node`);
  console.log(summary("SIGKILL"));
  console.log(summary("SIGSTOP"));
  process.exitCode = same === trials ? 0 : 1;
}

await main();
