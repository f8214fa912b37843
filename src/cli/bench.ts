/** `llamesh bench gmac|synth|compare`: benchmarks, as commands (never part of the tests). */
import * as os from "node:os";
import { benchAb } from "../../bench/ab.js";
import { benchCompare } from "../../bench/compare.js";
import { benchContention } from "../../bench/contention.js";
import { benchGmac, benchTypes } from "../../bench/gmac.js";
import { TENSOR_TYPES, isTensorType, type MatmulType } from "../kernels/formats.js";
import { benchSynth } from "../../bench/synth.js";
import { benchServe } from "../../bench/serve.js";
import { LlameshError } from "../core/errors.js";
import { defaultThreads, parseArgs, type FlagSpecs } from "./args.js";

export const BENCH_USAGE = `usage: llamesh bench gmac [-t|--threads N] [--seconds S] [--types Q8_0,Q4_0,Q4_0x4,Q4_K,Q6_K|all|none]
       llamesh bench synth --shape 7b|1b|demo [--seed N] [--no-gguf]
       llamesh bench compare <7b|1b|file.gguf> [-t|--threads N] [--runs R] [-n N]
       llamesh bench ab <other-checkout> <model> [-t|--threads N] [--runs R] [-n N]
       llamesh bench serve [model] [--streams 1,8] [-t|--threads N] [--runs R] [-n N]
       llamesh bench contention [7b|1b|file.gguf] [-t|--threads N] [--runs R] [-n N] [--baseline <other-checkout>] [--busy-core C]
  gmac:    Q8_0 matrix x vector throughput on Llama 2 7B shapes (1 and N threads), memory bandwidth,
           and the tok/s they imply for Llama 2 7B; then per tensor type (--types, default
           Q8_0,Q4_0,Q4_0x4,Q4_K,Q6_K; Q4_0x4: Q4_0 repacked, relaxed build only) decode and
           8-token prefill GMAC/s and GB/s, best and median.
  synth:   writes a synthetic checkpoint of that shape (HF bf16 folder + GGUF Q8_0), cached in .cache/synth.
  compare: llamesh vs llama.cpp (node-llama-cpp, installed on first use into .cache/llama-cpp) on the
           same GGUF weights: decode and prompt tok/s, best of 3, alternating.
  ab:      this checkout's bin/client against another built checkout's on the same model, alternating:
           best and median decode and prompt tok/s of each, and their ratios.
  serve:   llamesh serve under load (default model: the 1b synthetic GGUF): R runs alternating bin/client
           and each number of concurrent greedy streams (default 1,8; -n 64 tokens each, 3 runs):
           aggregate and per-stream tok/s, time to first token, queue time.
  contention: llamesh and llama.cpp at N (default 2) and 1 threads, quiet and with a busy \`yes\`
           pinned to core C (default 1), alternating; with --baseline, another checkout too; then
           stories260K's 81-token prompt under that load, default threads vs 1.`;

export const benchFlags = {
  threads: { type: "int", aliases: ["-t"], min: 1, max: 256, help: "compute threads" },
  seconds: { type: "number", min: 0.1, max: 600, help: "measuring time per figure" },
  types: { type: "string", help: "tensor types for the per-type figures (comma-separated, all or none)" },
  shape: { type: "string", help: "7b, 1b or demo" },
  seed: { type: "int", min: 0, max: 2 ** 31, help: "seed of the synthetic weights" },
  "no-gguf": { type: "boolean", help: "skip the GGUF copy" },
  runs: { type: "int", min: 1, max: 20, help: "runs of each engine" },
  "max-new-tokens": { type: "int", aliases: ["-n"], min: 2, max: 10000, help: "tokens to generate" },
  streams: { type: "string", help: "bench serve: concurrent stream counts, comma-separated (default 1,8)" },
  baseline: { type: "string", help: "another built checkout to compare with (bench contention)" },
  "busy-core": { type: "int", min: 0, max: 1023, help: "core the busy process is pinned to (bench contention)" },
} as const satisfies FlagSpecs;

