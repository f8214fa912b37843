/**
 * Opening a model folder: validate it, read the config and tokenizer, then load and quantize the
 * weights into arenas. This is where a CLI path becomes a runnable model.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { KernelBackend } from "../kernels/kernels.js";
import { loadLlamaConfig, type LlamaConfig } from "../model/config.js";
import { LlameshError } from "../model/errors.js";
import { openGguf } from "../model/gguf.js";
import { SafetensorsModel, type TensorSource } from "../model/safetensors.js";
import type { Tokenizer } from "../model/tokenizer-types.js";
import { loadTokenizer } from "../model/tokenizer.js";
import { ForwardPass } from "./forward.js";
import type { LogitsModel } from "./generate.js";
import { loadWeights, type ModelWeights } from "./weights.js";

export interface OpenOptions {
  backend: KernelBackend;
  /** Context to allocate; default: the model's max_position_embeddings. */
  maxSeqLen?: number;
  onProgress?: (done: number, total: number) => void;
  maxArenaBytes?: number;
}

export interface LoadedModel extends LogitsModel {
  dir: string;
  config: LlamaConfig;
  tokenizer: Tokenizer;
  weights: ModelWeights;
  files: { file: string; bytes: number }[];
  loadMs: number;
}

/** Fail early, naming the folder and what was expected, before any heavy work. */
export function checkModelDir(dir: string): void {
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch {
    throw new LlameshError(`${dir}: model folder not found`);
  }
  if (!st.isDirectory()) throw new LlameshError(`${dir}: not a folder (expected a Hugging Face model folder with config.json and *.safetensors)`);
  const entries = fs.readdirSync(dir);
  if (!entries.includes("config.json")) {
    throw new LlameshError(`${dir}: missing config.json (expected a Hugging Face model folder: config.json, *.safetensors, tokenizer files)`);
  }
  const hasSafetensors = entries.some((e) => e.endsWith(".safetensors") || e === "model.safetensors.index.json");
  if (!hasSafetensors) {
    const other = entries.filter((e) => /\.(bin|pt|pth|ckpt|h5|msgpack)$/.test(e));
    throw new LlameshError(
      other.length > 0
        ? `${dir}: weights only in ${other.join(", ")}, a format llamesh does not read (expected *.safetensors)`
        : `${dir}: no *.safetensors weights (expected model.safetensors or shards with model.safetensors.index.json)`,
    );
  }
}

/** A model path is a Hugging Face folder or a single .gguf file (llama architecture). */
export async function openModel(dir: string, opts: OpenOptions): Promise<LoadedModel> {
  let config: LlamaConfig;
  let tokenizer: Tokenizer;
  let source: TensorSource;
  if (dir.endsWith(".gguf") || (fs.existsSync(dir) && fs.statSync(dir).isFile())) {
    if (!fs.existsSync(dir)) throw new LlameshError(`${dir}: file not found`);
    const g = openGguf(dir);
    config = g.config;
    tokenizer = g.tokenizer;
    source = g.source;
  } else {
    checkModelDir(dir);
    config = loadLlamaConfig(dir);
    tokenizer = await loadTokenizer(dir);
    if (tokenizer.vocabSize > config.vocabSize) {
      throw new LlameshError(`${dir}: the tokenizer has ${tokenizer.vocabSize} tokens but config.json vocab_size is ${config.vocabSize}`);
    }
    source = SafetensorsModel.open(dir);
  }
  const seqLen = Math.min(opts.maxSeqLen ?? config.seqLen, 1 << 20);
  const t0 = performance.now();
  let weights: ModelWeights;
  try {
    weights = loadWeights(source, config, opts.backend, {
      seqLen,
      onProgress: opts.onProgress,
      maxArenaBytes: opts.maxArenaBytes,
    });
  } finally {
    source.close();
  }
  const loadMs = performance.now() - t0;
  const fp = new ForwardPass(weights);
  return {
    dir,
    config,
    tokenizer,
    weights,
    files: source.files.map((f) => ({ file: f, bytes: fs.statSync(f).size })),
    loadMs,
    seqLen,
    batch: weights.batch,
    forward: (tokens, pos) => fp.forward(tokens, pos),
  };
}

export function relativeToCwd(p: string): string {
  const r = path.relative(process.cwd(), p);
  return r.startsWith("..") && r.split(path.sep).filter((x) => x === "..").length > 2 ? p : r || ".";
}
