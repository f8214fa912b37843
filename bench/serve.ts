/**
 * `llamesh bench serve [model] [--streams 1,8] [-n N] [--runs R] [-t T]`: a load generator for
 * `llamesh serve`. It starts the server on the model (default: the TinyLlama 1.1B-shape synthetic
 * GGUF of `bench synth --shape 1b`) with as many slots as the largest stream count, then, R times
 * in alternation, runs bin/client alone on the same model (its decode tok/s, the reference for
 * one stream) and each stream count: N concurrent greedy streams with fixed prompts, each asking
 * for n tokens. Per run: aggregate tok/s (every stream's tokens over the wall time), per-stream
 * decode tok/s (tokens after the first over the time after the first), time to first token and
 * queue time (the server's log). Prints best and median of the runs.
 */
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { LlameshError } from "../src/core/errors.js";
import { benchSynth } from "./synth.js";
import { createBackend } from "../src/kernels/backend.js";
import { openModel } from "../src/engine/open.js";

export interface ServeBenchOptions {
  model?: string;
  threads: number;
  streams: number[];
  n: number;
  runs: number;
  log: (line: string) => void;
}

const PROMPTS = [
  "Once upon a time, in a small village by the sea,",
  "The history of the printing press begins",
  "Here is a recipe for bread:",
  "In 1969, the first people to walk on the moon",
  "The weather today is",
  "A list of the largest cities in Europe:",
  "Dear friend, I am writing to tell you",
  "The rules of chess are simple:",
];

interface StreamRun {
  tokens: number;
  firstMs: number;
  decodeTokPerS: number;
}

interface LoadRun {
  streams: number;
  /** Mean forward step time on the server (its /metrics), and steps. */
  stepMs: number;
  steps: number;
  aggregate: number;
  perStream: number;
  ttftMs: number;
  queueMs: number;
  tokens: number;
  /** /proc/pressure/cpu "some avg10" after the run (others' processes competing for the cores), when known. */
  pressure?: number;
}

