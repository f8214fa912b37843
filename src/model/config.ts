/**
 * The hyper-parameters of a Llama-family model, read from a Hugging Face `config.json` (GGUF
 * files give the same through gguf-llama.ts). One shape covers the families llamesh runs: Llama
 * 2 / 3.x, Mistral, Qwen2 / Qwen2.5 and Qwen3 differ only in the fields below (RoPE scaling, q/k/v
 * biases, per-head q/k norms, a head size apart from hidden_size / heads, a sliding window).
 * Sizes are bounded before anything is built from them, so an absurd config is a one-line error.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { fileError, LlameshError } from "../core/errors.js";

export type ModelFamily = "llama" | "mistral" | "qwen2" | "qwen3";

/** What model_type / architectures llamesh runs, for the error that names them. */
export const SUPPORTED_MODEL_TYPES = "llama (LlamaForCausalLM), mistral (MistralForCausalLM), qwen2 (Qwen2ForCausalLM), qwen3 (Qwen3ForCausalLM)";

const FAMILY_OF_TYPE: Record<string, ModelFamily> = { llama: "llama", mistral: "mistral", qwen2: "qwen2", qwen3: "qwen3" };
const FAMILY_OF_ARCH: Record<string, ModelFamily> = {
  LlamaForCausalLM: "llama", MistralForCausalLM: "mistral", Qwen2ForCausalLM: "qwen2", Qwen3ForCausalLM: "qwen3",
};

/**
 * RoPE frequency scaling. "llama3" (Llama 3.1+): long wavelengths divided by `factor`, short ones
 * kept, a smooth blend between (Hugging Face's _compute_llama3_parameters). "linear": every
 * frequency divided by `factor` (position interpolation). "factors": each frequency divided by its
 * own factor, as a GGUF stores llama3 scaling. engine/weights.ts ropeFrequencies applies them.
 */
export type RopeScaling =
  | { type: "llama3"; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositions: number }
  | { type: "linear"; factor: number }
  /** GGUF's form of llama3 scaling: one divisor per frequency (llama.cpp's rope_freqs.weight). */
  | { type: "factors"; factors: number[] };

export interface LlamaConfig {
  family: ModelFamily;
  /** hidden_size: width of the residual stream. */
  dim: number;
  /** intermediate_size: width of the feed-forward layer. */
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  vocabSize: number;
  /** max_position_embeddings: the longest context the model was trained for. */
  seqLen: number;
  normEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling | null;
  tiedEmbeddings: boolean;
  /** Size of one attention head: hidden_size / heads, except where the config says otherwise (Qwen3). */
  headDim: number;
  /** q, k and v projections have biases (Qwen2 / Qwen2.5). */
  attnBias: boolean;
  /** Per-head RMSNorm of q and k before RoPE, weights of headDim (Qwen3). */
  qkNorm: boolean;
  /** Attention sees at most this many positions (itself included); null: the whole context. */
  slidingWindow: number | null;
  bosTokenId: number | null;
  eosTokenIds: number[];
}

/** Width of the attention: rows of q_proj, columns of o_proj. */
export function attnDim(c: LlamaConfig): number {
  return c.nHeads * c.headDim;
}

/**
 * Bounds far beyond any released model, checked before a size is used: a config.json or GGUF that
 * says 2^53 layers is an error at once, not an allocation of gigabytes.
 */
export const LIMITS = {
  dim: 1 << 16, hiddenDim: 1 << 18, nLayers: 1024, nHeads: 1024, headDim: 1024, vocabSize: 1 << 22, seqLen: 1 << 24,
} as const;

function intField(raw: Record<string, unknown>, key: string, file: string, fallback?: number, max = Number.MAX_SAFE_INTEGER): number {
  const v = raw[key] ?? fallback;
  if (v === undefined) throw new LlameshError(`${file}: missing "${key}" (expected a positive integer)`);
  if (typeof v !== "number" || !Number.isInteger(v) || v <= 0) {
    throw new LlameshError(`${file}: "${key}" is ${JSON.stringify(v)}, expected a positive integer`);
  }
  if (v > max) throw new LlameshError(`${file}: "${key}" is ${v}, beyond any model llamesh can run (at most ${max})`);
  return v;
}

function numField(raw: Record<string, unknown>, key: string, file: string, fallback: number): number {
  const v = raw[key] ?? fallback;
  if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
    throw new LlameshError(`${file}: "${key}" is ${JSON.stringify(v)}, expected a positive number`);
  }
  return v;
}

/** The rope_scaling object of a config.json (null when absent or plain). */
export function parseRopeScaling(raw: unknown, file: string, key = "rope_scaling"): RopeScaling | null {
  if (raw === undefined || raw === null) return null;
  if (typeof raw !== "object" || Array.isArray(raw)) throw new LlameshError(`${file}: "${key}" is ${JSON.stringify(raw)}, expected an object or null`);
  const o = raw as Record<string, unknown>;
  const type = o["rope_type"] ?? o["type"];
  const num = (k: string, fallback?: number): number => numField(o, k, `${file}: ${key}`, fallback ?? NaN);
  if (type === "default") return null;
  if (type === "linear") return { type: "linear", factor: num("factor") };
  if (type === "llama3") {
    const r: RopeScaling = {
      type: "llama3", factor: num("factor"), lowFreqFactor: num("low_freq_factor"), highFreqFactor: num("high_freq_factor"),
      originalMaxPositions: intField(o, "original_max_position_embeddings", `${file}: ${key}`),
    };
    if (!(r.highFreqFactor > r.lowFreqFactor)) throw new LlameshError(`${file}: ${key}: high_freq_factor ${r.highFreqFactor} must exceed low_freq_factor ${r.lowFreqFactor}`);
    return r;
  }
  throw new LlameshError(`${file}: ${key} of type ${JSON.stringify(type ?? null)} is not supported (expected "llama3" or "linear"; yarn, dynamic and longrope are not)`);
}