/** Runs one benchmark; resolves with the exit status (1 when none was named: usage on stderr). */
export async function benchCommand(argv: readonly string[]): Promise<number> {
  const { positionals, flags: f, help } = parseArgs(argv, benchFlags, `llamesh bench ${argv[0] !== undefined && !argv[0].startsWith("-") ? argv[0] : ""}`.trim());
  if (help) {
    process.stdout.write(BENCH_USAGE + "\n");
    return 0;
  }
  const [sub, ...rest] = positionals;
  if (sub === undefined) {
    process.stderr.write(BENCH_USAGE + "\n");
    return 1;
  }
  const log = (l: string): void => void process.stderr.write(l + "\n");
  const threads = f.threads ?? defaultThreads(process.env, os.availableParallelism());
  switch (sub) {
    case "gmac": {
      const types = parseTypes(f.types);
      await benchGmac({ threads, seconds: f.seconds, log });
      if (types.length) await benchTypes({ threads, types, log });
      return 0;
    }
    case "synth": {
      if (!f.shape) throw new LlameshError("llamesh bench synth: missing --shape (7b, 1b or demo)");
      const r = await benchSynth({ shape: f.shape, seed: f.seed, gguf: !f["no-gguf"], log });
      process.stdout.write(`${r.hfDir}\n${r.gguf ?? ""}\n`);
      return 0;
    }
    case "compare": {
      if (rest.length !== 1) throw new LlameshError("llamesh bench compare: expected one model: 7b, 1b or a .gguf file");
      await benchCompare({ model: rest[0]!, threads, runs: f.runs, n: f["max-new-tokens"], log });
      return 0;
    }
    case "ab": {
      if (rest.length !== 2) throw new LlameshError("llamesh bench ab: expected <other-checkout> <model>");
      benchAb({ other: rest[0]!, model: rest[1]!, threads, runs: f.runs, n: f["max-new-tokens"], log });
      return 0;
    }
    case "serve": {
      if (rest.length > 1) throw new LlameshError("llamesh bench serve: expected at most one model");
      const streams = (f.streams ?? "1,8").split(",").map((x) => Number(x.trim()));
      if (!streams.every((x) => Number.isInteger(x) && x >= 1 && x <= 16)) throw new LlameshError(`llamesh bench serve: --streams ${JSON.stringify(f.streams)}: expected counts between 1 and 16, comma-separated`);
      await benchServe({ model: rest[0], threads, streams, n: f["max-new-tokens"] ?? 64, runs: f.runs ?? 3, log });
      return 0;
    }
    case "contention": {
      if (rest.length > 1) throw new LlameshError("llamesh bench contention: expected at most one model: 7b, 1b or a .gguf file");
      await benchContention({ model: rest[0], threads: f.threads ?? 2, runs: f.runs, n: f["max-new-tokens"], baseline: f.baseline, core: f["busy-core"], log });
      return 0;
    }
    default:
      throw new LlameshError(`llamesh bench: unknown benchmark ${JSON.stringify(sub)} (expected gmac, synth, compare, ab, serve or contention)`);
  }
}

function parseTypes(v: string | undefined): MatmulType[] {
  if (v === undefined) return ["Q8_0", "Q4_0", "Q4_0x4", "Q4_K", "Q6_K"];
  if (v === "all") return [...TENSOR_TYPES, "Q4_0x4"];
  if (v === "none") return [];
  const out: MatmulType[] = [];
  for (const t of v.split(",")) {
    const u = t.trim().toUpperCase();
    if (u === "Q4_0X4") out.push("Q4_0x4"); // the relaxed build's repacked Q4_0 (formats.ts MatmulType)
    else if (isTensorType(u)) out.push(u);
    else throw new LlameshError(`llamesh bench gmac: --types ${JSON.stringify(t)} is not a tensor type (expected some of ${TENSOR_TYPES.join(", ")}, Q4_0x4, all or none)`);
  }
  return out;
}
