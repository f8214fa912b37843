/**
 * Synthetic Llama checkpoints with seeded random weights, written in the Hugging Face layout
 * (config.json, safetensors — single or sharded with an index —, tokenizer files). Used by the
 * demo (nothing can be downloaded), the tests (tiny shapes) and the benchmarks (7B / 1.1B shapes).
 * Tensors are generated and written one at a time, so a 13.5 GB checkpoint never sits in memory.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { f32ToBf16, f32ToF16 } from "../core/numbers.js";
import type { LlamaConfig, ModelFamily } from "../model/config.js";
import type { SafetensorsDtype } from "../model/safetensors.js";

/**
 * The shape of a checkpoint: the config's sizes, whether the classifier is the embedding, and for
 * the other families what sets them apart (Qwen2: q/k/v biases; Qwen3: per-head q/k norms and a
 * head size of its own; Llama 3.1: rope_scaling; Mistral: a sliding window).
 */
export type SyntheticShape = Pick<LlamaConfig, "dim" | "hiddenDim" | "nLayers" | "nHeads" | "nKvHeads" | "vocabSize" | "seqLen"> & {
  tied: boolean;
  /** Default "llama". */
  family?: ModelFamily;
  /** Default dim / nHeads. */
  headDim?: number;
  ropeTheta?: number;
  /** config.json's rope_scaling object, as Hugging Face writes it. */
  ropeScaling?: Record<string, unknown>;
  /** Mistral's sliding_window. */
  slidingWindow?: number;
  bosTokenId?: number;
  eosTokenId?: number | number[];
};

export const SHAPES: Record<string, SyntheticShape> = {
  /** Llama 2 7B. */
  "7b": { dim: 4096, hiddenDim: 11008, nLayers: 32, nHeads: 32, nKvHeads: 32, vocabSize: 32000, seqLen: 4096, tied: false },
  /** TinyLlama 1.1B. */
  "1b": { dim: 2048, hiddenDim: 5632, nLayers: 22, nHeads: 32, nKvHeads: 4, vocabSize: 32000, seqLen: 2048, tied: false },
  /** Llama 3.1 8B: GQA 32/8, a 128K vocabulary, llama3 RoPE scaling. */
  "llama3-8b": {
    family: "llama", dim: 4096, hiddenDim: 14336, nLayers: 32, nHeads: 32, nKvHeads: 8, vocabSize: 128256, seqLen: 131072, tied: false, ropeTheta: 500000,
    ropeScaling: { rope_type: "llama3", factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 }, bosTokenId: 128000, eosTokenId: [128001, 128008, 128009],
  },
  /** Qwen3 8B: q/k norms, head_dim 128, a 152K vocabulary. */
  "qwen3-8b": {
    family: "qwen3", dim: 4096, hiddenDim: 12288, nLayers: 36, nHeads: 32, nKvHeads: 8, headDim: 128, vocabSize: 151936, seqLen: 40960, tied: false, ropeTheta: 1000000,
    bosTokenId: 151643, eosTokenId: 151645,
  },
  /** The demo: small enough to build in a second, big enough to look like a model. */
  demo: { dim: 256, hiddenDim: 688, nLayers: 4, nHeads: 8, nKvHeads: 4, vocabSize: 354, seqLen: 512, tied: false },
};

