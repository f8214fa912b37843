/**
 * A Llama-family GGUF file (general.architecture llama, qwen2 or qwen3) as the engine sees it: a
 * LlamaConfig from the metadata (`<arch>.embedding_length` and so on), and a
 * TensorSource that answers to the Hugging Face tensor names (see hfNames in engine/weights.ts)
 * with rows in the Hugging Face layout. The container itself is read by gguf/reader.ts, the
 * embedded tokenizer by gguf-tokenizer.ts.
 *
 * RoPE layout: llama.cpp's converter permutes the rows of q_proj and k_proj from the Hugging Face
 * rotate-half layout into the interleaved (Meta) layout, per head of headDim rows:
 *   permute(w, n_head) = w.reshape(n_head, 2, headDim/2, cols).swapaxes(1, 2).reshape(w.shape)
 * so GGUF row 2i of a head holds HF row i and GGUF row 2i+1 holds HF row i + headDim/2. Our
 * kernels use rotate-half, so the source undoes this when reading attn_q / attn_k rows. Rows are
 * whole (Q8_0 rows too), so this is a row reordering, never a re-quantization. Qwen2 and Qwen3 are
 * converted without the permutation (llama.cpp applies their RoPE as rotate-half, "NEOX"), so their
 * rows are read as they are.
 */
import * as fs from "node:fs";
import { LIMITS, type LlamaConfig, type ModelFamily, type RopeScaling } from "./config.js";
import { dequantizeRow } from "../kernels/quant/index.js";
import { LlameshError } from "../core/errors.js";
import { bf16ToF32, F16_TO_F32 } from "../core/numbers.js";
import type { TensorInfo, TensorSource } from "../core/tensor-source.js";
import {
  describeValue, ggmlRowBytes, metaInt, metaNum, metaTokenId, openFile, readFully, readGguf,
  type GgufFile, type GgufTensor, type GgufTensorType,
} from "../gguf/reader.js";
import { Q8_0_BLOCK_BYTES, QK8_0 } from "../kernels/q8.js";
import { tokenizerFromGguf } from "./gguf-tokenizer.js";
import type { ConfiguredTokenizer } from "./tokenizer.js";

// ---------------------------------------------------------------------------------------------
// Hugging Face <-> GGUF tensor names
// ---------------------------------------------------------------------------------------------

const LAYER_NAMES: Record<string, string> = {
  "input_layernorm.weight": "attn_norm.weight",
  "self_attn.q_proj.weight": "attn_q.weight",
  "self_attn.k_proj.weight": "attn_k.weight",
  "self_attn.v_proj.weight": "attn_v.weight",
  "self_attn.o_proj.weight": "attn_output.weight",
  "self_attn.q_proj.bias": "attn_q.bias",
  "self_attn.k_proj.bias": "attn_k.bias",
  "self_attn.v_proj.bias": "attn_v.bias",
  "self_attn.q_norm.weight": "attn_q_norm.weight",
  "self_attn.k_norm.weight": "attn_k_norm.weight",
  "post_attention_layernorm.weight": "ffn_norm.weight",
  "mlp.gate_proj.weight": "ffn_gate.weight",
  "mlp.up_proj.weight": "ffn_up.weight",
  "mlp.down_proj.weight": "ffn_down.weight",
};
const GLOBAL_NAMES: Record<string, string> = {
  "model.embed_tokens.weight": "token_embd.weight",
  "model.norm.weight": "output_norm.weight",
  "lm_head.weight": "output.weight",
};

/** What becomes of a Hugging Face tensor in GGUF: its name, and whether its rows are RoPE-permuted. */
export interface GgufName {
  name: string;
  /** "q": permuted per query head, "k": per key/value head; null: rows as they are. */
  rope: "q" | "k" | null;
}

/**
 * The GGUF name of a Hugging Face tensor name, or null if it has none. `permuted`: q/k weight rows
 * are RoPE-permuted (the llama architecture; not qwen2/qwen3).
 */