/** Linux's CPU pressure (share of the last 10 s some task waited for a core), or undefined. */
function cpuPressure(): number | undefined {
  try {
    const m = /some avg10=([\d.]+)/.exec(fs.readFileSync("/proc/pressure/cpu", "utf8"));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;

/** Start `llamesh serve` on a free port; resolves with its address once it is listening. */
async function startServer(model: string, threads: number, slots: number, ctx: number): Promise<{ base: string; child: ChildProcess; stderr: () => string }> {
  const bin = path.resolve("bin", "llamesh");
  const child = spawn(process.execPath, [bin, "serve", model, "--port", "0", "-t", String(threads), "--parallel", String(slots), "--slot-ctx", String(ctx)], { stdio: ["ignore", "pipe", "pipe"] });
  let err = "";
  child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
  // a bench stopped by a signal takes its server along
  for (const sig of ["SIGINT", "SIGTERM"] as const) process.once(sig, () => (child.kill("SIGTERM"), process.exit(130)));
  const port = await new Promise<number>((resolve, reject) => {
    let out = "";
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      const m = /listening [^\s]*:(\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.on("exit", (code) => reject(new LlameshError(`bench serve: llamesh serve exited (${code}): ${err.trim().split("\n").at(-1)}`)));
  });
  return { base: `http://127.0.0.1:${port}`, child, stderr: () => err };
}

/** One greedy stream: its tokens (from the usage chunk), time to its first token, decode rate after it. */
async function oneStream(base: string, prompt: string, n: number): Promise<StreamRun> {
  const t0 = performance.now();
  const r = await fetch(`${base}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ prompt, max_tokens: n, temperature: 0, stream: true, stream_options: { include_usage: true } }),
  });
  if (r.status !== 200) throw new LlameshError(`bench serve: HTTP ${r.status}: ${await r.text()}`);
  const reader = r.body!.getReader();
  const dec = new TextDecoder();
  let buf = "";
  let first = 0;
  let last = 0;
  let tokens = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i: number;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const ev = buf.slice(0, i);
      buf = buf.slice(i + 2);
      if (!ev.startsWith("data: {")) continue;
      const j = JSON.parse(ev.slice(6)) as { choices: { text?: string }[]; usage?: { completion_tokens: number } };
      if (j.usage) tokens = j.usage.completion_tokens;
      else if (j.choices[0]?.text) {
        if (!first) first = performance.now();
        last = performance.now();
      }
    }
  }
  return { tokens, firstMs: first - t0, decodeTokPerS: tokens > 1 && last > first ? ((tokens - 1) * 1000) / (last - first) : 0 };
}

/** The server's step counters (llamesh_steps_total, llamesh_step_seconds_total). */
async function stepCounters(base: string): Promise<{ steps: number; seconds: number }> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const v = (name: string): number => Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1] ?? NaN);
  return { steps: v("llamesh_steps_total"), seconds: v("llamesh_step_seconds_total") };
}

/** `streams` concurrent streams; queue times from the server log lines they add. */
async function load(srv: { base: string; stderr: () => string }, streams: number, n: number): Promise<LoadRun> {
  const logStart = srv.stderr().length;
  const c0 = await stepCounters(srv.base);
  const t0 = performance.now();
  const runs = await Promise.all(Array.from({ length: streams }, (_, i) => oneStream(srv.base, PROMPTS[i % PROMPTS.length]!, n)));
  const wall = performance.now() - t0;
  await new Promise((r) => setTimeout(r, 50)); // the log lines follow the last event
  const queued = [...srv.stderr().slice(logStart).matchAll(/queued ([\d.]+) s/g)].map((m) => Number(m[1]) * 1000);
  const tokens = runs.reduce((s, r) => s + r.tokens, 0);
  const c1 = await stepCounters(srv.base);
  return {
    streams,
    steps: c1.steps - c0.steps,
    stepMs: ((c1.seconds - c0.seconds) * 1000) / Math.max(1, c1.steps - c0.steps),
    aggregate: (tokens * 1000) / wall,
    perStream: median(runs.map((r) => r.decodeTokPerS)),
    ttftMs: median(runs.map((r) => r.firstMs)),
    queueMs: queued.length ? median(queued) : 0,
    tokens,
  };
}

/**
 * bin/client's decode tok/s on the same model, prompt and context. Asynchronous: a blocked event
 * loop would keep the HTTP client from seeing the server close its idle connections, and the next
 * request would go out on a dead one.
 */
async function clientSpeed(model: string, threads: number, n: number, ctx: number): Promise<number> {
  const child = spawn(process.execPath, [path.resolve("bin", "client"), model, "-n", String(n), "-t", String(threads), "-c", String(ctx), "--temp", "0", "-i", PROMPTS[0]!], { stdio: ["ignore", "ignore", "pipe"] });
  let err = "";
  child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
  const m = /Speed: ([\d.]+) tok\/s/.exec(err);
  if (!m) throw new LlameshError(`bench serve: bin/client gave no speed (exit ${code}): ${err.trim().split("\n").at(-1)}`);
  return Number(m[1]);
}

export async function benchServe(opts: ServeBenchOptions): Promise<void> {
  const model = opts.model ?? (await benchSynth({ shape: "1b", log: opts.log })).gguf!;
  const ctx = Math.max(256, 2 * (opts.n + 32));
  const slots = Math.max(...opts.streams);
  opts.log(`bench serve: ${model}, ${opts.threads} threads, ${slots} slots of ${ctx} positions, ${opts.n} tokens per stream, ${opts.runs} runs alternating bin/client and ${opts.streams.join(", ")} streams`);
  const srv = await startServer(model, opts.threads, slots, ctx);
  const client: number[] = [];
  const byStreams = new Map<number, LoadRun[]>(opts.streams.map((s) => [s, []]));
  try {
    await load(srv, 1, 8); // warm up: first-use costs out of the figures
    for (let run = 0; run < opts.runs; run++) {
      client.push(await clientSpeed(model, opts.threads, opts.n, ctx));
      opts.log(`  run ${run + 1}: bin/client ${client.at(-1)!.toFixed(2)} tok/s`);
      for (const s of opts.streams) {
        const r = await load(srv, s, opts.n);
        r.pressure = cpuPressure();
        byStreams.get(s)!.push(r);
        opts.log(`  run ${run + 1}: ${s} stream${s === 1 ? "" : "s"}: ${r.aggregate.toFixed(2)} tok/s aggregate, ${r.perStream.toFixed(2)} per stream, ttft ${r.ttftMs.toFixed(0)} ms, queue ${r.queueMs.toFixed(0)} ms, ${r.tokens} tokens, ${r.steps} steps of ${r.stepMs.toFixed(1)} ms${r.pressure === undefined ? "" : `, CPU pressure ${r.pressure.toFixed(0)}%`}`);
      }
    }
  } catch (e) {
    const tail = srv.stderr().trim().split("\n").slice(-5).join("\n  ");
    throw new LlameshError(`bench serve: ${e instanceof Error ? e.message : String(e)}${srv.child.exitCode !== null || srv.child.signalCode !== null ? ` (llamesh serve ended: ${srv.child.exitCode ?? srv.child.signalCode})` : ""}; the server's last lines:\n  ${tail}`);
  } finally {
    srv.child.kill("SIGTERM");
  }
  printTable(client, byStreams, opts.streams);
  await engineSteps(model, opts.threads, opts.streams, ctx, opts.log);
}

/**
 * The engine's own bound, without HTTP or scheduling: one forwardBatch of k single-token segments
 * (k slots), best of 5 after a warm-up, in this process; k tokens per step give k x 1000 / ms tok/s.
 */
async function engineSteps(model: string, threads: number, streams: number[], ctx: number, log: (l: string) => void): Promise<void> {
  const backend = await createBackend({ threads });
  try {
    const slots = Math.max(...streams);
    const m = await openModel(model, { backend, maxSeqLen: ctx, slots });
    for (let s = 0; s < slots; s++) await m.forwardBatch([{ slot: s, pos: 0, tokens: [1, 2, 3, 4] }]);
    const rows = ["| tokens per step (k slots) | step ms (best of 5) | tok/s | vs 1 |", "|---:|---:|---:|---:|"];
    let one = 0;
    for (const k of streams) {
      let best = Infinity;
      for (let i = 0; i < 6; i++) {
        const t0 = performance.now();
        await m.forwardBatch(Array.from({ length: k }, (_, s) => ({ slot: s, pos: 4 + i, tokens: [5 + s] })));
        if (i > 0) best = Math.min(best, performance.now() - t0);
      }
      const tps = (k * 1000) / best;
      if (k === Math.min(...streams)) one = tps;
      rows.push(`| ${k} | ${best.toFixed(1)} | ${tps.toFixed(2)} | ${(tps / one).toFixed(2)}x |`);
    }
    log("engine alone (forwardBatch in this process):");
    process.stdout.write("\n" + rows.join("\n") + "\n");
  } finally {
    await backend.close();
  }
}

function printTable(client: number[], byStreams: Map<number, LoadRun[]>, streams: number[]): void {
  const one = byStreams.get(Math.min(...streams))!;
  const base = Math.max(...one.map((r) => r.aggregate));
  const rows = [
    "| streams | aggregate tok/s (best / median) | per-stream tok/s (median) | time to first token (median) | queue (median) | vs 1 stream |",
    "|---:|---:|---:|---:|---:|---:|",
    ...streams.map((s) => {
      const rs = byStreams.get(s)!;
      const agg = rs.map((r) => r.aggregate);
      return `| ${s} | ${Math.max(...agg).toFixed(2)} / ${median(agg).toFixed(2)} | ${median(rs.map((r) => r.perStream)).toFixed(2)} | ${median(rs.map((r) => r.ttftMs)).toFixed(0)} ms | ${median(rs.map((r) => r.queueMs)).toFixed(0)} ms | ${(Math.max(...agg) / base).toFixed(2)}x |`;
    }),
    `| bin/client | ${Math.max(...client).toFixed(2)} / ${median(client).toFixed(2)} | | | | ${(Math.max(...client) / base).toFixed(2)}x |`,
  ];
  const decode1 = median(one.map((r) => r.perStream));
  rows.push("", `1 stream's decode ${decode1.toFixed(2)} tok/s vs bin/client's ${median(client).toFixed(2)} (medians): ${((decode1 / median(client)) * 100).toFixed(1)}%`);
  process.stdout.write(rows.join("\n") + "\n");
}