/** mulberry32: a tiny seeded generator; Gaussian values by the Box-Muller transform. */
export class SeededRandom {
  private s: number;
  private spare: number | null = null;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  uniform(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /**
   * An approximately Gaussian value (mean 0, variance 1) from one 32-bit draw: the sum of its four
   * bytes (Irwin-Hall), ten times cheaper than Box-Muller, which matters for 7 billion weights.
   */
  fastGaussian(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    t = (t ^ (t >>> 14)) >>> 0;
    return ((t & 255) + ((t >>> 8) & 255) + ((t >>> 16) & 255) + (t >>> 24) - 510) / 147.8;
  }
  gaussian(): number {
    if (this.spare !== null) {
      const v = this.spare;
      this.spare = null;
      return v;
    }
    const u = 1 - this.uniform();
    const r = Math.sqrt(-2 * Math.log(u));
    const a = 2 * Math.PI * this.uniform();
    this.spare = r * Math.sin(a);
    return r * Math.cos(a);
  }
}

export interface TensorSpec {
  name: string;
  shape: number[];
  /** Fills `out` (length = product of shape) with the values. */
  fill: (out: Float32Array) => void;
}

const DTYPE_BYTES: Record<SafetensorsDtype, number> = { F32: 4, F16: 2, BF16: 2 };

function encode(values: Float32Array, dtype: SafetensorsDtype): Buffer {
  if (dtype === "F32") return Buffer.from(values.buffer, values.byteOffset, values.byteLength);
  const u16 = new Uint16Array(values.length);
  if (dtype === "F16") for (let i = 0; i < values.length; i++) u16[i] = f32ToF16(values[i]!);
  else for (let i = 0; i < values.length; i++) u16[i] = f32ToBf16(values[i]!);
  return Buffer.from(u16.buffer);
}

/** Write one safetensors file, generating each tensor just before it is written. */
export function writeSafetensors(file: string, tensors: TensorSpec[], dtype: SafetensorsDtype): void {
  const header: Record<string, unknown> = { __metadata__: { format: "pt", generator: "llamesh synthetic" } };
  let offset = 0;
  for (const t of tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype];
    header[t.name] = { dtype, shape: t.shape, data_offsets: [offset, offset + n] };
    offset += n;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (json.length % 8)) % 8); // keep data 8-byte aligned, as the reference writer does
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  const fd = fs.openSync(file + ".partial", "w");
  try {
    fs.writeSync(fd, len);
    fs.writeSync(fd, json);
    for (const t of tensors) {
      const n = t.shape.reduce((a, b) => a * b, 1);
      // generate big tensors in slices of rows to bound memory
      const rowLen = t.shape.length > 1 ? n / t.shape[0]! : n;
      const rowsPer = Math.max(1, Math.floor((1 << 22) / rowLen));
      const rows = t.shape.length > 1 ? t.shape[0]! : 1;
      const all = n <= 1 << 22 ? new Float32Array(n) : null;
      if (all) {
        t.fill(all);
        fs.writeSync(fd, encode(all, dtype));
      } else {
        // TensorSpec.fill for big tensors must be row-sliceable: we call it once per slice
        const buf = new Float32Array(rowsPer * rowLen);
        for (let r = 0; r < rows; r += rowsPer) {
          const k = Math.min(rowsPer, rows - r);
          const slice = buf.subarray(0, k * rowLen);
          t.fill(slice);
          fs.writeSync(fd, encode(slice, dtype));
        }
      }
    }
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(file + ".partial", file);
}

export interface SyntheticOptions {
  seed: number;
  dtype: SafetensorsDtype;
  /** Number of safetensors shards (1 = model.safetensors, more = model-0000k-of-0000n + index). */
  shards?: number;
  /** Copy tokenizer files from this folder; default: write the project's byte-level tokenizer. */
  tokenizerFrom?: string;
  /** Standard deviation of matrix weights (default 0.02 as in Llama's initialisation, scaled for small dims). */
  weightStd?: number;
}

