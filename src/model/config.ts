/**
 * The Llama hyper-parameters, read from a Hugging Face `config.json`.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { fileError, LlameshError } from "../core/errors.js";

export interface LlamaConfig {
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
  tiedEmbeddings: boolean;
  headDim: number;
  bosTokenId: number | null;
  eosTokenIds: number[];
}

const LLAMA_ARCHITECTURES = new Set(["LlamaForCausalLM"]);

function intField(raw: Record<string, unknown>, key: string, file: string, fallback?: number): number {
  const v = raw[key] ?? fallback;
  if (v === undefined) throw new LlameshError(`${file}: missing "${key}" (expected a positive integer)`);
  if (typeof v !== "number" || !Number.isInteger(v) || v <= 0) {
    throw new LlameshError(`${file}: "${key}" is ${JSON.stringify(v)}, expected a positive integer`);
  }
  return v;
}

function numField(raw: Record<string, unknown>, key: string, file: string, fallback: number): number {
  const v = raw[key] ?? fallback;
  if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
    throw new LlameshError(`${file}: "${key}" is ${JSON.stringify(v)}, expected a positive number`);
  }
  return v;
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

/** Parse and validate a config.json object; `file` names it in errors. */
export function parseLlamaConfig(raw: Record<string, unknown>, file: string): LlamaConfig {
  const modelType = raw["model_type"];
  const archs = Array.isArray(raw["architectures"]) ? (raw["architectures"] as unknown[]) : [];
  const isLlama = modelType === "llama" || archs.some((a) => typeof a === "string" && LLAMA_ARCHITECTURES.has(a));
  if (!isLlama) {
    throw new LlameshError(
      `${file}: model_type ${JSON.stringify(modelType ?? null)}, architectures ${JSON.stringify(archs)}: ` +
        `not a Llama model (expected model_type "llama" / LlamaForCausalLM)`,
    );
  }
  const act = raw["hidden_act"];
  if (act !== undefined && act !== "silu") {
    throw new LlameshError(`${file}: hidden_act ${JSON.stringify(act)} is not supported (expected "silu")`);
  }
  if (raw["rope_scaling"] !== undefined && raw["rope_scaling"] !== null) {
    throw new LlameshError(`${file}: rope_scaling is not supported yet (expected null or absent)`);
  }
  const dim = intField(raw, "hidden_size", file);
  const nHeads = intField(raw, "num_attention_heads", file);
  const nKvHeads = intField(raw, "num_key_value_heads", file, nHeads);
  if (dim % nHeads !== 0) {
    throw new LlameshError(`${file}: hidden_size ${dim} is not a multiple of num_attention_heads ${nHeads}`);
  }
  if (nHeads % nKvHeads !== 0) {
    throw new LlameshError(`${file}: num_attention_heads ${nHeads} is not a multiple of num_key_value_heads ${nKvHeads}`);
  }
  const headDim = intField(raw, "head_dim", file, dim / nHeads);
  if (headDim * nHeads !== dim || headDim % 2 !== 0) {
    throw new LlameshError(`${file}: head_dim ${headDim} must be even and equal hidden_size / num_attention_heads`);
  }
  return {
    dim,
    hiddenDim: intField(raw, "intermediate_size", file),
    nLayers: intField(raw, "num_hidden_layers", file),
    nHeads,
    nKvHeads,
    vocabSize: intField(raw, "vocab_size", file),
    seqLen: intField(raw, "max_position_embeddings", file, 2048),
    normEps: numField(raw, "rms_norm_eps", file, 1e-6),
    ropeTheta: numField(raw, "rope_theta", file, 10000),
    tiedEmbeddings: raw["tie_word_embeddings"] === true,
    headDim,
    bosTokenId: typeof raw["bos_token_id"] === "number" ? (raw["bos_token_id"] as number) : null,
    eosTokenIds: idList(raw["eos_token_id"]),
  };
}

export function loadLlamaConfig(modelDir: string): LlamaConfig {
  const file = path.join(modelDir, "config.json");
  return parseLlamaConfig(readJsonFile(file), file);
}