export function ggufNameOf(hfName: string, permuted = true): GgufName | null {
  const g = GLOBAL_NAMES[hfName];
  if (g !== undefined) return { name: g, rope: null };
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(hfName);
  if (m === null) return null;
  const rest = LAYER_NAMES[m[2]!];
  if (rest === undefined) return null;
  const rope = !permuted ? null : m[2] === "self_attn.q_proj.weight" ? "q" : m[2] === "self_attn.k_proj.weight" ? "k" : null;
  return { name: `blk.${Number(m[1])}.${rest}`, rope };
}

/**
 * Row `hfRow` of a RoPE-permuted tensor: the GGUF row holding it. Within each head of `headDim`
 * rows, HF row i (first half) is GGUF row 2i and HF row headDim/2 + i is GGUF row 2i + 1.
 */
export function ggufRowOfHfRow(hfRow: number, headDim: number): number {
  const half = headDim / 2;
  const head = Math.floor(hfRow / headDim);
  const i = hfRow - head * headDim;
  return head * headDim + (i < half ? 2 * i : 2 * (i - half) + 1);
}

// ---------------------------------------------------------------------------------------------
// The tensor source
// ---------------------------------------------------------------------------------------------

interface Mapped {
  hfName: string;
  t: GgufTensor;
  rows: number;
  cols: number;
  rowBytes: number;
  /** headDim when the rows are RoPE-permuted, else 0. */
  headDim: number;
}

/** The tensors of a llama GGUF file under their Hugging Face names, rows in the HF layout. */
export class GgufSource implements TensorSource {
  readonly files: readonly string[];
  private readonly mapped = new Map<string, Mapped>();
  private fd: number | null = null;
  private buf = Buffer.alloc(0);

  constructor(
    readonly gguf: GgufFile,
    nLayers: number,
    headDim: number,
    /** q/k rows are RoPE-permuted in the file (the llama architecture). */
    permuted = true,
  ) {
    this.files = [gguf.file];
    const names: string[] = Object.keys(GLOBAL_NAMES);
    for (let i = 0; i < nLayers; i++) for (const k of Object.keys(LAYER_NAMES)) names.push(`model.layers.${i}.${k}`);
    for (const hfName of names) {
      const g = ggufNameOf(hfName, permuted)!;
      const t = gguf.tensors.get(g.name);
      if (t === undefined) continue;
      const cols = t.dims[0]!;
      const rows = t.dims.slice(1).reduce((a, b) => a * b, 1);
      this.mapped.set(hfName, { hfName, t, rows, cols, rowBytes: ggmlRowBytes(t.type, cols), headDim: g.rope !== null ? headDim : 0 });
    }
  }

  has(name: string): boolean {
    return this.mapped.has(name);
  }

  /** The Hugging Face names of the tensors present (as SafetensorsModel.names). */
  get names(): string[] {
    return [...this.mapped.keys()];
  }

  private get(name: string): Mapped {
    const m = this.mapped.get(name);
    if (m === undefined) {
      const g = ggufNameOf(name);
      throw new LlameshError(`${this.gguf.file}: missing tensor ${g !== null ? `${g.name} (${name})` : name}`);
    }
    return m;
  }

  info(name: string): TensorInfo {
    const m = this.get(name);
    const shape = m.t.dims.length === 1 ? [m.cols] : [...m.t.dims].reverse();
    return { name, dtype: m.t.type, shape, file: this.gguf.file, offset: m.t.offset, nbytes: m.t.nbytes };
  }

  /** The GGUF tensor behind a Hugging Face name. */
  ggufTensor(name: string): GgufTensor {
    return this.get(name).t;
  }