export function readJsonFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    throw fileError(file, e);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new LlameshError(`${file}: not valid JSON (${(e as Error).message})`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new LlameshError(`${file}: expected a JSON object`);
  }
  return value as Record<string, unknown>;
}

function idList(v: unknown): number[] {
  if (typeof v === "number" && Number.isInteger(v)) return [v];
  if (Array.isArray(v)) return v.filter((x): x is number => typeof x === "number" && Number.isInteger(x));
  return [];
}

/** The family a config.json describes, or a one-line error naming what it is and what llamesh runs. */
function familyOf(raw: Record<string, unknown>, file: string): ModelFamily {
  const modelType = raw["model_type"];
  const archs = Array.isArray(raw["architectures"]) ? (raw["architectures"] as unknown[]) : [];
  const byType = typeof modelType === "string" ? FAMILY_OF_TYPE[modelType] : undefined;
  const byArch = archs.map((a) => (typeof a === "string" ? FAMILY_OF_ARCH[a] : undefined)).find((f) => f !== undefined);
  const family = byType ?? (modelType === undefined ? byArch : undefined);
  if (!family) {
    throw new LlameshError(
      `${file}: model_type ${JSON.stringify(modelType ?? null)}, architectures ${JSON.stringify(archs)}: ` +
        `not a model llamesh runs (supported: ${SUPPORTED_MODEL_TYPES})`,
    );
  }
  return family;
}

/** Parse and validate a config.json object; `file` names it in errors. */
export function parseLlamaConfig(raw: Record<string, unknown>, file: string): LlamaConfig {
  const family = familyOf(raw, file);
  const act = raw["hidden_act"] ?? raw["hidden_activation"];
  if (act !== undefined && act !== "silu") {
    throw new LlameshError(`${file}: hidden_act ${JSON.stringify(act)} is not supported (expected "silu")`);
  }
  const dim = intField(raw, "hidden_size", file, undefined, LIMITS.dim);
  const nHeads = intField(raw, "num_attention_heads", file, undefined, LIMITS.nHeads);
  const nKvHeads = intField(raw, "num_key_value_heads", file, nHeads, LIMITS.nHeads);
  if (nHeads % nKvHeads !== 0) {
    throw new LlameshError(`${file}: num_attention_heads ${nHeads} is not a multiple of num_key_value_heads ${nKvHeads}`);
  }
  // Llama and Mistral derive the head size from hidden_size; Qwen3 (and some Mistral fine-tunes) state it
  const explicitHeadDim = raw["head_dim"] !== undefined && raw["head_dim"] !== null;
  if (!explicitHeadDim && dim % nHeads !== 0) {
    throw new LlameshError(`${file}: hidden_size ${dim} is not a multiple of num_attention_heads ${nHeads} (and no head_dim is given)`);
  }
  const headDim = intField(raw, "head_dim", file, explicitHeadDim ? undefined : dim / nHeads, LIMITS.headDim);
  if (headDim % 2 !== 0) throw new LlameshError(`${file}: head_dim ${headDim} must be even (RoPE rotates pairs)`);
  const seqLen = intField(raw, "max_position_embeddings", file, 2048, LIMITS.seqLen);
  // Mistral v0.1 attends to 4096 positions; v0.2+ say null; Qwen gives a window only with use_sliding_window
  const window = raw["sliding_window"];
  const windowOn = family === "mistral" || (family.startsWith("qwen") && raw["use_sliding_window"] === true);
  let slidingWindow: number | null = null;
  if (windowOn && window !== undefined && window !== null) {
    const w = intField(raw, "sliding_window", file, undefined, LIMITS.seqLen);
    slidingWindow = w < seqLen ? w : null; // a window as long as the context is plain attention
  }
  if (family.startsWith("qwen") && raw["use_sliding_window"] === true && (raw["max_window_layers"] ?? 0) !== 0) {
    throw new LlameshError(`${file}: use_sliding_window with max_window_layers is not supported (only a window on every layer)`);
  }
  return {
    family,
    dim,
    hiddenDim: intField(raw, "intermediate_size", file, undefined, LIMITS.hiddenDim),
    nLayers: intField(raw, "num_hidden_layers", file, undefined, LIMITS.nLayers),
    nHeads,
    nKvHeads,
    vocabSize: intField(raw, "vocab_size", file, undefined, LIMITS.vocabSize),
    seqLen,
    normEps: numField(raw, "rms_norm_eps", file, 1e-6),
    ropeTheta: numField(raw, "rope_theta", file, 10000),
    ropeScaling: parseRopeScaling(raw["rope_scaling"], file),
    tiedEmbeddings: raw["tie_word_embeddings"] === true,
    headDim,
    attnBias: family === "qwen2" || raw["attention_bias"] === true,
    qkNorm: family === "qwen3",
    slidingWindow,
    bosTokenId: typeof raw["bos_token_id"] === "number" ? (raw["bos_token_id"] as number) : null,
    eosTokenIds: idList(raw["eos_token_id"]),
  };
}

export function loadLlamaConfig(modelDir: string): LlamaConfig {
  const file = path.join(modelDir, "config.json");
  return parseLlamaConfig(readJsonFile(file), file);
}
