/**
 * Opening a model folder: validate it, read the config and tokenizer, then load and quantize the
 * weights into arenas. This is where a CLI path becomes a runnable model.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { KernelBackend } from "../kernels/kernels.js";
import { loadLlamaConfig, type LlamaConfig } from "../model/config.js";
import { LlameshError } from "../core/errors.js";
import { openGguf } from "../model/gguf-llama.js";
import type { TensorSource } from "../core/tensor-source.js";
import { SafetensorsModel } from "../model/safetensors.js";
import type { Tokenizer } from "../model/tokenizer-types.js";
import { loadTokenizer } from "../model/tokenizer.js";
import { ForwardPass, type SequenceChunk } from "./forward.js";
import type { LogitsModel } from "./generate.js";
import type { QuantChoice } from "./types.js";
import type { MemorySummary } from "./weights.js";

export interface OpenOptions {
  backend: KernelBackend;
  /** Context to allocate; default: the model's max_position_embeddings. */
  maxSeqLen?: number;
  onProgress?: (done: number, total: number) => void;
  maxArenaBytes?: number;
  /** The matrices' types (types.ts): default a GGUF's own, Q8_0 for a folder. */
  quant?: QuantChoice;
  /** Sequences served at once (each its own KV region of maxSeqLen positions); default 1. */
  slots?: number;
}

export interface LoadedModel extends LogitsModel {
  /** KV regions: sequences that can run at once (forwardBatch). */
  readonly slots: number;
  /** One step over several sequences (forward.ts SequenceChunk); the logits of each chunk's last token. */
  forwardBatch(chunks: readonly SequenceChunk[]): Promise<Float32Array[]>;
  dir: string;
  config: LlamaConfig;
  tokenizer: Tokenizer;
  memory: MemorySummary;
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

function isGgufPath(p: string): boolean {
  return p.endsWith(".gguf") || (fs.existsSync(p) && fs.statSync(p).isFile());
}

/** A checkpoint's config and tensors: a Hugging Face folder or a single .gguf file (llama). */
export interface Weights {
  config: LlamaConfig;
  source: TensorSource;
  /** The config as it identifies the model (fingerprints hash it). */
  configText: string;
}

export function openWeights(p: string): Weights {
  if (isGgufPath(p)) {
    const { tokenizer: _unused, ...w } = openGgufCheckpoint(p);
    return w;
  }
  checkModelDir(p);
  const config = loadLlamaConfig(p);
  return { config, source: SafetensorsModel.open(p), configText: fs.readFileSync(path.join(p, "config.json"), "utf8") };
}

function openGgufCheckpoint(p: string): Weights & { tokenizer: Tokenizer } {
  if (!fs.existsSync(p)) throw new LlameshError(`${p}: file not found`);
  const g = openGguf(p);
  return { config: g.config, source: g.source, configText: JSON.stringify(g.config), tokenizer: g.tokenizer };
}

/** openWeights plus the tokenizer (from the folder's files or the GGUF metadata). */
export async function openCheckpoint(p: string): Promise<Weights & { tokenizer: Tokenizer }> {
  if (isGgufPath(p)) return openGgufCheckpoint(p);
  const w = openWeights(p);
  try {
    const tokenizer = await loadTokenizer(p);
    if (tokenizer.vocabSize > w.config.vocabSize) {
      throw new LlameshError(`${p}: the tokenizer has ${tokenizer.vocabSize} tokens but config.json vocab_size is ${w.config.vocabSize}`);
    }
    return { ...w, tokenizer };
  } catch (e) {
    w.source.close();
    throw e;
  }
}

/**
 * Context allocated when none is asked for: the model's trained context, at most 4096 tokens
 * (llama.cpp's default -c). Llama 3.1's 131,072 positions would otherwise mean a 17 GB KV cache
 * for the 8B model before the first token.
 */
export const DEFAULT_MAX_CONTEXT = 4096;

export function defaultSeqLen(config: LlamaConfig): number {
  return Math.min(config.seqLen, DEFAULT_MAX_CONTEXT);
}

/** A model path is a Hugging Face folder or a single .gguf file (llama architecture). */
export async function openModel(dir: string, opts: OpenOptions): Promise<LoadedModel> {
  const { config, tokenizer, source } = await openCheckpoint(dir);
  const seqLen = Math.min(opts.maxSeqLen ?? defaultSeqLen(config), 1 << 20);
  const t0 = performance.now();
  let fp: ForwardPass;
  try {
    fp = await ForwardPass.load(source, config, opts.backend, { seqLen, onProgress: opts.onProgress, maxArenaBytes: opts.maxArenaBytes, quant: opts.quant, slots: opts.slots });
  } finally {
    source.close();
  }
  const loadMs = performance.now() - t0;
  return {
    dir,
    config,
    tokenizer,
    memory: fp.memory,
    files: source.files.map((f) => ({ file: f, bytes: fs.statSync(f).size })),
    loadMs,
    seqLen,
    batch: fp.batch,
    slots: fp.slots,
    forward: (tokens, pos) => fp.forward(tokens, pos),
    forwardBatch: (chunks) => fp.forwardBatch(chunks),
  };
}