  /**
   * Raw bytes of rows [row0, row0 + nRows) in HF order; calls `each(bufferOffset, k)` for the
   * k-th HF row with the offset of its bytes in this.buf.
   */
  private readRaw(m: Mapped, row0: number, nRows: number, each: (off: number, k: number) => void): void {
    if (!(row0 >= 0 && nRows >= 0 && row0 + nRows <= m.rows)) {
      throw new RangeError(`${m.hfName}: rows [${row0}, ${row0 + nRows}) outside [0, ${m.rows})`);
    }
    if (nRows === 0) return;
    const hd = m.headDim;
    if (hd > 0 && m.rows % hd !== 0) {
      throw new LlameshError(`${this.gguf.file}: tensor ${m.t.name} has ${m.rows} rows, not a multiple of the head size ${hd}`);
    }
    // without permutation the rows are contiguous; with it, read the whole heads they fall in
    const first = hd > 0 ? Math.floor(row0 / hd) * hd : row0;
    const last = hd > 0 ? Math.ceil((row0 + nRows) / hd) * hd : row0 + nRows;
    const nbytes = (last - first) * m.rowBytes;
    if (this.buf.length < nbytes) this.buf = Buffer.alloc(nbytes);
    if (this.fd === null) this.fd = openFile(this.gguf.file);
    readFully(this.fd, this.gguf.file, this.buf, nbytes, m.t.offset + first * m.rowBytes);
    for (let k = 0; k < nRows; k++) {
      const g = hd > 0 ? ggufRowOfHfRow(row0 + k, hd) : row0 + k;
      each((g - first) * m.rowBytes, k);
    }
  }

  readRows(name: string, row0: number, nRows: number, out: Float32Array): void {
    const m = this.get(name);
    const cols = m.cols;
    if (out.length < nRows * cols) throw new RangeError(`${name}: output holds ${out.length} values, need ${nRows * cols}`);
    this.readRaw(m, row0, nRows, (off, k) => decodeRow(m.t.type, this.buf, off, out, k * cols, cols));
  }

  readRawRows(name: string, row0: number, nRows: number, out: Uint8Array): void {
    const m = this.get(name);
    const rb = m.rowBytes;
    if (out.length < nRows * rb) throw new RangeError(`${name}: output holds ${out.length} bytes, need ${nRows * rb}`);
    this.readRaw(m, row0, nRows, (off, k) => out.set(this.buf.subarray(off, off + rb), k * rb));
  }

  close(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
    this.buf = Buffer.alloc(0);
  }
}

/** Decode one row of `cols` values at byte `off` of `src` into out[at..]. */
function decodeRow(type: GgufTensorType, src: Buffer, off: number, out: Float32Array, at: number, cols: number): void {
  const p = src.byteOffset + off;
  switch (type) {
    case "F32":
      if (p % 4 === 0) out.set(new Float32Array(src.buffer, p, cols), at);
      else for (let i = 0; i < cols; i++) out[at + i] = src.readFloatLE(off + 4 * i);
      return;
    case "F16":
    case "BF16": {
      const u16 = p % 2 === 0 ? new Uint16Array(src.buffer, p, cols) : null;
      const conv = type === "F16" ? (h: number) => F16_TO_F32[h]! : bf16ToF32;
      for (let i = 0; i < cols; i++) out[at + i] = conv(u16 ? u16[i]! : src.readUInt16LE(off + 2 * i));
      return;
    }
    case "Q8_0": {
      const i8 = new Int8Array(src.buffer, p, (cols / QK8_0) * Q8_0_BLOCK_BYTES);
      for (let b = 0; b < cols / QK8_0; b++) {
        const o = b * Q8_0_BLOCK_BYTES;
        const d = F16_TO_F32[src.readUInt16LE(off + o)]!;
        const base = at + b * QK8_0;
        for (let i = 0; i < QK8_0; i++) out[base + i] = d * i8[o + 2 + i]!;
      }
      return;
    }
    default:
      // the other GGUF block types: ggml's dequantization (kernels/quant), bit-exact
      dequantizeRow(type, new Uint8Array(src.buffer, p, ggmlRowBytes(type, cols)), 0, out, at, cols);
  }
}

const FAMILY_OF_ARCH: Record<string, ModelFamily> = { llama: "llama", qwen2: "qwen2", qwen3: "qwen3" };

/** general.architecture, checked first: a file of another family says so, not which key it lacks. */
function architectureOf(file: string, meta: Map<string, unknown>): string {
  const arch = meta.get("general.architecture");
  if (typeof arch !== "string" || FAMILY_OF_ARCH[arch] === undefined) {
    throw new LlameshError(
      `${file}: general.architecture is ${arch === undefined ? "missing" : describeValue(arch)}, expected "llama", "qwen2" or "qwen3" (the families llamesh runs)`,
    );
  }
  return arch;
}

