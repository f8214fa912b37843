/**
 * `llamesh bench synth --shape 7b|1b|demo`: a synthetic checkpoint of a real model's shape with
 * seeded random weights, as a Hugging Face folder (bf16 safetensors, sharded like the real
 * release) and as a GGUF Q8_0 file of the same values. Cached: a second call returns at once.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { LlameshError } from "../src/core/errors.js";
import { SHAPES, writeSyntheticModel } from "../src/synthetic/checkpoint.js";

export interface SynthResult {
  hfDir: string;
  gguf: string | null;
}

/** Real releases: Llama 2 7B ships 2 shards, TinyLlama one file. */
const SHARDS: Record<string, number> = { "7b": 2, "1b": 1, demo: 1 };

export function defaultCacheDir(): string {
  return process.env["LLAMESH_CACHE"] ?? path.resolve(".cache");
}

export async function benchSynth(opts: {
  shape: string;
  cacheDir?: string;
  seed?: number;
  gguf?: boolean;
  log: (line: string) => void;
}): Promise<SynthResult> {
  const shape = SHAPES[opts.shape];
  if (!shape) throw new LlameshError(`bench synth: --shape ${JSON.stringify(opts.shape)} is not known, expected one of ${Object.keys(SHAPES).join(", ")}`);
  const seed = opts.seed ?? 1234;
  const base = path.join(opts.cacheDir ?? defaultCacheDir(), "synth", `${opts.shape}-seed${seed}`);
  const hfDir = path.join(base, "hf");
  if (fs.existsSync(path.join(hfDir, "config.json"))) {
    opts.log(`Cached: ${hfDir}`);
  } else {
    const t0 = performance.now();
    opts.log(`Writing a synthetic ${opts.shape} checkpoint (bf16 safetensors, seed ${seed}) to ${hfDir} ...`);
    const llama2Tok = path.resolve("../shared/models/llama2-tokenizer");
    const useLlama2 = shape.vocabSize === 32000 && fs.existsSync(llama2Tok);
    if (shape.vocabSize === 32000 && !useLlama2) opts.log("(../shared/models/llama2-tokenizer absent: using the byte-level tokenizer)");
    writeSyntheticModel(hfDir, shape, { seed, dtype: "BF16", shards: SHARDS[opts.shape] ?? 1, tokenizerFrom: useLlama2 ? llama2Tok : undefined });
    opts.log(`  done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }
  let gguf: string | null = null;
  if (opts.gguf !== false) {
    gguf = path.join(base, "model-q8_0.gguf");
    if (fs.existsSync(gguf)) {
      opts.log(`Cached: ${gguf}`);
    } else {
      const t0 = performance.now();
      opts.log(`Writing the same weights as GGUF Q8_0 to ${gguf} ...`);
      const { writeGgufFromSafetensors } = await import("../src/synthetic/gguf-writer.js");
      writeGgufFromSafetensors(hfDir, gguf, { quant: "Q8_0" });
      opts.log(`  done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    }
  }
  return { hfDir, gguf };
}