/** The tensors of a Llama checkpoint of this shape, with seeded Gaussian values. */
export function syntheticTensors(shape: SyntheticShape, seed: number, weightStd?: number): TensorSpec[] {
  const rng = new SeededRandom(seed);
  const headDim = shape.headDim ?? shape.dim / shape.nHeads;
  const qDim = shape.nHeads * headDim;
  const kvDim = shape.nKvHeads * headDim;
  const family = shape.family ?? "llama";
  const std = weightStd ?? Math.min(0.02 * Math.sqrt(4096 / shape.dim), 0.5 / Math.sqrt(shape.dim));
  const gauss = (s: number) => (out: Float32Array) => {
    for (let i = 0; i < out.length; i++) out[i] = rng.fastGaussian() * s;
  };
  const norm = (out: Float32Array) => {
    for (let i = 0; i < out.length; i++) out[i] = 1 + 0.1 * rng.fastGaussian();
  };
  const t: TensorSpec[] = [{ name: "model.embed_tokens.weight", shape: [shape.vocabSize, shape.dim], fill: gauss(1) }];
  for (let l = 0; l < shape.nLayers; l++) {
    const p = `model.layers.${l}.`;
    t.push(
      { name: p + "input_layernorm.weight", shape: [shape.dim], fill: norm },
      { name: p + "self_attn.q_proj.weight", shape: [qDim, shape.dim], fill: gauss(std) },
      { name: p + "self_attn.k_proj.weight", shape: [kvDim, shape.dim], fill: gauss(std) },
      { name: p + "self_attn.v_proj.weight", shape: [kvDim, shape.dim], fill: gauss(std) },
    );
    // biases and norms far from trivial (a bug that drops one changes the logits a lot)
    if (family === "qwen2") {
      t.push(
        { name: p + "self_attn.q_proj.bias", shape: [qDim], fill: gauss(0.5) },
        { name: p + "self_attn.k_proj.bias", shape: [kvDim], fill: gauss(0.5) },
        { name: p + "self_attn.v_proj.bias", shape: [kvDim], fill: gauss(0.5) },
      );
    }
    if (family === "qwen3") {
      const headNorm = (out: Float32Array) => {
        for (let i = 0; i < out.length; i++) out[i] = 1 + 0.5 * rng.fastGaussian();
      };
      t.push({ name: p + "self_attn.q_norm.weight", shape: [headDim], fill: headNorm }, { name: p + "self_attn.k_norm.weight", shape: [headDim], fill: headNorm });
    }
    t.push(
      { name: p + "self_attn.o_proj.weight", shape: [shape.dim, qDim], fill: gauss(std) },
      { name: p + "post_attention_layernorm.weight", shape: [shape.dim], fill: norm },
      { name: p + "mlp.gate_proj.weight", shape: [shape.hiddenDim, shape.dim], fill: gauss(std) },
      { name: p + "mlp.up_proj.weight", shape: [shape.hiddenDim, shape.dim], fill: gauss(std) },
      { name: p + "mlp.down_proj.weight", shape: [shape.dim, shape.hiddenDim], fill: gauss(std) },
    );
  }
  t.push({ name: "model.norm.weight", shape: [shape.dim], fill: norm });
  if (!shape.tied) t.push({ name: "lm_head.weight", shape: [shape.vocabSize, shape.dim], fill: gauss(std * 2) });
  return t;
}

const ARCHITECTURE: Record<ModelFamily, string> = {
  llama: "LlamaForCausalLM", mistral: "MistralForCausalLM", qwen2: "Qwen2ForCausalLM", qwen3: "Qwen3ForCausalLM",
};

export function syntheticConfig(shape: SyntheticShape, dtype: SafetensorsDtype): Record<string, unknown> {
  const family = shape.family ?? "llama";
  return {
    architectures: [ARCHITECTURE[family]],
    model_type: family,
    ...(shape.headDim !== undefined ? { head_dim: shape.headDim } : {}),
    ...(shape.ropeScaling !== undefined ? { rope_scaling: shape.ropeScaling } : {}),
    ...(family === "mistral" ? { sliding_window: shape.slidingWindow ?? null } : {}),
    ...(family === "qwen2" || family === "qwen3" ? { use_sliding_window: false, sliding_window: null, max_window_layers: 0 } : {}),
    hidden_size: shape.dim,
    intermediate_size: shape.hiddenDim,
    num_hidden_layers: shape.nLayers,
    num_attention_heads: shape.nHeads,
    num_key_value_heads: shape.nKvHeads,
    vocab_size: shape.vocabSize,
    max_position_embeddings: shape.seqLen,
    rms_norm_eps: 1e-5,
    rope_theta: shape.ropeTheta ?? 10000.0,
    hidden_act: "silu",
    tie_word_embeddings: shape.tied,
    bos_token_id: shape.bosTokenId ?? 1,
    eos_token_id: shape.eosTokenId ?? 2,
    torch_dtype: { F32: "float32", F16: "float16", BF16: "bfloat16" }[dtype],
  };
}