/**
 * RoPE scaling as llama.cpp reads it: a `rope_freqs.weight` tensor of per-frequency divisors (how
 * its converter writes Llama 3.1's llama3 scaling), or `<arch>.rope.scaling.type` linear.
 */
function ropeScalingOf(g: GgufFile, arch: string, headDim: number, ropeFreqs: Float32Array | null): RopeScaling | null {
  const { file, metadata: meta } = g;
  const type = meta.get(`${arch}.rope.scaling.type`);
  const linear = meta.get(`${arch}.rope.scale_linear`);
  if (ropeFreqs) {
    if (ropeFreqs.length !== headDim / 2) throw new LlameshError(`${file}: tensor rope_freqs.weight has ${ropeFreqs.length} values, expected ${headDim / 2} (head size / 2)`);
    if (!ropeFreqs.every((v) => Number.isFinite(v) && v > 0)) throw new LlameshError(`${file}: tensor rope_freqs.weight holds a value that is not a positive number`);
    return { type: "factors", factors: Array.from(ropeFreqs) };
  }
  if (type === "linear" || (type === undefined && typeof linear === "number" && linear !== 1)) {
    const factor = type === "linear" ? metaNum(meta, `${arch}.rope.scaling.factor`, file, 1) : (linear as number);
    return factor === 1 ? null : { type: "linear", factor };
  }
  if (type !== undefined && type !== "none") throw new LlameshError(`${file}: ${arch}.rope.scaling.type ${describeValue(type)} is not supported (expected none or linear; llama3 scaling comes as rope_freqs.weight)`);
  return null;
}

