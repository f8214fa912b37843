/** `llamesh bench gmac|synth|compare`: benchmarks, as commands (never part of the tests). */
import * as os from "node:os";
import { benchCompare } from "../../bench/compare.js";
import { benchGmac, benchTypes } from "../../bench/gmac.js";
import { TENSOR_TYPES, isTensorType, type TensorType } from "../kernels/formats.js";
import { benchSynth } from "../../bench/synth.js";
import { LlameshError } from "../core/errors.js";
import { defaultThreads, parseArgs, type FlagSpec } from "./args.js";

export const BENCH_USAGE = `usage: llamesh bench gmac [--threads N] [--seconds S] [--types Q8_0,Q4_0,Q4_K,Q6_K|all|none]
       llamesh bench synth --shape 7b|1b|demo [--seed N] [--no-gguf]
       llamesh bench compare <7b|1b|file.gguf> [--threads N] [--runs R] [-n N]
  gmac:    Q8_0 matrix x vector throughput on Llama 2 7B shapes (1 and N threads), memory bandwidth,
           and the tok/s they imply for Llama 2 7B; then per tensor type (--types, default
           Q8_0,Q4_0,Q4_K,Q6_K) decode and 8-token prefill GMAC/s and GB/s, best and median.
  synth:   writes a synthetic checkpoint of that shape (HF bf16 folder + GGUF Q8_0), cached in .cache/synth.
  compare: llamesh vs llama.cpp (node-llama-cpp, installed on first use into .cache/llama-cpp) on the
           same GGUF weights: decode and prompt tok/s, best of 3, alternating.`;

const flags: Record<string, FlagSpec> = {
  threads: { type: "int", min: 1, max: 256, help: "compute threads" },
  seconds: { type: "number", min: 0.1, max: 600, help: "measuring time per figure" },
  types: { type: "string", help: "tensor types for the per-type figures (comma-separated, all or none)" },
  shape: { type: "string", help: "7b, 1b or demo" },
  seed: { type: "int", min: 0, max: 2 ** 31, help: "seed of the synthetic weights" },
  "no-gguf": { type: "boolean", help: "skip the GGUF copy" },
  runs: { type: "int", min: 1, max: 20, help: "runs of each engine" },
  "max-new-tokens": { type: "int", aliases: ["-n"], min: 2, max: 10000, help: "tokens to generate" },
  help: { type: "boolean", aliases: ["-h"], help: "show usage" },
};

export async function benchCommand(argv: readonly string[]): Promise<void> {
  const [sub, ...rest] = argv;
  const { positionals, flags: f } = parseArgs(rest, flags, `llamesh bench ${sub ?? ""}`.trim());
  const log = (l: string): void => void process.stderr.write(l + "\n");
  const threads = (f["threads"] as number | undefined) ?? defaultThreads(process.env, os.availableParallelism());
  if (f["help"] || sub === undefined) {
    process.stdout.write(BENCH_USAGE + "\n");
    return;
  }
  switch (sub) {
    case "gmac":
      const types = parseTypes(f["types"] as string | undefined);
      await benchGmac({ threads, seconds: f["seconds"] as number | undefined, log });
      if (types.length) await benchTypes({ threads, types, log });
      return;
    case "synth": {
      const shape = f["shape"] as string | undefined;
      if (!shape) throw new LlameshError("llamesh bench synth: missing --shape (7b, 1b or demo)");
      const r = await benchSynth({ shape, seed: f["seed"] as number | undefined, gguf: !f["no-gguf"], log });
      process.stdout.write(`${r.hfDir}\n${r.gguf ?? ""}\n`);
      return;
    }
    case "compare": {
      if (positionals.length !== 1) throw new LlameshError("llamesh bench compare: expected one model: 7b, 1b or a .gguf file");
      await benchCompare({ model: positionals[0]!, threads, runs: f["runs"] as number | undefined, n: f["max-new-tokens"] as number | undefined, log });
      return;
    }
    default:
      throw new LlameshError(`llamesh bench: unknown benchmark ${JSON.stringify(sub)} (expected gmac, synth or compare)`);
  }
}

function parseTypes(v: string | undefined): TensorType[] {
  if (v === undefined) return ["Q8_0", "Q4_0", "Q4_K", "Q6_K"];
  if (v === "all") return [...TENSOR_TYPES];
  if (v === "none") return [];
  const out: TensorType[] = [];
  for (const t of v.split(",")) {
    const u = t.trim().toUpperCase();
    if (!isTensorType(u)) throw new LlameshError(`llamesh bench gmac: --types ${JSON.stringify(t)} is not a tensor type (expected some of ${TENSOR_TYPES.join(", ")}, all or none)`);
    out.push(u);
  }
  return out;
}