/**
 * The project's own byte-level tokenizer.json, in the Hugging Face Llama layout: <unk> <s> </s>,
 * the 256 byte-fallback pieces <0x00>..<0xFF>, "▁" and the printable ASCII characters
 * (354 pieces, no merges). Any text encodes (unknown characters fall back to bytes).
 */
export function byteLevelTokenizerJson(): Record<string, unknown> {
  const vocab: Record<string, number> = { "<unk>": 0, "<s>": 1, "</s>": 2 };
  for (let b = 0; b < 256; b++) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`] = 3 + b;
  vocab["▁"] = 259;
  for (let c = 0x21; c <= 0x7e; c++) vocab[String.fromCharCode(c)] = 260 + (c - 0x21);
  const special = (id: number, content: string) => ({
    id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
  });
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
    normalizer: {
      type: "Sequence",
      normalizers: [{ type: "Prepend", prepend: "▁" }, { type: "Replace", pattern: { String: " " }, content: "▁" }],
    },
    pre_tokenizer: null,
    post_processor: null,
    decoder: {
      type: "Sequence",
      decoders: [
        { type: "Replace", pattern: { String: "▁" }, content: " " },
        { type: "ByteFallback" },
        { type: "Fuse" },
        { type: "Strip", content: " ", start: 1, stop: 0 },
      ],
    },
    model: {
      type: "BPE", dropout: null, unk_token: "<unk>", continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: true, byte_fallback: true, ignore_merges: false, vocab, merges: [],
    },
  };
}

export const BYTE_TOKENIZER_VOCAB = 354;

/** Write a whole synthetic model folder (atomically: a .partial folder renamed at the end). */
export function writeSyntheticModel(dir: string, shape: SyntheticShape, opts: SyntheticOptions): void {
  const tmp = dir + ".partial";
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  const tensors = syntheticTensors(shape, opts.seed, opts.weightStd);
  const shards = Math.max(1, opts.shards ?? 1);
  if (shards === 1) {
    writeSafetensors(path.join(tmp, "model.safetensors"), tensors, opts.dtype);
  } else {
    const per = Math.ceil(tensors.length / shards);
    const weightMap: Record<string, string> = {};
    let totalSize = 0;
    for (let s = 0; s < shards; s++) {
      const part = tensors.slice(s * per, (s + 1) * per);
      const name = `model-${String(s + 1).padStart(5, "0")}-of-${String(shards).padStart(5, "0")}.safetensors`;
      writeSafetensors(path.join(tmp, name), part, opts.dtype);
      for (const t of part) {
        weightMap[t.name] = name;
        totalSize += t.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[opts.dtype];
      }
    }
    fs.writeFileSync(
      path.join(tmp, "model.safetensors.index.json"),
      JSON.stringify({ metadata: { total_size: totalSize }, weight_map: weightMap }, null, 2),
    );
  }
  fs.writeFileSync(path.join(tmp, "config.json"), JSON.stringify(syntheticConfig(shape, opts.dtype), null, 2));
  fs.writeFileSync(path.join(tmp, "generation_config.json"), JSON.stringify({ bos_token_id: shape.bosTokenId ?? 1, eos_token_id: shape.eosTokenId ?? 2 }, null, 2));
  if (opts.tokenizerFrom) {
    for (const f of ["tokenizer.json", "tokenizer.model", "tokenizer_config.json", "chat_template.jinja"]) {
      const src = path.join(opts.tokenizerFrom, f);
      if (fs.existsSync(src)) fs.copyFileSync(src, path.join(tmp, f));
    }
  } else {
    fs.writeFileSync(path.join(tmp, "tokenizer.json"), JSON.stringify(byteLevelTokenizerJson()));
    fs.writeFileSync(
      path.join(tmp, "tokenizer_config.json"),
      JSON.stringify({ tokenizer_class: "LlamaTokenizer", bos_token: "<s>", eos_token: "</s>", unk_token: "<unk>", add_bos_token: true, add_eos_token: false }, null, 2),
    );
  }
  fs.rmSync(dir, { recursive: true, force: true });
  fs.renameSync(tmp, dir);
}