/** The LlamaConfig a GGUF describes (its tensors settle vocabulary size, tied embeddings, biases, norms). */
export function configFromGguf(g: GgufFile, ropeFreqs: Float32Array | null = null): LlamaConfig {
  const { file, metadata: meta } = g;
  const arch = architectureOf(file, meta);
  const family = FAMILY_OF_ARCH[arch]!;
  const k = (key: string): string => `${arch}.${key}`;
  const int = (key: string, fallback?: number, max?: number): number => {
    const v = metaInt(meta, k(key), file, fallback);
    if (max !== undefined && v > max) throw new LlameshError(`${file}: metadata ${k(key)} is ${v}, beyond any model llamesh can run (at most ${max})`);
    return v;
  };
  const experts = meta.get(k("expert_count"));
  if (typeof experts === "number" && experts > 0) {
    throw new LlameshError(`${file}: ${k("expert_count")} is ${experts}: mixture-of-experts models are not supported`);
  }
  const dim = int("embedding_length", undefined, LIMITS.dim);
  const nHeads = int("attention.head_count", undefined, LIMITS.nHeads);
  const nKvHeads = int("attention.head_count_kv", nHeads, LIMITS.nHeads);
  if (nHeads % nKvHeads !== 0) {
    throw new LlameshError(`${file}: ${k("attention.head_count")} ${nHeads} is not a multiple of ${k("attention.head_count_kv")} ${nKvHeads}`);
  }
  if (!meta.has(k("attention.key_length")) && dim % nHeads !== 0) {
    throw new LlameshError(`${file}: ${k("embedding_length")} ${dim} is not a multiple of ${k("attention.head_count")} ${nHeads}`);
  }
  const headDim = int("attention.key_length", dim / nHeads, LIMITS.headDim);
  if (headDim % 2 !== 0) throw new LlameshError(`${file}: head size ${headDim} must be even`);
  const valueLength = int("attention.value_length", headDim);
  if (valueLength !== headDim) throw new LlameshError(`${file}: ${k("attention.value_length")} ${valueLength} differs from the key length ${headDim}`);
  const ropeDims = int("rope.dimension_count", headDim);
  if (ropeDims !== headDim) {
    throw new LlameshError(`${file}: ${k("rope.dimension_count")} ${ropeDims} differs from the head size ${headDim} (partial RoPE is not supported)`);
  }
  const embd = g.tensors.get("token_embd.weight");
  if (embd === undefined) throw new LlameshError(`${file}: missing tensor token_embd.weight`);
  if (embd.dims.length !== 2) throw new LlameshError(`${file}: tensor token_embd.weight has ${embd.dims.length} dimensions, expected 2`);
  const vocabSize = embd.dims[1]!;
  if (vocabSize > LIMITS.vocabSize) throw new LlameshError(`${file}: token_embd.weight has ${vocabSize} rows, beyond any model llamesh can run (at most ${LIMITS.vocabSize})`);
  const declared = meta.has(k("vocab_size")) ? int("vocab_size") : vocabSize;
  if (declared !== vocabSize) {
    throw new LlameshError(`${file}: ${k("vocab_size")} ${declared} differs from the ${vocabSize} rows of token_embd.weight`);
  }
  const seqLen = int("context_length", 2048, LIMITS.seqLen);
  const window = meta.has(k("attention.sliding_window")) ? int("attention.sliding_window") : null;
  const bos = metaTokenId(meta, "tokenizer.ggml.bos_token_id", file);
  const eosIds: number[] = [];
  for (const key of ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"]) {
    const id = metaTokenId(meta, key, file);
    if (id !== null && !eosIds.includes(id)) eosIds.push(id);
  }
  return {
    family,
    dim,
    hiddenDim: int("feed_forward_length", undefined, LIMITS.hiddenDim),
    nLayers: int("block_count", undefined, LIMITS.nLayers),
    nHeads,
    nKvHeads,
    vocabSize,
    seqLen,
    normEps: metaNum(meta, k("attention.layer_norm_rms_epsilon"), file, 1e-5),
    ropeTheta: metaNum(meta, k("rope.freq_base"), file, 10000),
    ropeScaling: ropeScalingOf(g, arch, headDim, ropeFreqs),
    tiedEmbeddings: !g.tensors.has("output.weight"),
    headDim,
    attnBias: g.tensors.has("blk.0.attn_q.bias"),
    qkNorm: g.tensors.has("blk.0.attn_q_norm.weight"),
    slidingWindow: window !== null && window < seqLen ? window : null,
    bosTokenId: bos,
    eosTokenIds: eosIds,
  };
}

export interface OpenedGguf {
  config: LlamaConfig;
  source: GgufSource;
  tokenizer: ConfiguredTokenizer;
  metadata: Map<string, unknown>;
}

/** Open a Llama-family GGUF file: its config, its tensors under Hugging Face names, its tokenizer. */
export function openGguf(file: string): OpenedGguf {
  // the architecture first: a file of another family should say so, not name a tensor type
  const g = readGguf(file, (meta) => void architectureOf(file, meta));
  const config = configFromGguf(g, readRopeFreqs(g));
  const tokenizer = tokenizerFromGguf(g);
  if (tokenizer.vocabSize > config.vocabSize) {
    throw new LlameshError(`${file}: the tokenizer has ${tokenizer.vocabSize} tokens but token_embd.weight only ${config.vocabSize} rows`);
  }
  const source = new GgufSource(g, config.nLayers, config.headDim, g.metadata.get("general.architecture") === "llama");
  return { config, source, tokenizer, metadata: g.metadata };
}

/** The rope_freqs.weight tensor (llama.cpp's per-frequency RoPE divisors), or null. */
function readRopeFreqs(g: GgufFile): Float32Array | null {
  const t = g.tensors.get("rope_freqs.weight");
  if (!t) return null;
  if (t.type !== "F32" || t.dims.length !== 1) throw new LlameshError(`${g.file}: tensor rope_freqs.weight is ${t.type} [${t.dims.join(", ")}], expected F32 with one dimension`);
  const out = new Float32Array(t.dims[0]!);
  const fd = openFile(g.file);
  try {
    readFully(fd, g.file, new Uint8Array(out.buffer), t.nbytes, t.offset);
  } finally {
    fs.closeSync(fd);
  }
  return out;
}
